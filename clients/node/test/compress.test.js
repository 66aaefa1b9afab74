// compress.test.js: feature negotiation and compressed frames (PROTOCOL.md §1.2, §2 "Features and
// limits") against the real besterd — what the client offers and learns, long messages compressed
// both ways and whole, a stored backlog compressed right behind the login reply, secrets never
// compressed, and the bounds on what the server's frames may inflate to.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import zlib from 'node:zlib';
import { carriesSecret, connect } from '../index.js';
import { Link, StreamSide } from '../lib/transport.js';
import { Broker, handler } from '../testlib/daemon.js';

const brokers = [];
after(async () => {
  for (const b of brokers) await b.close();
});

const CHAT = {
  room: 'room:1',
  lines: Array.from({ length: 40 }, (_, i) => ({ from: `user${i}`, at: 1796400000 + i * 7, text: `line ${i}: the quick brown fox ${(i * 31) % 97}` })),
};

async function start() {
  const app = handler('testlib/handlers/app.js');
  const b = await Broker.start({
    tables: `[handlers.app]\n${app}\n[handlers.echo]\n${app}\n[handlers.tell]\n${app}\noffline = "store"\n[[listeners]]\nname = "ws"\nkind = "ws"\naddress = "127.0.0.1:0"\n`,
  });
  brokers.push(b);
  return b;
}

const broker = start();
const login = async (user, options = {}) => connect(`bester://${user}:${user}-pw@${(await broker).addr}`, { reconnect: false, ...options });

test('a client that offers nothing learns nothing and sends plain', async () => {
  const c = await login('alice');
  try {
    assert.deepEqual([c.features, c.limits], [[], {}]);
    assert.deepEqual(await c.request('echo', CHAT), CHAT);
    assert.deepEqual([c.link.side.deflated, c.link.side.inflated], [0, 0]);
  } finally {
    c.close();
  }
});

test('compress is accepted with the limits, and long frames go compressed both ways', async () => {
  const c = await login('alice', { compress: true });
  try {
    assert.deepEqual(c.features, ['compress']);
    assert.equal(c.limits.max_frame_bytes, 1048576);
    assert.equal(typeof c.limits.max_in_flight, 'number');
    for (let i = 0; i < 3; i++) assert.deepEqual(await c.request('echo', CHAT), CHAT);
    assert.deepEqual([c.link.side.deflated, c.link.side.inflated], [3, 3]);
    assert.deepEqual(await c.request('echo', { hello: 'world' }), { hello: 'world' });
    assert.deepEqual([c.link.side.deflated, c.link.side.inflated], [3, 3], 'short frames stay plain');
  } finally {
    c.close();
  }
});

test('over WebSocket compress is not given and everything stays plain', async () => {
  const b = await broker;
  const c = await connect(`bester+ws://alice:alice-pw@${b.listener('ws')}`, { reconnect: false, compress: true });
  try {
    assert.deepEqual(c.features, []);
    assert.deepEqual(await c.request('echo', CHAT), CHAT);
  } finally {
    c.close();
  }
});

test('a stored backlog right behind the login reply comes compressed and whole', async () => {
  const alice = await login('alice');
  const texts = Array.from({ length: 5 }, (_, n) => `${n}: ${'a long line of chat that is worth compressing '.repeat(8)}`);
  try {
    for (const text of texts) {
      const { header } = await alice.requestFrame('app', { op: 'tell', to: ['bob'], text });
      assert.deepEqual(header.stored, ['bob']);
    }
  } finally {
    alice.close();
  }
  const bob = await login('bob', { compress: true });
  try {
    const got = [];
    for (let i = 0; i < texts.length; i++) got.push(await bob.nextPush());
    assert.deepEqual(got.map((p) => p.data), texts);
    assert.ok(got.every((p) => p.stored));
    assert.equal(bob.link.side.inflated, texts.length);
  } finally {
    bob.close();
  }
});

test('secrets and short bodies are never compressed', () => {
  assert.equal(carriesSecret({ header: { identify: { type: 'client' } } }), true);
  assert.equal(carriesSecret({ header: { scope: 'client', id: '1' }, payload: { type: 'bester.refresh', data: { token: 'x'.repeat(600) } } }), true);
  assert.equal(carriesSecret({ header: { scope: 'client', id: '1' }, payload: { type: 'chat', data: 1 } }), false);
});

test('the codec: compressed frames only on a compressing session, bombs and broken streams refused', async (t) => {
  const frame = (body) => {
    const out = Buffer.allocUnsafe(4 + body.length);
    out.writeUInt32LE(body.length, 0);
    body.copy(out, 4);
    return out;
  };
  const packed = (json) => Buffer.concat([Buffer.from([0]), zlib.deflateRawSync(Buffer.from(json), { level: 9 })]);
  const side = (maxFrame = 4096) => {
    const socket = new EventEmitter();
    socket.destroy = () => {};
    const s = new StreamSide(socket, maxFrame);
    const got = [];
    const failed = [];
    s.on('frame', (f) => got.push(f));
    s.on('fail', (e) => failed.push(e));
    return { socket, s, got, failed };
  };

  await t.test('not negotiated: protocol_error', () => {
    const { socket, got, failed } = side();
    socket.emit('data', frame(packed(JSON.stringify(CHAT))));
    assert.deepEqual(got, []);
    assert.deepEqual([failed[0].code, failed[0].text], ['protocol_error', 'a compressed frame on a session that did not negotiate "compress"']);
  });

  await t.test('the reply that turns it on shares a read with compressed frames', () => {
    const { socket, s, got, failed } = side(1 << 20);
    s.on('frame', (f) => {
      if (f.header && f.header.kind === 'reply') s.compress = true;
    });
    socket.emit('data', Buffer.concat([frame(Buffer.from('{"header":{"status":"ok","kind":"reply"}}')), frame(packed(JSON.stringify(CHAT))), frame(Buffer.from('{"b":2}'))]));
    assert.deepEqual(failed, []);
    assert.deepEqual(got.slice(1), [CHAT, { b: 2 }]);
    assert.equal(s.inflated, 1);
  });

  await t.test('a bomb is frame_too_large', () => {
    const { socket, s, failed } = side(4096);
    s.compress = true;
    const bomb = packed(`{${' '.repeat(2 << 20)}}`);
    assert.ok(bomb.length < 4096);
    socket.emit('data', frame(bomb));
    assert.deepEqual([failed[0].code, failed[0].text], ['frame_too_large', 'compressed frame inflates to over the limit of 4096 bytes']);
  });

  await t.test('broken streams are protocol_error', () => {
    for (const broken of [packed('{"a":1}').subarray(0, -2), Buffer.concat([packed('{"a":1}'), Buffer.from('junk')]), Buffer.from([0, 0xff, 0xff, 0xff])]) {
      const { socket, s, failed } = side();
      s.compress = true;
      socket.emit('data', frame(Buffer.from(broken)));
      assert.equal(failed[0].code, 'protocol_error', String(broken.length));
      assert.ok(failed[0].text.startsWith('compressed frame is not a valid DEFLATE stream'), failed[0].text);
    }
  });

  await t.test('outgoing: long messages packed, secrets and short ones plain', () => {
    const { s } = side();
    s.compress = true;
    const link = new Link(s);
    const writes = [];
    s.write = (bodies) => writes.push(...bodies);
    link.send({ header: { scope: 'client', id: '1' }, payload: { type: 'chat', data: CHAT } });
    link.send({ header: { scope: 'client', id: '2' }, payload: { type: 'bester.refresh', data: { token: 'x'.repeat(600) } } });
    link.send({ header: { scope: 'client', id: '3' }, payload: { type: 'chat', data: 1 } });
    link.flush();
    assert.deepEqual(writes.map((b) => b[0]), [0, 0x7b, 0x7b]);
    assert.deepEqual(JSON.parse(zlib.inflateRawSync(writes[0].subarray(1))).payload.data, CHAT);
    assert.equal(s.deflated, 1);
  });
});
