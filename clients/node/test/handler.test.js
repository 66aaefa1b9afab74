// handler.test.js: handler processes written with the package — on the broker's socket (exit 0
// at EOF; concurrent answers out of order; reports resolve pushes; logins), dialled by the real
// daemon (`connect = "/path"`), and the answers' shapes (redirect included).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { BesterError, Handler, connect } from '../index.js';
import { Broker, handler } from '../testlib/daemon.js';
import { FakeBroker } from '../testlib/socket.js';

const req = (request, type, data, from = { user: 'alice', server: 'test' }) => ({ header: { kind: 'request', request, scope: 'client', from }, payload: { type, data } });

test('a handler answers on its socket and exits 0 when the broker closes it', async () => {
  const fb = await FakeBroker.start('testlib/handlers/app.js', { BESTER_TYPE: 'app' });
  fb.send(req('1', 'echo', { a: 1 }), { header: { kind: 'report', status: 'ok', id: 'p9', delivered: [], offline: [] } }, req('2', 'app', { op: 'who' }));
  const answers = await fb.read(2);
  assert.deepEqual(answers, [
    { header: { status: 'ok', command: 'reply', request: '1' }, payload: { type: 'echo', data: { a: 1 } } },
    { header: { status: 'ok', command: 'reply', request: '2' }, payload: { type: 'app', data: { user: 'alice', server: 'test', info: null, scope: 'client' } } },
  ]);
  assert.deepEqual(await fb.eof(), { code: 0, signal: null });
  assert.match(fb.stderr, /broker closed the socket; exiting/);
});

test('requests are served concurrently: a fast answer overtakes a slow one', async () => {
  const fb = await FakeBroker.start('testlib/handlers/app.js', { BESTER_TYPE: 'app' });
  fb.send(req('slow', 'app', { op: 'slow', ms: 300, value: 's' }), req('fast', 'echo', 'f'));
  const answers = await fb.read(2);
  assert.deepEqual(answers.map((a) => a.header.request), ['fast', 'slow']);
  assert.deepEqual(await fb.eof(), { code: 0, signal: null });
});

test('a push resolves with the report that echoes its id; errors and throws become answers', async () => {
  const fb = await FakeBroker.start('testlib/handlers/app.js', { BESTER_TYPE: 'app' });
  fb.send(req('7', 'app', { op: 'pushme', value: 5 }));
  const [push] = await fb.read(1);
  assert.deepEqual(push, { header: { status: 'ok', command: 'sendClients', commandData: ['alice', 'nobody'], id: 'push-1' }, payload: { type: 'news', data: 5 } });
  fb.send({ header: { kind: 'report', status: 'ok', id: 'push-1', delivered: ['alice'], offline: ['nobody'] } }, req('8', 'app', { op: 'fail' }), req('9', 'app', { op: 'boom' }));
  const byRequest = Object.fromEntries((await fb.read(4)).slice(1).map((a) => [a.header.request, a]));
  assert.deepEqual(byRequest['7'], { header: { status: 'ok', command: 'reply', request: '7' }, payload: { type: 'app', data: { status: 'ok', delivered: ['alice'], offline: ['nobody'] } } });
  assert.deepEqual(byRequest['8'], { header: { status: 'error', command: 'reply', request: '8' }, payload: { type: 'app', data: { error: 'you may not', code: 'not_allowed' } } });
  assert.deepEqual(byRequest['9'], { header: { status: 'error', command: 'reply', request: '9' }, payload: { type: 'app', data: { error: 'the app handler failed: Error', code: 'internal_error' } } });
  assert.match(fb.stderr, /request 9 failed: Error: boom/);
  assert.deepEqual(await fb.eof(), { code: 0, signal: null });
});

test('answer builders: every command, and the redirect frame besterd takes', async () => {
  const h = new Handler();
  h.on('t', (r) => {
    switch (r.data) {
      case 'clients':
        return r.sendClients(new Set(['bob']), 'x');
      case 'servers':
        return r.sendServers(['node-b'], 'y', 'other');
      case 'handler':
        return r.sendHandler('echo', 'z');
      case 'redirect':
        return r.redirect('bester+wss://s1.example:443', 'mint');
      case 'bare':
        return r.redirect('bester://s2.example:2222');
      case 'bad':
        return r.redirect('http://evil.example/');
      default:
        return undefined;
    }
  });
  const answer = (data) => h.respond(req('17', 't', data));
  assert.deepEqual(await answer('clients'), { header: { status: 'ok', command: 'sendClients', commandData: ['bob'], request: '17' }, payload: { type: 't', data: 'x' } });
  assert.deepEqual(await answer('servers'), { header: { status: 'ok', command: 'sendServers', commandData: ['node-b'], request: '17' }, payload: { type: 'other', data: 'y' } });
  assert.deepEqual(await answer('handler'), { header: { status: 'ok', command: 'sendHandler', commandData: 'echo', request: '17' }, payload: { type: 'echo', data: 'z' } });
  assert.equal(
    JSON.stringify(await answer('redirect')),
    '{"header":{"status":"ok","command":"redirect","commandData":{"url":"bester+wss://s1.example:443","token":"mint"},"request":"17"}}',
  );
  assert.deepEqual(await answer('bare'), { header: { status: 'ok', command: 'redirect', commandData: { url: 'bester://s2.example:2222' }, request: '17' } });
  // What besterd would refuse is refused here first, answered internal_error (and logged).
  assert.equal((await answer('bad')).payload.data.code, 'internal_error');
  assert.deepEqual(await answer(undefined), { header: { status: 'ok', command: 'reply', request: '17' }, payload: { type: 't', data: null } });
  // A type with no function.
  assert.deepEqual((await h.respond(req('18', 'nope', 1))).payload.data, { error: 'this handler does not serve "nope"', code: 'unknown_type' });
  // A BesterError thrown by a login function refuses the login with its code.
  h.login(() => {
    throw new BesterError('auth_failed', 'no');
  });
  const login = { header: { kind: 'login', request: '3', from: { address: '192.0.2.1:5', listener: 'main', transport: 'tcp' } }, payload: { type: 'bester.login', data: { apiKey: 'x' } } };
  assert.deepEqual(await h.respond(login), { header: { status: 'error', command: 'reply', request: '3' }, payload: { type: 'bester.login', data: { error: 'no', code: 'auth_failed' } } });
});

let broker;
before(async () => {
  broker = await Broker.start({
    tables: (b) => `[handlers.dial]\nconnect = ${JSON.stringify(b.path('dial.sock'))}\n${handler('testlib/handlers/dialled.js')}\n`,
  });
});
after(async () => {
  if (broker) await broker.close();
});

test('connect-style: the daemon dials the handler for every request', async () => {
  const c = await connect(`bester://alice:alice-pw@${broker.addr}`);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => c.request('dial', i)));
  assert.deepEqual(answers, Array.from({ length: 20 }, (_, i) => ({ type: 'dial', data: i, user: 'alice' })));
  c.close();
});
