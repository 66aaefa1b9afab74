// client.test.js: the client and handler halves against the real besterd and real handler
// processes written with this package (testlib/handlers/app.js): every login shape, pipelining,
// pushes and reports, each refusal as its typed error with the server's exact code and text.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import {
  AuthError,
  BesterError,
  HandlerFailed,
  connect,
  errors,
  publicKeyOf,
} from '../index.js';
import { Broker, besterdCmd, hs256 } from '../testlib/daemon.js';
import { HS_SECRET, appTables, writeSecrets } from '../testlib/fixtures.js';

/** Assert that `promise` rejects with exactly this class, code and text. */
async function refused(promise, Class, code, text) {
  const err = await promise.then(
    (v) => assert.fail(`expected ${code}, got ${JSON.stringify(v)}`),
    (e) => e,
  );
  assert.ok(err instanceof BesterError, `not a BesterError: ${err && err.stack}`);
  assert.equal(err.code, code, err.message);
  if (text instanceof RegExp) assert.match(err.text, text);
  else assert.equal(err.text, text);
  assert.ok(err instanceof Class, `${err.name} is not a ${Class.name}`);
  return err;
}

let broker;
let url;
const key = generateKeyPairSync('ed25519').privateKey;
const now = () => Math.floor(Date.now() / 1000);

before(async () => {
  broker = await Broker.start({
    tables: (b) => appTables(b.dir),
    setup: (b) => {
      writeSecrets(b);
      fs.writeFileSync(b.path('alice.pub'), `${publicKeyOf(key)}\n`);
      besterdCmd(['user', '--users', b.users, 'add-key', 'alice', b.path('alice.pub')]);
    },
  });
  url = `bester://${broker.addr}`;
});

after(async () => {
  if (broker) await broker.close();
});

describe('logins', () => {
  test('password: the identify reply names the user and carries a resume token', async () => {
    const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
    assert.equal(c.user, 'alice');
    assert.equal(c.server, 'test');
    assert.match(c.session.resume, /^v1\./);
    assert.deepEqual(await c.request('echo', { hello: 'wörld ✓' }), { hello: 'wörld ✓' });
    c.close();
  });

  test('password given as an option, never kept in the URL shown', async () => {
    const c = await connect(`bester://alice@${broker.addr}`, { password: 'alice-pw' });
    assert.equal(c.url, `bester://alice@${broker.addr}`);
    assert.equal(JSON.stringify(c.session.credentials).includes('alice-pw'), false);
    c.close();
  });

  test('token: an HS256 JWT minted here logs in as its sub with its info', async () => {
    const jwt = await hs256(HS_SECRET, { sub: 'carol', exp: now() + 600, info: { role: 'admin' } });
    const c = await connect(url, { token: jwt });
    assert.equal(c.user, 'carol');
    assert.deepEqual(await c.request('app', { op: 'who' }), { user: 'carol', server: 'test', info: { role: 'admin' }, scope: 'client' });
    c.close();
  });

  test('resume: a resume token from one session logs in again without the password', async () => {
    const first = await connect(`bester://alice:alice-pw@${broker.addr}`);
    const resume = first.session.resume;
    first.close();
    const c = await connect(url, { resume });
    assert.equal(c.user, 'alice');
    c.close();
  });

  test('key: ed25519 challenge signed with node:crypto', async () => {
    const c = await connect(url, { username: 'alice', key, serverName: 'test' });
    assert.equal(c.user, 'alice');
    assert.equal(await c.ping(), 'pong');
    c.close();
  });

  test('key: a challenge from a server of another name is not signed', async () => {
    await refused(connect(url, { username: 'alice', key, serverName: 'elsewhere' }), errors.AuthFailed, 'auth_failed', 'the server says it is "test", not "elsewhere": not signing');
  });

  test('key: a key that is not the user\'s is refused as a wrong password', async () => {
    const other = generateKeyPairSync('ed25519').privateKey;
    await refused(connect(url, { username: 'alice', key: other }), errors.AuthFailed, 'auth_failed', 'invalid username or password');
  });

  test('auth handler: an apiKey login the package\'s login() decides', async () => {
    const c = await connect(url, { authentication: { apiKey: 'k-good' } });
    assert.equal(c.user, 'dave');
    assert.deepEqual((await c.request('app', { op: 'who' })).info, { plan: 'pro', via: 'tcp' });
    c.close();
    await refused(connect(url, { authentication: { apiKey: 'k-bad' } }), errors.AuthFailed, 'auth_failed', 'invalid API key');
  });

  test('missing credentials fail before connecting', () => {
    assert.throws(() => connect(url), /no credentials/);
  });
});

describe('refusals: each its typed error with the exact code and text', () => {
  test('wrong password', async () => {
    const e = await refused(connect(`bester://alice:nope@${broker.addr}`), errors.AuthFailed, 'auth_failed', 'invalid username or password');
    assert.ok(e instanceof AuthError);
    assert.equal(e.frame.header.kind, 'reply');
  });

  test('tokens: expired, bad signature, malformed; resume tokens: not one of ours', async () => {
    const expired = await hs256(HS_SECRET, { sub: 'carol', exp: now() - 3600 });
    await refused(connect(url, { token: expired }), errors.TokenExpired, 'token_expired', 'the token has expired');
    const forged = await hs256('another secret, also at least 32 bytes', { sub: 'carol', exp: now() + 600 });
    await refused(connect(url, { token: forged }), errors.TokenBadSignature, 'token_bad_signature', "the token's signature does not verify");
    await refused(connect(url, { token: 'not.a.jwt' }), errors.TokenMalformed, 'token_malformed', 'malformed token: not base64url');
    await refused(connect(url, { resume: 'v1.e30.AAAA' }), errors.ResumeRefused, 'resume_refused', "the resume token was not issued with this server's key");
  });

  test('request errors keep the connection', async () => {
    const c = await connect(`bester://bob:bob-pw@${broker.addr}`);
    await refused(c.request('nope', 1), errors.UnknownType, 'unknown_type', 'no handler for type "nope"');
    await refused(c.request('bester.nope', 1), errors.ReservedType, 'reserved_type', /"bester\.nope" is not a built-in type/);
    await refused(c.request('a b', 1), errors.InvalidMessage, 'invalid_message', 'payload.type "a b" must be 1 to 64 characters of A-Z a-z 0-9 . _ -');
    // A handler's own code: a plain BesterError.
    const own = await refused(c.request('app', { op: 'fail' }), BesterError, 'not_allowed', 'you may not');
    assert.equal(own.constructor, BesterError);
    await refused(c.request('app', { op: 'boom' }), errors.InternalError, 'internal_error', 'the app handler failed: Error');
    await refused(c.request('app', { op: 'zzz' }), BesterError, 'bad_request', 'no op "zzz"');
    await refused(c.request('app', { op: 'slow', ms: 2000, value: 1 }, { timeout: 50 }), errors.Timeout, 'timeout', 'no answer to "app" within 50 ms');
    assert.equal(await c.ping(), 'pong');
    c.close();
  });

  test('a handler crash mid-request is handler_unavailable; the handler is restarted', async () => {
    const c = await connect(`bester://bob:bob-pw@${broker.addr}`);
    const e = await refused(c.request('crash', null), errors.HandlerUnavailable, 'handler_unavailable', 'the "crash" handler went away before answering');
    assert.ok(e instanceof HandlerFailed);
    assert.equal(await c.ping(), 'pong');
    c.close();
  });

  test('after close(), requests reject with closed', async () => {
    const c = await connect(`bester://bob:bob-pw@${broker.addr}`);
    c.close();
    await refused(c.request('echo', 1), errors.Closed, 'closed', 'the client is closed');
  });
});

describe('requests', () => {
  test('1000 requests in flight at once, each answered by its own id', async () => {
    const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
    const n = 1000;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => c.request('echo', { i, pad: 'x'.repeat(i % 50) })));
    assert.deepEqual(answers.map((a) => a.i), Array.from({ length: n }, (_, i) => i));
    // Out of order: slow ones first, fast ones overtake.
    const mixed = await Promise.all([
      c.request('app', { op: 'slow', ms: 200, value: 'slow' }),
      ...Array.from({ length: 50 }, (_, i) => c.request('echo', i)),
    ]);
    assert.equal(mixed[0], 'slow');
    assert.deepEqual(mixed.slice(1), Array.from({ length: 50 }, (_, i) => i));
    c.close();
  });

  test('sendHandler chains and whole reply frames', async () => {
    const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
    assert.deepEqual(await c.request('app', { op: 'hop', value: [1, 2] }), [1, 2]);
    const frame = await c.requestFrame('echo', 'x');
    assert.equal(frame.header.type, 'echo');
    assert.equal(frame.header.kind, 'reply');
    c.close();
  });

  test('a large message (300 KB) round trip', async () => {
    const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
    const big = 'é'.repeat(150000);
    assert.equal(await c.request('echo', big), big);
    c.close();
  });
});

describe('pushes', () => {
  test('sendClients: a push to another user, as an async iterator and an event', async () => {
    const alice = await connect(`bester://alice:alice-pw@${broker.addr}`);
    const bob = await connect(`bester://bob:bob-pw@${broker.addr}`);
    const events = [];
    bob.on('push', (p) => events.push(p));
    const reply = await alice.requestFrame('app', { op: 'tell', to: ['bob', 'zed'], text: 'hi bob' });
    assert.deepEqual(reply.header.delivered, ['bob']);
    assert.deepEqual(reply.header.offline, ['zed']);
    const iterator = bob[Symbol.asyncIterator]();
    const { value: push } = await iterator.next();
    assert.equal(push.type, 'tell');
    assert.equal(push.data, 'hi bob');
    assert.deepEqual(push.from, { user: 'alice', server: 'test' });
    assert.equal(events.length, 1);
    alice.close();
    bob.close();
    assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  });

  test('a handler push and its report', async () => {
    const alice = await connect(`bester://alice:alice-pw@${broker.addr}`);
    const answer = await alice.request('app', { op: 'pushme', value: { n: 1 } });
    assert.deepEqual(answer, { status: 'ok', delivered: ['alice'], offline: ['nobody'] });
    const push = await alice.nextPush();
    assert.equal(push.type, 'news');
    assert.deepEqual(push.data, { n: 1 });
    assert.deepEqual(push.from, { server: 'test', handler: 'app' });
    alice.close();
  });
});
