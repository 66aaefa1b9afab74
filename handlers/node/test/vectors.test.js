// vectors.test.js: the shared exchange vectors (protocol/vectors/handlers.json) against upper.js's
// pure logic, through bester.respond (the same code path the socket loop uses). The echo and chat
// cases are checked by the Python tests; upper.test.js also runs these cases on the real process.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const bester = require('../bester');
const upper = require('../upper');

const REPO = path.resolve(__dirname, '..', '..', '..');
const VECTORS = JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', 'handlers.json'), 'utf8'));
const KNOWN = ['echo', 'chat', 'upper']; // every handler some language's tests cover

test('every case names a known handler', () => {
  for (const c of VECTORS.cases) assert.ok(KNOWN.includes(c.handler), `${c.name}: ${c.handler}`);
});

const cases = VECTORS.cases.filter((c) => c.handler === 'upper');

test('there are upper cases', () => assert.ok(cases.length > 0));

for (const c of cases) {
  test(`vector: ${c.name}`, () => {
    const out = Buffer.concat(c.requests.map((r) => bester.respond(r, upper.handle)));
    const decoder = new bester.FrameDecoder();
    assert.deepStrictEqual(decoder.feed(out), c.answers);
    assert.strictEqual(decoder.pending, 0);
  });
}
