// Tests for the Node handler library and upper.js, against the shared vectors in protocol/vectors
// (the same files the broker's Rust tests load) and over a real Unix socket.
// Run from the repository root: node --test handlers/node/test/
'use strict';

const assert = require('node:assert/strict');
const { test } = require('node:test');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const bester = require('../bester');
const upper = require('../upper');

const REPO = path.join(__dirname, '..', '..', '..');
const vectors = (name) => JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', name), 'utf8'));

test('valid frames encode to the exact bytes and decode back', () => {
  for (const c of vectors('frames.json').valid) {
    const obj = JSON.parse(c.json);
    const want = Buffer.from(c.hex, 'hex');
    assert.deepEqual(bester.encodeFrame(obj), want, c.name);
    assert.deepEqual(new bester.FrameDecoder().feed(want), [obj], c.name);
  }
});

test('the stream decodes the same in every split', () => {
  const doc = vectors('frames.json');
  const stream = Buffer.from(doc.stream.hex, 'hex');
  const want = doc.valid.map((c) => JSON.parse(c.json));
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % 40 + 1;
  for (const split of [1, 2, 3, 5, 64, stream.length, 0, 0, 0, 0, 0]) {
    const decoder = new bester.FrameDecoder();
    const got = [];
    for (let pos = 0; pos < stream.length;) {
      const step = split || rand();
      got.push(...decoder.feed(stream.subarray(pos, pos + step)));
      pos += step;
    }
    assert.deepEqual(got, want, `split ${split}`);
  }
});

test('invalid inputs are rejected with their code', () => {
  const doc = vectors('frames.json');
  for (const c of doc.invalid) {
    const decoder = new bester.FrameDecoder(doc.max_frame);
    assert.throws(() => decoder.feed(Buffer.from(c.hex, 'hex')), (e) => e.code === c.code, c.name);
  }
});

test('upper.js answers the shared handler vectors exactly', () => {
  let ran = 0;
  for (const c of vectors('handlers.json').cases.filter((c) => c.handler === 'upper')) {
    const got = [];
    for (const request of c.requests) got.push(...new bester.FrameDecoder().feed(bester.respond(request, upper.handle)));
    assert.deepEqual(got, c.answers, c.name);
    ran += 1;
  }
  assert.ok(ran >= 3, `ran ${ran} upper cases`);
});

test('upper.js serves 50 pipelined requests over a real socket and exits 0 on close', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bester-node-'));
  const sock = path.join(dir, 'upper.sock');
  let child;
  try {
    const conn = await new Promise((resolve, reject) => {
      const server = net.createServer((c) => { server.close(); resolve(c); });
      server.on('error', reject);
      server.listen(sock, () => {
        child = spawn(process.execPath, [path.join(__dirname, '..', 'upper.js')], {
          env: { ...process.env, BESTER_SOCKET: sock, BESTER_TYPE: 'upper' },
          stdio: ['ignore', 'ignore', 'ignore'],
        });
      });
    });
    const frames = [];
    for (let i = 0; i < 50; i += 1) {
      frames.push(bester.encodeFrame({
        header: { kind: 'request', request: String(i), scope: 'client', from: { user: 'u', server: 's' } },
        payload: { type: 'upper', data: { text: `m${i}` } },
      }));
    }
    conn.write(Buffer.concat(frames));
    const answers = await new Promise((resolve, reject) => {
      const decoder = new bester.FrameDecoder();
      const got = [];
      const timer = setTimeout(() => reject(new Error(`only ${got.length} answers`)), 20000);
      conn.on('data', (chunk) => {
        got.push(...decoder.feed(chunk));
        if (got.length >= 50) { clearTimeout(timer); resolve(got); }
      });
    });
    answers.forEach((a, i) => {
      assert.deepEqual(a.header, { status: 'ok', command: 'reply', request: String(i) });
      assert.deepEqual(a.payload, { type: 'upper', data: { text: `M${i}` } });
    });
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    conn.end();
    assert.equal(await exited, 0);
  } finally {
    if (child && child.exitCode === null) child.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
