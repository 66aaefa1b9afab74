// transport.test.js: bester+tls://, bester+ws:// and bester+wss:// against the daemon's own
// listeners, with certificates made by the openssl command: logins and round trips on each, a
// message large enough for 64-bit WebSocket lengths, pipelining over WebSocket, and a server
// certificate from another CA refused before any credential is sent.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { BesterError, connect } from '../index.js';
import { Broker } from '../testlib/daemon.js';
import { appTables, writeSecrets } from '../testlib/fixtures.js';

function openssl(dir, ...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and a certificate it issued for localhost and 127.0.0.1 (EC P-256 keys, PKCS#8). */
function pki(dir, tag) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', `${tag}-ca.key`, '-out', `${tag}-ca.pem`, '-days', '2', '-subj', `/CN=bester node test CA ${tag}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl(dir, 'req', ...ec, '-keyout', `${tag}-key.pem`, '-out', `${tag}.csr`, '-subj', '/CN=localhost');
  fs.writeFileSync(`${dir}/${tag}.ext`, 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl(dir, 'x509', '-req', '-in', `${tag}.csr`, '-CA', `${tag}-ca.pem`, '-CAkey', `${tag}-ca.key`, '-CAcreateserial', '-out', `${tag}-cert.pem`, '-days', '2', '-extfile', `${tag}.ext`);
  return { ca: fs.readFileSync(`${dir}/${tag}-ca.pem`), cert: `${dir}/${tag}-cert.pem`, key: `${dir}/${tag}-key.pem` };
}

let broker;
let good;
let other;

before(async () => {
  broker = await Broker.start({
    setup: (b) => {
      writeSecrets(b);
      good = pki(b.dir, 'good');
      other = pki(b.dir, 'other');
    },
    tables: (b) => `${appTables(b.dir)}
[[listeners]]
name = "tls"
kind = "tls"
address = "127.0.0.1:0"
cert = ${JSON.stringify(good.cert)}
key = ${JSON.stringify(good.key)}
[[listeners]]
name = "ws"
kind = "ws"
address = "127.0.0.1:0"
[[listeners]]
name = "wss"
kind = "wss"
address = "127.0.0.1:0"
cert = ${JSON.stringify(good.cert)}
key = ${JSON.stringify(good.key)}
`,
  });
});

after(async () => {
  if (broker) await broker.close();
});

for (const [scheme, listener, host] of [
  ['bester+tls', 'tls', '127.0.0.1'],
  ['bester+tls', 'tls', 'localhost'],
  ['bester+ws', 'ws', '127.0.0.1'],
  ['bester+wss', 'wss', '127.0.0.1'],
  ['bester+wss', 'wss', 'localhost'],
]) {
  test(`${scheme}:// to ${host}: login, round trips, 300 KB, 200 pipelined`, async () => {
    const port = broker.listener(listener).split(':').pop();
    const c = await connect(`${scheme}://alice:alice-pw@${host}:${port}`, { ca: good.ca });
    assert.equal(c.user, 'alice');
    assert.deepEqual(await c.request('echo', { text: '€😀' }), { text: '€😀' });
    const big = 'x€'.repeat(100000);
    assert.equal(await c.request('echo', big), big);
    const many = await Promise.all(Array.from({ length: 200 }, (_, i) => c.request('echo', i)));
    assert.deepEqual(many, Array.from({ length: 200 }, (_, i) => i));
    c.close();
  });
}

test('a certificate of another CA is refused before logging in', async () => {
  for (const [scheme, listener] of [['bester+tls', 'tls'], ['bester+wss', 'wss']]) {
    const port = broker.listener(listener).split(':').pop();
    const err = await connect(`${scheme}://alice:alice-pw@127.0.0.1:${port}`, { ca: other.ca, reconnect: false }).catch((e) => e);
    assert.ok(err instanceof BesterError, String(err));
    assert.equal(err.code, 'connection_lost');
    assert.match(err.text, /certificate/i);
  }
  assert.doesNotMatch(broker.log(), /alice-pw/);
});

test('over WebSocket a refused login closes with its code', async () => {
  const port = broker.listener('ws').split(':').pop();
  const err = await connect(`bester+ws://alice:wrong@127.0.0.1:${port}`).catch((e) => e);
  assert.equal(err.code, 'auth_failed');
  assert.equal(err.text, 'invalid username or password');
});
