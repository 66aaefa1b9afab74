// vectors.test.js: the package against protocol/vectors — frames (encoded byte-exact, decoded in
// every split, refused with their codes), the client frames it builds (byte-exact JSON), the
// server frames it sorts, the key login (signed bytes and signature of RFC 8032's test key, the
// login state machine), the auth-handler login, and the echo and upper handler exchanges run on
// real handler processes written with the package (examples/).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { sign } from 'node:crypto';
import {
  FrameDecoder,
  Handler,
  Login,
  authentication,
  classify,
  encodeFrame,
  identify,
  loadKey,
  message,
  publicKeyOf,
  signedBytes,
} from '../index.js';
import { REPO } from '../testlib/daemon.js';
import { FakeBroker } from '../testlib/socket.js';

const vectors = (name) => JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', name), 'utf8'));
const hex = (bytes) => Buffer.from(bytes).toString('hex');

const frames = vectors('frames.json');

test('frames: each valid frame encodes byte-exact and decodes to its JSON', () => {
  for (const v of frames.valid) {
    const value = JSON.parse(v.json);
    assert.equal(hex(encodeFrame(value)), v.hex, v.name);
    assert.deepEqual(new FrameDecoder(frames.max_frame).feed(Buffer.from(v.hex, 'hex')), [value], v.name);
  }
});

test('frames: the stream decodes the same whatever the split, one byte at a time included', () => {
  const stream = Buffer.from(frames.stream.hex, 'hex');
  const expected = frames.valid.map((v) => JSON.parse(v.json));
  for (let at = 0; at <= stream.length; at++) {
    const d = new FrameDecoder(frames.max_frame);
    assert.deepEqual([...d.feed(stream.subarray(0, at)), ...d.feed(stream.subarray(at))], expected, `split at ${at}`);
    assert.equal(d.pending, 0);
  }
  const d = new FrameDecoder(frames.max_frame);
  const out = [];
  for (const byte of stream) out.push(...d.feed(Buffer.from([byte])));
  assert.deepEqual(out, expected);
});

test('frames: each invalid byte string is refused with its code, and the decoder stays dead', () => {
  for (const v of frames.invalid) {
    const d = new FrameDecoder(frames.max_frame);
    assert.throws(() => d.feed(Buffer.from(v.hex, 'hex')), (e) => e.code === v.code, v.name);
    assert.throws(() => d.feed(Buffer.from('02000000', 'hex')), (e) => e.code === v.code, `${v.name}: dead after`);
  }
});

const messages = vectors('messages.json');

test('messages: the client frames the package builds are the vectors byte for byte', () => {
  let built = 0;
  for (const c of messages.cases.filter((x) => x.direction === 'client_to_server' && x.valid)) {
    const v = JSON.parse(c.json);
    let mine;
    // Identify frames with more than the login (a feature offer) are not what this package builds.
    const plain = v.header.identify && Object.keys(v.header.identify).every((k) => k === 'type' || k === 'authentication');
    if (plain && v.header.identify.type === 'client') mine = identify(authentication(v.header.identify.authentication));
    else if (v.header.scope === 'client' && v.payload && Object.keys(v.header).every((k) => k === 'scope' || k === 'id')) {
      mine = message(v.header.id, v.payload.type, v.payload.data);
    } else continue;
    assert.equal(JSON.stringify(mine), c.json, c.name);
    built += 1;
  }
  assert.ok(built >= 5, `only ${built} cases built`);
});

test('messages: the server frames are sorted as replies, pushes or errors', () => {
  for (const c of messages.cases.filter((x) => x.direction === 'server_to_client')) {
    const frame = JSON.parse(c.json);
    const { kind } = classify(frame);
    assert.ok(['reply', 'push', 'error', 'other'].includes(kind), c.name);
    if (frame.header.kind === 'push') assert.equal(kind, 'push', c.name);
  }
});

const key = vectors('key_login.json');

test('key login: public key, signed bytes, signature and the state machine, byte-exact', () => {
  const k = loadKey(Buffer.from(key.seed_hex, 'hex'));
  assert.equal(publicKeyOf(k), key.public_key);
  assert.equal(publicKeyOf(loadKey(k.export({ format: 'pem', type: 'pkcs8' }))), key.public_key, 'from PKCS#8 PEM');
  const message = signedBytes(key.server, key.username, key.nonce);
  assert.equal(hex(message), key.message_hex);
  assert.equal(sign(null, message, k).toString('base64'), key.signature);
  const login = new Login(authentication({ username: key.username, publicKey: key.public_key }), { username: key.username, serverName: key.server, hasKey: true });
  assert.equal(JSON.stringify(login.first()), key.frames[0].json);
  const step = login.step(JSON.parse(key.frames[1].json));
  assert.equal(step.kind, 'challenge');
  assert.equal(hex(step.message), key.message_hex);
  assert.equal(JSON.stringify(login.signature(sign(null, step.message, k).toString('base64'))), key.frames[2].json);
  assert.deepEqual(login.step(JSON.parse(key.frames[3].json)), { kind: 'ok', data: { user: 'alice', server: 'besterd' } });
  // A challenge from a server of another name is not signed.
  const wary = new Login({ username: 'alice', publicKey: key.public_key }, { username: 'alice', serverName: 'other', hasKey: true });
  wary.first();
  assert.throws(() => wary.step(JSON.parse(key.frames[1].json)), (e) => e.code === 'auth_failed' && e.text === 'the server says it is "besterd", not "other": not signing');
});

const auth = vectors('auth_handler.json');

test('auth handler: the login request is read, and each accepted answer built, as the vector says', async () => {
  const request = JSON.parse(auth.request);
  const seen = [];
  const h = new Handler();
  for (const a of auth.answers.filter((x) => x.accepted)) {
    h.login((login) => {
      seen.push(login);
      return { user: a.accepted.user, info: a.accepted.info === null ? undefined : JSON.parse(a.accepted.info) };
    });
    const out = await h.respond(request);
    assert.deepEqual(out, { header: { status: 'ok', command: 'reply', request: '7' }, payload: { type: 'bester.login', data: JSON.parse(a.data) } });
  }
  assert.deepEqual(seen[0].authentication, JSON.parse(auth.identify).header.identify.authentication);
  assert.equal(seen[0].address, '192.0.2.10:50312');
  assert.equal(seen[0].listener, 'main');
  assert.equal(seen[0].transport, 'tcp');
  assert.equal(JSON.stringify(seen[0]).includes('k-3f9a1c'), false, 'a login never shows its credentials');
});

const exchanges = vectors('handlers.json');

for (const [name, script] of [['echo', 'examples/echo_handler.js'], ['upper', 'examples/upper_handler.js']]) {
  for (const c of exchanges.cases.filter((x) => x.handler === name)) {
    test(`handler exchange on a real process: ${c.name}`, async () => {
      const fb = await FakeBroker.start(script, { BESTER_TYPE: name, ...(c.env || {}) });
      fb.send(...c.requests);
      assert.deepEqual(await fb.read(c.answers.length), c.answers);
      assert.deepEqual(await fb.eof(), { code: 0, signal: null });
      assert.equal(fb.frames.length, c.answers.length, 'nothing more (reports get no answer)');
    });
  }
}
