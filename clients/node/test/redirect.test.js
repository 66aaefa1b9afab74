// redirect.test.js: following `{"header":{"status":"ok","kind":"redirect","id":…},"data":{"url",
// "token"}}`. Between two real daemons sharing a token key and user store, a greeter handler
// written with the package redirects with a minted resume token; a stand-in server written in the
// test (it speaks the frames of PROTOCOL.md and records every frame it is sent) plays what a
// daemon would not: a target that shows what it was sent, a loop, a redirect without a token, a
// redirect answering the login. The client must log in at the target with {token} alone, send the
// request again there, stop after 3 redirects, and never send its password to a host it was sent
// to.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { FrameDecoder, checkRedirect, connect, encodeFrame, errors, parseUrl } from '../index.js';
import fs from 'node:fs';
import { Broker, hs256 } from '../testlib/daemon.js';
import { HS_SECRET, appTables, writeSecrets } from '../testlib/fixtures.js';

/** A stand-in server: `answer(frame, state)` returns frames to send and whether to close. */
async function standIn(name, answer) {
  const seen = [];
  const server = net.createServer((conn) => {
    const decoder = new FrameDecoder();
    const state = { loggedIn: false };
    conn.on('data', (chunk) => {
      for (const frame of decoder.feed(chunk)) {
        seen.push(frame);
        if (frame.header.identify) {
          state.loggedIn = true;
          conn.write(encodeFrame({ header: { status: 'ok', kind: 'reply' }, data: { user: 'alice', server: name } }));
          continue;
        }
        const { frames = [], close = false } = answer(frame, state) || {};
        for (const f of frames) conn.write(encodeFrame(f));
        if (close) conn.end();
      }
    });
    conn.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const addr = `127.0.0.1:${server.address().port}`;
  return { server, seen, addr, url: `bester://${addr}` };
}

const redirect = (frame, url, token) => ({
  frames: [{ header: { status: 'ok', kind: 'redirect', id: frame.header.id }, data: token === undefined ? { url } : { url, token } }],
  close: true,
});

let broker;
let session;
const standIns = [];
before(async () => {
  broker = await Broker.start({ name: 'greeter', tables: (b) => appTables(b.dir), setup: writeSecrets });
  // The session broker: the greeter's token key and user store, so a minted token logs in there.
  session = await Broker.start({
    name: 'session',
    tables: (b) => appTables(b.dir),
    setup: (b) => {
      writeSecrets(b);
      fs.copyFileSync(broker.path('token.key'), b.path('token.key'));
      fs.copyFileSync(broker.users, b.users);
    },
  });
});
after(async () => {
  for (const s of standIns) s.server.close();
  if (broker) await broker.close();
  if (session) await session.close();
});

test('a greeter handler redirects with a minted token: the client ends up at the session broker as the same user', async () => {
  const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
  const hops = [];
  c.on('redirect', (r) => hops.push(r));
  const other = c.request('app', { op: 'slow', ms: 3000, value: 'x' }).catch((e) => e);
  assert.deepEqual(await c.request('app', { op: 'go', on: 'greeter', url: `bester://${session.addr}` }), { at: 'session', user: 'alice' });
  assert.equal(c.server, 'session');
  assert.equal(c.user, 'alice');
  assert.deepEqual(hops, [{ from: `bester://alice@${broker.addr}`, to: `bester://${session.addr}` }]);
  // The other request in flight at the greeter is answered `redirected`, not lost.
  const err = await other;
  assert.ok(err instanceof errors.Redirected, String(err));
  assert.equal(err.text, 'the client was redirected before the "app" handler answered this request');
  // At the session broker: one login, by the resume token, no password.
  const log = session.log();
  assert.equal(log.match(/logged in from/g).length, 1, log);
  assert.match(log, /user=alice logged in from .* by resume token/);
  // Reconnects go to the session broker now, with its resume token: the password is for the greeter.
  assert.equal(c.session.atHome, false);
  assert.deepEqual(c.session.logins().map((l) => Object.keys(l.auth)), [['resume']]);
  c.close();
});

test('a redirect to a daemon with a JWT is followed with the token only, and the request sent again there', async () => {
  const jwt = await hs256(HS_SECRET, { sub: 'carol', exp: Math.floor(Date.now() / 1000) + 600 });
  const greeter = await standIn('greeter', (frame) => redirect(frame, `bester://${broker.addr}`, jwt));
  standIns.push(greeter);
  const c = await connect(`bester://alice:alice-pw@${greeter.addr}`, { backoff: 10 });
  const hops = [];
  c.on('redirect', (r) => hops.push(r));
  assert.equal(c.server, 'greeter');
  assert.deepEqual(await c.request('echo', { hello: 1 }), { hello: 1 });
  assert.equal(c.user, 'carol', 'logged in at the target by the token');
  assert.equal(c.server, 'greeter');
  assert.deepEqual(hops, [{ from: `bester://alice@${greeter.addr}`, to: `bester://${broker.addr}` }]);
  assert.deepEqual(greeter.seen.map((f) => Object.keys(f.header)), [['identify'], ['scope', 'id']], 'the greeter saw the login and one request');
  c.close();
});

test('the password is never sent to the host a redirect names', async () => {
  const target = await standIn('target', () => ({}));
  const greeter = await standIn('greeter', (frame) => redirect(frame, target.url, 'opaque-token'));
  standIns.push(target, greeter);
  const c = await connect(`bester://alice:alice-pw@${greeter.addr}`);
  const reply = c.request('echo', 1, { timeout: 300 }).catch((e) => e);
  assert.equal((await reply).code, 'timeout'); // the stand-in target never answers
  assert.deepEqual(target.seen[0], { header: { identify: { type: 'client', authentication: { token: 'opaque-token' } } } });
  assert.equal(JSON.stringify(target.seen).includes('alice-pw'), false);
  c.close();
});

test('a redirect loop stops after 3 hops with too_many_redirects', async () => {
  const loop = await standIn('loop', (frame) => redirect(frame, `bester://${loop.addr}`, 't'));
  standIns.push(loop);
  const c = await connect(`bester://alice:alice-pw@${loop.addr}`, { backoff: 10 });
  const err = await c.request('echo', 1).catch((e) => e);
  assert.ok(err instanceof errors.TooManyRedirects, String(err));
  assert.equal(err.code, 'too_many_redirects');
  assert.equal(err.text, 'redirected more than 3 times');
  assert.equal(loop.seen.filter((f) => f.header.scope).length, 4, 'the request was sent 4 times: once and after each of 3 redirects');
  c.close();
});

test('a redirect without a token, or from TLS to clear text, is refused', async () => {
  const bare = await standIn('bare', (frame) => redirect(frame, `bester://${broker.addr}`));
  standIns.push(bare);
  const c = await connect(`bester://alice:alice-pw@${bare.addr}`, { backoff: 10 });
  const err = await c.request('echo', 1).catch((e) => e);
  assert.ok(err instanceof errors.RedirectRefused, String(err));
  assert.equal(err.text, `redirected to bester://${broker.addr} without a token`);
  c.close();
  assert.throws(
    () => checkRedirect(parseUrl('bester+wss://a.example:443'), 'bester+ws://b.example:80', 't', 0),
    (e) => e.code === 'redirect_refused' && e.text === 'redirected from TLS to bester+ws://b.example:80: not sending the token unencrypted',
  );
  assert.throws(
    () => checkRedirect(parseUrl('bester://a:1'), 'http://b', 't', 0),
    (e) => e.code === 'redirect_refused' && e.text === 'redirected to "http://b", which is not a bester:// URL without a user',
  );
  // A target URL naming a user is refused (no credentials travel with a redirect).
  assert.throws(
    () => checkRedirect(parseUrl('bester://a:1'), 'bester+tls://eve:pw@b.example:9', 't', 0),
    (e) => e.code === 'redirect_refused' && e.text === 'redirected to "bester+tls://eve:pw@b.example:9", which is not a bester:// URL without a user',
  );
  assert.equal(checkRedirect(parseUrl('bester+tls://a:1'), 'bester+wss://b.example:9/x', 't', 0).authority, 'b.example:9');
});

test('a redirect answering the login itself is followed with the token', async () => {
  const jwt = await hs256(HS_SECRET, { sub: 'carol', exp: Math.floor(Date.now() / 1000) + 600 });
  const server = net.createServer((conn) => {
    const d = new FrameDecoder();
    conn.on('data', (chunk) => {
      if (d.feed(chunk).length) conn.end(encodeFrame({ header: { status: 'ok', kind: 'redirect' }, data: { url: `bester://${broker.addr}`, token: jwt } }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  standIns.push({ server });
  const c = await connect(`bester://alice:alice-pw@127.0.0.1:${server.address().port}`);
  assert.equal(c.user, 'carol');
  assert.equal(await c.ping(), 'pong');
  c.close();
});
