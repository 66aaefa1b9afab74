// frames.test.js: bester.js's encoder and incremental decoder against protocol/vectors/frames.json.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const bester = require('../bester');

const REPO = path.resolve(__dirname, '..', '..', '..'); // test -> node -> handlers -> repo root
const VECTORS = JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', 'frames.json'), 'utf8'));
const expected = VECTORS.valid.map((v) => JSON.parse(v.json));
const stream = Buffer.from(VECTORS.stream.hex, 'hex');

// A small seeded generator (mulberry32) so a failing split can be replayed.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function feedAll(decoder, pieces) {
  const out = [];
  for (const piece of pieces) out.push(...decoder.feed(piece));
  return out;
}

test('the limit matches the vectors', () => {
  assert.strictEqual(bester.MAX_FRAME, VECTORS.max_frame);
});

test('valid frames encode to their hex and decode back', () => {
  for (const v of VECTORS.valid) {
    const obj = JSON.parse(v.json);
    assert.strictEqual(bester.encodeFrame(obj).toString('hex'), v.hex, v.name);
    assert.deepStrictEqual(new bester.FrameDecoder().feed(Buffer.from(v.hex, 'hex')), [obj], v.name);
  }
});

test('stream in one read', () => {
  assert.deepStrictEqual(new bester.FrameDecoder().feed(stream), expected);
});

test('stream one byte at a time', () => {
  const decoder = new bester.FrameDecoder();
  const bytes = [...stream].map((b) => Buffer.from([b]));
  assert.deepStrictEqual(feedAll(decoder, bytes), expected);
  assert.strictEqual(decoder.pending, 0);
});

test('stream in random splits', () => {
  const random = rng(20261122);
  for (let round = 0; round < 300; round++) {
    const pieces = [];
    for (let i = 0; i < stream.length;) {
      const n = Math.floor(random() * 10); // 0..9, empty pieces included
      pieces.push(stream.subarray(i, i + n));
      i += n;
    }
    assert.deepStrictEqual(feedAll(new bester.FrameDecoder(), pieces), expected, `round ${round}`);
  }
});

test('invalid frames are rejected with their code', () => {
  for (const v of VECTORS.invalid) {
    const bytes = Buffer.from(v.hex, 'hex');
    assert.throws(() => new bester.FrameDecoder(VECTORS.max_frame).feed(bytes),
      (e) => e instanceof bester.FrameError && e.code === v.code, v.name);
    // The same, one byte at a time.
    const decoder = new bester.FrameDecoder(VECTORS.max_frame);
    assert.throws(() => feedAll(decoder, [...bytes].map((b) => Buffer.from([b]))),
      (e) => e.code === v.code, `${v.name}, byte by byte`);
  }
});

test('oversize is rejected from the header alone; exactly max is accepted', () => {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(bester.MAX_FRAME + 1);
  assert.throws(() => new bester.FrameDecoder().feed(header), { code: 'frame_too_large' });
  const body = Buffer.from(`"${'x'.repeat(bester.MAX_FRAME - 2)}"`);
  header.writeUInt32LE(body.length);
  assert.deepStrictEqual(new bester.FrameDecoder().feed(Buffer.concat([header, body])), ['x'.repeat(bester.MAX_FRAME - 2)]);
});

test('encoding an oversize frame fails', () => {
  assert.throws(() => bester.encodeFrame({ data: 'x'.repeat(bester.MAX_FRAME) }), { code: 'frame_too_large' });
});

test('the decoder stays broken after an error', () => {
  const decoder = new bester.FrameDecoder();
  assert.throws(() => decoder.feed(Buffer.from('0500000068656c6c6f', 'hex')), { code: 'invalid_json' });
  assert.throws(() => decoder.feed(bester.encodeFrame({})), { code: 'invalid_json' });
});

test('a BOM is not JSON', () => {
  const body = Buffer.from('\ufeff{}', 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length);
  assert.throws(() => new bester.FrameDecoder().feed(Buffer.concat([header, body])), { code: 'invalid_json' });
});
