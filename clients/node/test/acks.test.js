// acks.test.js: stored pushes against the real besterd — kept while the user is away, handed
// over once and in order with their `msg`, acknowledged by the client (or by the application
// with autoAck: false), and a copy that comes again after a reconnect not handed over twice
// (PROTOCOL.md §4, "Stored delivery").

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../index.js';
import { Seen } from '../lib/acks.js';
import { Broker, handler, until } from '../testlib/daemon.js';

const brokers = [];
after(async () => {
  for (const b of brokers) await b.close();
});

// The handler answers `{op: 'tell'}` with a sendClients of type tell, the type that stores.
async function start() {
  const app = handler('testlib/handlers/app.js');
  const b = await Broker.start({ tables: `[handlers.app]\n${app}\n[handlers.tell]\n${app}\noffline = "store"\n` });
  brokers.push(b);
  return b;
}

const login = (b, user, options = {}) => connect(`bester://${user}:${user}-pw@${b.addr}`, { backoff: 20, maxBackoff: 200, ...options });

/** alice sends `text` to bob: the reply's header (stored, delivered, …). */
async function mail(alice, text) {
  return (await alice.requestFrame('app', { op: 'tell', to: ['bob'], text })).header;
}

/** Everything the server had for `c` when this was sent has come: the reply to an empty ack
 * comes after the backlog read (and the acks) before it. */
async function barrier(c) {
  assert.deepEqual(await c.request('bester.ack', { msgs: [] }), { acked: 0 });
}

/** What a fresh client of bob (with no memory of ids) is sent now. */
async function leftFor(b) {
  const fresh = await login(b, 'bob', { reconnect: false, autoAck: false });
  await barrier(fresh);
  const left = fresh.pushBuffer.map((p) => p.data);
  fresh.close();
  return left;
}

test('Seen: a bounded memory of the ids handed over', () => {
  const seen = new Seen(2);
  assert.equal(seen.arrived(undefined), 'deliver');
  assert.equal(seen.arrived('1'), 'deliver');
  assert.equal(seen.arrived('1'), 'drop', 'its ack is still to come');
  seen.owe('1');
  assert.deepEqual(seen.take(), ['1']);
  assert.equal(seen.arrived('1'), 'ack', 'acknowledged before: again, not handed over');
  assert.deepEqual(seen.take(), ['1']);
  seen.arrived('2');
  seen.arrived('3');
  assert.equal(seen.ids.size, 2);
  assert.equal(seen.arrived('1'), 'deliver', 'the oldest was forgotten');
  seen.owed = Array.from({ length: 5000 }, (_, i) => String(i));
  assert.equal(seen.take().length, 4096, 'at most 4096 ids per bester.ack');
  assert.throws(() => new Seen(0), TypeError);
});

test('stored pushes come once, in order, with msg, and are acknowledged by the client', async () => {
  const b = await start();
  const alice = await login(b, 'alice');
  for (const n of [0, 1, 2]) assert.deepEqual((await mail(alice, n)).stored, ['bob']);
  const bob = await login(b, 'bob');
  const got = [await bob.nextPush(), await bob.nextPush(), await bob.nextPush()];
  assert.deepEqual(got.map((p) => p.data), [0, 1, 2]);
  for (const p of got) {
    assert.equal(p.stored, true);
    assert.match(p.msg, /^[0-9]+$/);
    assert.ok(p.time > 1.6e12);
  }
  assert.equal(new Set(got.map((p) => p.msg)).size, 3);
  await barrier(bob);
  assert.deepEqual(bob.pushBuffer, []);
  bob.close();
  assert.deepEqual(await leftFor(b), [], 'the queue is empty');
  alice.close();
});

test("'push' listeners: a live push of a storing type has its msg and is acknowledged", async () => {
  const b = await start();
  const alice = await login(b, 'alice');
  const got = [];
  const bob = await login(b, 'bob', { onPush: (p) => got.push(p) });
  assert.deepEqual((await mail(alice, 'live')).delivered, ['bob']);
  await until('the push', () => got.length === 1);
  assert.match(got[0].msg, /^[0-9]+$/);
  assert.equal(got[0].stored, false);
  await until('the ack', () => bob.seen.owed.length === 0);
  await barrier(bob);
  bob.close();
  assert.deepEqual(await leftFor(b), []);
  alice.close();
});

test('autoAck: false leaves them on the server until ack(); a copy after a reconnect is not handed over twice', async () => {
  const b = await start();
  const alice = await login(b, 'alice');
  for (const n of [0, 1, 2]) await mail(alice, n);
  alice.close();
  const bob = await login(b, 'bob', { autoAck: false });
  const got = [await bob.nextPush(), await bob.nextPush(), await bob.nextPush()];
  await barrier(bob);
  assert.deepEqual(await leftFor(b), [0, 1, 2], 'nothing acknowledged yet');
  // The connection dies before the application acknowledges: the server sends them all again
  // after the next login; the client does not hand them over again.
  await b.restart();
  await until('the reconnect', () => bob.connections === 2 && bob.connected);
  await barrier(bob);
  assert.deepEqual(bob.pushBuffer, [], 'a copy was handed over twice');
  assert.equal(await bob.ack(got[0], got[1]), 2);
  assert.equal(await bob.ack(got[2].msg), 1);
  assert.deepEqual(await leftFor(b), []);
  bob.close();
});

test('an ack made while the connection is down: the copies the next login brings are acknowledged again, not handed over', async () => {
  const b = await start();
  const alice = await login(b, 'alice');
  for (const n of [0, 1, 2]) await mail(alice, n);
  alice.close();
  const bob = await login(b, 'bob', { autoAck: false });
  const got = [await bob.nextPush(), await bob.nextPush(), await bob.nextPush()];
  await b.stop();
  const acking = bob.ack(...got); // waits for the next connection
  await b.launch();
  await acking;
  await barrier(bob);
  assert.deepEqual(bob.pushBuffer, []);
  assert.deepEqual(await leftFor(b), []);
  bob.close();
});
