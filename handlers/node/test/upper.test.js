// upper.test.js: end to end. Starts the real upper.js as a subprocess with BESTER_SOCKET pointing at
// a Unix socket this test listens on (a fake broker), like besterd would. Frames are read and
// written with the package upper.js uses (bester-client, in ../node_modules).
import test from 'node:test';
import assert from 'node:assert';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as bester from 'bester-client';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const UPPER = path.join(REPO, 'handlers', 'node', 'upper.js');
const VECTORS = JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', 'handlers.json'), 'utf8'));
const TIMEOUT = 10000; // ms; a deadline, never a sleep

const request = (token, data) => ({
  header: { kind: 'request', request: token, scope: 'client', from: { user: 'alice', server: 'node-a' } },
  payload: { type: 'upper', data },
});

// Listen, start upper.js, wait for it to connect. Returns helpers to talk to it.
async function startHandler() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bester-'));
  const sockPath = path.join(dir, 'handler.sock');
  const server = net.createServer();
  await new Promise((resolve) => server.listen(sockPath, resolve));
  const child = spawn(process.execPath, [UPPER], {
    env: { ...process.env, BESTER_SOCKET: sockPath, BESTER_TYPE: 'upper' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const conn = await withTimeout(new Promise((resolve) => server.once('connection', resolve)), 'connect');

  const decoder = new bester.FrameDecoder();
  const frames = [];
  let waiter = null;
  let ended = false;
  const wake = () => waiter && waiter();
  conn.on('data', (chunk) => { frames.push(...decoder.feed(chunk)); wake(); });
  conn.on('end', () => { ended = true; wake(); });

  return {
    conn,
    stdout: () => stdout,
    stderr: () => stderr,
    send: (...objs) => conn.write(Buffer.concat(objs.map((o) => bester.encodeFrame(o)))),
    // Resolve once n frames have arrived (or, with n = Infinity, once the handler closes).
    read: (n) => withTimeout(new Promise((resolve, reject) => {
      waiter = () => {
        if (frames.length >= n || ended) {
          if (frames.length < n && n !== Infinity) reject(new Error(`closed after ${frames.length} of ${n} frames`));
          else resolve(frames.splice(0, Math.min(n, frames.length)));
        }
      };
      waiter();
    }), `read ${n}`),
    exitCode: () => withTimeout(exited, 'exit'),
    cleanup: () => {
      if (child.exitCode === null) child.kill();
      conn.destroy();
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('50 pipelined requests in one write, then exit 0 when the socket closes', async () => {
  const h = await startHandler();
  try {
    const requests = Array.from({ length: 50 }, (_, i) => request(`r${i}`, { text: `msg ${i} é`, n: i }));
    h.send(...requests); // one write
    const answers = await h.read(50);
    const byToken = new Map(answers.map((a) => [a.header.request, a]));
    assert.strictEqual(byToken.size, 50, 'every request answered exactly once');
    for (const [i, req] of requests.entries()) {
      assert.deepStrictEqual(byToken.get(req.header.request), {
        header: { status: 'ok', command: 'reply', request: `r${i}` },
        payload: { type: 'upper', data: { text: `MSG ${i} É`, n: i } },
      });
    }
    h.conn.end();
    assert.strictEqual(await h.exitCode(), 0);
    assert.strictEqual(h.stdout(), '', 'handlers log to stderr only');
  } finally {
    h.cleanup();
  }
});

test('the upper vectors through the real process', async () => {
  for (const c of VECTORS.cases.filter((v) => v.handler === 'upper')) {
    const h = await startHandler();
    try {
      h.send(...c.requests);
      h.conn.end(); // half-close: EOF after the last request
      assert.deepStrictEqual(await h.read(Infinity), c.answers, c.name);
      assert.strictEqual(await h.exitCode(), 0);
    } finally {
      h.cleanup();
    }
  }
});

test('frames split one byte per write', async () => {
  const h = await startHandler();
  try {
    const bytes = Buffer.concat([request('1', { text: 'a' }), request('2', { text: 'b', forward: 'echo' })]
      .map((r) => bester.encodeFrame(r)));
    for (const b of bytes) h.conn.write(Buffer.from([b]));
    const [first, second] = await h.read(2);
    assert.deepStrictEqual(first.payload, { type: 'upper', data: { text: 'A' } });
    assert.deepStrictEqual(second.header, { status: 'ok', command: 'sendHandler', request: '2', commandData: 'echo' });
  } finally {
    h.cleanup();
  }
});

test('a frame near the limit round-trips', async () => {
  const h = await startHandler();
  try {
    h.send(request('big', { text: 'a'.repeat(1000000) }), request('small', { text: 'b' }));
    const [big, small] = await h.read(2);
    assert.strictEqual(big.payload.data.text, 'A'.repeat(1000000));
    assert.strictEqual(small.header.request, 'small');
  } finally {
    h.cleanup();
  }
});

test('an oversize frame from the broker closes with status 1', async () => {
  const h = await startHandler();
  try {
    const header = Buffer.alloc(4);
    header.writeUInt32LE(bester.MAX_FRAME + 1);
    h.conn.write(header);
    assert.strictEqual(await h.exitCode(), 1);
    assert.match(h.stderr(), /frame_too_large/);
  } finally {
    h.cleanup();
  }
});

test('an unreachable socket exits 1', async () => {
  const child = spawn(process.execPath, [UPPER], {
    env: { ...process.env, BESTER_SOCKET: '/nonexistent/bester.sock' }, stdio: 'ignore',
  });
  const code = await withTimeout(new Promise((resolve) => child.on('exit', resolve)), 'exit');
  assert.strictEqual(code, 1);
});
