// bester.test.js: bester.js without sockets: answer builders and respond().
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const bester = require('../bester');

const REQ = {
  header: { kind: 'request', request: '17', scope: 'client', from: { user: 'alice', server: 'node-a' } },
  payload: { type: 'echo', data: { hello: 'world' } },
};
const decode = (buf) => new bester.FrameDecoder().feed(buf);

// Keep the library's expected warnings/errors out of the test output.
for (const level of ['warn', 'error']) bester.log[level] = () => {};

test('builders', () => {
  assert.deepStrictEqual(bester.reply(REQ, [1]), {
    header: { status: 'ok', command: 'reply', request: '17' }, payload: { type: 'echo', data: [1] } });
  assert.deepStrictEqual(bester.error(REQ, 'bad_request', 'no'), {
    header: { status: 'error', command: 'reply', request: '17' },
    payload: { type: 'echo', data: { error: 'no', code: 'bad_request' } } });
  assert.deepStrictEqual(bester.sendClients(REQ, ['bob'], 1, 'news'), {
    header: { status: 'ok', command: 'sendClients', request: '17', commandData: ['bob'] },
    payload: { type: 'news', data: 1 } });
  assert.deepStrictEqual(bester.sendHandler(REQ, 'upper', 'x'), {
    header: { status: 'ok', command: 'sendHandler', request: '17', commandData: 'upper' },
    payload: { type: 'upper', data: 'x' } });
  assert.deepStrictEqual(bester.push(['bob'], 'news', 'hi', 'p1'), {
    header: { status: 'ok', command: 'sendClients', commandData: ['bob'], id: 'p1' },
    payload: { type: 'news', data: 'hi' } });
});

test('redirect', () => {
  assert.deepStrictEqual(bester.redirect(REQ, 'bester+wss://s1.example:443', 'mint'), {
    header: { status: 'ok', command: 'redirect', commandData: { url: 'bester+wss://s1.example:443', token: 'mint' },
      request: '17' } });
  assert.deepStrictEqual(bester.redirect(REQ, 'bester://h:1').header.commandData, { url: 'bester://h:1' });
  for (const [url, token] of [['http://h/'], ['bester://' + 'h'.repeat(510)], ['bester://h:1', ''],
    ['bester://h:1', 't'.repeat(8193)]]) {
    assert.throws(() => bester.redirect(REQ, url, token), TypeError);
  }
});

test('accessors', () => {
  assert.strictEqual(bester.typeOf(REQ), 'echo');
  assert.strictEqual(bester.senderOf(REQ), 'alice');
  const bare = { header: { kind: 'request', request: '1', from: { server: 'b' } }, payload: { type: 't' } };
  assert.strictEqual(bester.dataOf(bare), null);
  assert.strictEqual(bester.senderOf(bare), null);
});

test('respond: one answer, several, or none', () => {
  assert.deepStrictEqual(decode(bester.respond(REQ, (r) => bester.reply(r, 1))), [bester.reply(REQ, 1)]);
  const two = [bester.reply(REQ, 1), bester.push(['bob'], 'echo', 2)];
  assert.deepStrictEqual(decode(bester.respond(REQ, () => two)), two);
  assert.strictEqual(bester.respond(REQ, () => null).length, 0);
});

test('respond: reports and unknown frames are never answered', () => {
  const frames = [
    { header: { kind: 'report', status: 'ok', id: 'p1', delivered: [], offline: [] } },
    { header: { kind: 'report', status: 'error' }, data: { error: 'x', code: 'y' } },
    { header: { kind: 'surprise' } }, { no: 'header' }, [1], 'text', null,
  ];
  for (const f of frames) {
    assert.strictEqual(bester.respond(f, () => assert.fail('handle called')).length, 0);
  }
});

test('respond: a throw or an unencodable answer becomes internal_error', () => {
  const thrown = decode(bester.respond(REQ, () => { throw new TypeError('boom'); }));
  assert.deepStrictEqual(thrown, [bester.error(REQ, 'internal_error', 'the echo handler failed: TypeError')]);
  const big = decode(bester.respond(REQ, (r) => bester.reply(r, 'x'.repeat(bester.MAX_FRAME))));
  assert.strictEqual(big[0].payload.data.code, 'internal_error');
});

test('respond: async handlers resolve to their answer', async () => {
  const ok = await bester.respond(REQ, async (r) => bester.reply(r, 'later'));
  assert.deepStrictEqual(decode(ok), [bester.reply(REQ, 'later')]);
  const failed = await bester.respond(REQ, async () => { throw new RangeError('no'); });
  assert.strictEqual(decode(failed)[0].payload.data.code, 'internal_error');
});

test('logins: an auth handler is handed them and answers with loginOk or error', () => {
  const login = {
    header: { kind: 'login', request: '4', from: { address: '127.0.0.1:5000', listener: 'main', transport: 'tcp' } },
    payload: { type: 'bester.login', data: { apiKey: 'k' } },
  };
  assert.strictEqual(bester.isLogin(login), true);
  assert.strictEqual(bester.isLogin(REQ), false);
  assert.strictEqual(bester.addressOf(login), '127.0.0.1:5000');
  const decide = (r) => (bester.dataOf(r).apiKey === 'k' ? bester.loginOk(r, 'alice', { plan: 'pro' }) : bester.error(r, 'auth_failed', 'no'));
  assert.deepStrictEqual(decode(bester.respond(login, decide)), [{
    header: { status: 'ok', command: 'reply', request: '4' },
    payload: { type: 'bester.login', data: { user: 'alice', info: { plan: 'pro' } } },
  }]);
  assert.deepStrictEqual(bester.loginOk(login, 'bob').payload.data, { user: 'bob' });
  assert.deepStrictEqual(bester.infoOf({ header: { from: { user: 'a', info: { r: 1 } } } }), { r: 1 });
  assert.strictEqual(bester.infoOf(REQ), null);
});
