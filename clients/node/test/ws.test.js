// ws.test.js: the RFC 6455 client on what besterd's WebSocket listener does not send on its own —
// a message in fragments with a ping between them, a close frame — from a stand-in server written
// here that checks the client's side: a correct upgrade, every frame masked, the pong echoing the
// ping, the close answered. A wrong Sec-WebSocket-Accept is refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { open, parseUrl } from '../index.js';
import { until } from '../testlib/daemon.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const frame = (fin, opcode, payload) => Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode, payload.length]), payload]);

/** Unmask client frames (all must be masked): [{opcode, payload}]. */
function clientFrames(buf) {
  const out = [];
  let at = 0;
  while (at + 2 <= buf.length) {
    assert.ok(buf[at + 1] & 0x80, 'client frames are masked');
    let len = buf[at + 1] & 0x7f;
    let head = 2;
    if (len === 126) {
      len = buf.readUInt16BE(at + 2);
      head = 4;
    }
    const mask = buf.subarray(at + head, at + head + 4);
    const payload = Buffer.from(buf.subarray(at + head + 4, at + head + 4 + len)).map((b, i) => b ^ mask[i & 3]);
    out.push({ opcode: buf[at] & 0x0f, payload: Buffer.from(payload) });
    at += head + 4 + len;
  }
  return out;
}

async function standIn(onUpgraded, accept = (key) => createHash('sha1').update(key + GUID).digest('base64')) {
  const got = { head: '', bytes: Buffer.alloc(0) };
  const server = net.createServer((conn) => {
    conn.once('data', (chunk) => {
      got.head = chunk.toString('latin1');
      const key = /Sec-WebSocket-Key: (\S+)/.exec(got.head)[1];
      conn.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept(key)}\r\n\r\n`);
      conn.on('data', (more) => {
        got.bytes = Buffer.concat([got.bytes, more]);
      });
      result.conn = conn;
      onUpgraded(conn);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const result = { server, got, conn: null, url: parseUrl(`bester+ws://127.0.0.1:${server.address().port}/`) };
  return result;
}

test('fragments reassembled around a ping, pong echoed, close answered, frames masked', async () => {
  const body = Buffer.from('{"header":{"status":"ok","kind":"push","type":"t","from":{"server":"s"}},"data":"é"}');
  const s = await standIn((conn) => {
    conn.write(Buffer.concat([frame(false, 1, body.subarray(0, 10)), frame(true, 9, Buffer.from('are you there')), frame(false, 0, body.subarray(10, 30)), frame(true, 0, body.subarray(30))]));
  });
  const link = await open(s.url);
  const frames = [];
  link.on('frame', (f) => frames.push(f));
  await until('the message', () => frames.length === 1);
  assert.deepEqual(frames[0], JSON.parse(body));
  assert.match(s.got.head, /^GET \/ HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: [A-Za-z0-9+/]{22}==\r\nSec-WebSocket-Version: 13\r\n\r\n$/);
  await until('the pong', () => clientFrames(s.got.bytes).length >= 1);
  assert.deepEqual(clientFrames(s.got.bytes)[0], { opcode: 0xa, payload: Buffer.from('are you there') });
  link.send({ header: { scope: 'client', id: '1' }, payload: { type: 'x', data: 'y'.repeat(200) } });
  await until('the message frame', () => clientFrames(s.got.bytes).length >= 2);
  const sent = clientFrames(s.got.bytes)[1];
  assert.equal(sent.opcode, 1);
  assert.deepEqual(JSON.parse(sent.payload), { header: { scope: 'client', id: '1' }, payload: { type: 'x', data: 'y'.repeat(200) } });
  // The server closes (1000): the client answers with a close frame, and the link ends cleanly.
  const closed = new Promise((r) => link.once('close', r));
  s.conn.write(frame(true, 8, Buffer.from([0x03, 0xe8])));
  assert.equal(await closed, null, 'a 1000 close is not an error');
  await until('the close answer', () => clientFrames(s.got.bytes).length >= 3);
  assert.deepEqual(clientFrames(s.got.bytes)[2], { opcode: 8, payload: Buffer.from([0x03, 0xe8]) });
  s.server.close();
});

test('a wrong Sec-WebSocket-Accept is refused', async () => {
  const s = await standIn(() => {}, () => 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=');
  const err = await open(s.url).catch((e) => e);
  assert.equal(err.code, 'connection_lost');
  assert.equal(err.text, 'WebSocket upgrade answered with a wrong Sec-WebSocket-Accept');
  s.server.close();
});
