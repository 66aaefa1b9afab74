// reconnect.test.js: the client across daemon restarts — the resume token (under a shared
// token_secret_file) logs in again after a restart, requests issued while the daemon is down wait
// and are answered after the reconnect, in-flight ones fail with connection_lost; without a
// stable token key the client falls back to its password at the URL it was given; a revoked
// session is not reconnected.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { BesterError, connect, errors } from '../index.js';
import { Broker, besterdCmd, until } from '../testlib/daemon.js';
import { appTables, writeSecrets } from '../testlib/fixtures.js';

const brokers = [];
after(async () => {
  for (const b of brokers) await b.close();
});

async function start(stableKey) {
  const b = await Broker.start({
    tables: (x) => (stableKey ? appTables(x.dir) : appTables(x.dir).replace(/^token_secret_file = .*$/m, '')),
    setup: writeSecrets,
  });
  brokers.push(b);
  return b;
}

test('after the daemon is killed and started again, the client logs in again with its resume token, not its password', async () => {
  const broker = await start(true);
  const c = await connect(`bester://alice:alice-pw@${broker.addr}`, { backoff: 20, maxBackoff: 200 });
  const before = c.session.resume;
  // A resume token taken before the restart, for a second client.
  const disconnects = [];
  c.on('disconnect', (e) => disconnects.push(e));
  const inFlight = c.request('app', { op: 'slow', ms: 5000, value: 1 }).catch((e) => e);
  await until('the slow request to be in flight', () => c.calls.size === 1);
  // From now on the password would be refused: only the resume token can log in again.
  c.session.credentials.password = 'not-the-password';
  await broker.kill();
  const lost = await inFlight;
  await broker.launch();
  assert.ok(lost instanceof errors.ConnectionLost, String(lost));
  assert.equal(lost.code, 'connection_lost');
  await until('the reconnect', () => c.connections === 2 && c.connected);
  assert.equal(c.user, 'alice');
  assert.deepEqual(await c.request('echo', 'after'), 'after');
  assert.ok(disconnects.length >= 1);
  // The old token also logs a new client in on the restarted daemon.
  const d = await connect(`bester://${broker.addr}`, { resume: before });
  assert.equal(d.user, 'alice');
  d.close();
  c.close();
});

test('requests sent while the daemon is down are answered once it is back', async () => {
  const broker = await start(true);
  const c = await connect(`bester://bob:bob-pw@${broker.addr}`, { backoff: 20, maxBackoff: 100 });
  const status = await broker.stop();
  assert.equal(status.code, 0);
  await until('the client to notice', () => !c.connected);
  // Built-in types: the daemon takes clients before its handlers are all connected again.
  const waiting = Promise.all([c.ping(), c.whoami()]);
  await broker.launch();
  const [pong, whoami] = await waiting;
  assert.equal(pong, 'pong');
  assert.equal(whoami.user, 'bob');
  assert.equal(c.connections, 2);
  c.close();
});

test('without a stable token key the resume token is refused and the password is used again', async () => {
  const broker = await start(false);
  const c = await connect(`bester://alice:alice-pw@${broker.addr}`, { backoff: 20, maxBackoff: 200 });
  await broker.restart();
  await until('the reconnect', () => c.connections === 2 && c.connected);
  assert.equal(await c.ping(), 'pong');
  c.close();
});

test('a revoked session is not reconnected: the client closes with session_revoked', async () => {
  const broker = await start(true);
  const c = await connect(`bester://bob:bob-pw@${broker.addr}`, { backoff: 20 });
  const closed = new Promise((resolve) => c.once('close', resolve));
  besterdCmd(['user', '--users', broker.users, 'del', 'bob']);
  const err = await closed;
  assert.ok(err instanceof errors.SessionRevoked, String(err));
  assert.equal(err.code, 'session_revoked');
  assert.equal(c.connections, 1);
  const after = await c.request('echo', 1).catch((e) => e);
  assert.ok(after instanceof BesterError && after.code === 'session_revoked', String(after));
});
