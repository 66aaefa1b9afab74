// vectors.test.js: the shared exchange vectors (protocol/vectors/handlers.json) against upper.js's
// handler in this process, through Handler.respond (what its socket loop writes for each frame).
// The echo and chat cases are checked by the Python tests; upper.test.js also runs these cases on
// the real process.
import test from 'node:test';
import assert from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { handler } from '../upper.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const VECTORS = JSON.parse(fs.readFileSync(path.join(REPO, 'protocol', 'vectors', 'handlers.json'), 'utf8'));
const KNOWN = ['echo', 'chat', 'upper']; // every handler some language's tests cover

test('every case names a known handler', () => {
  for (const c of VECTORS.cases) assert.ok(KNOWN.includes(c.handler), `${c.name}: ${c.handler}`);
});

const cases = VECTORS.cases.filter((c) => c.handler === 'upper');

test('there are upper cases', () => assert.ok(cases.length > 0));

for (const c of cases) {
  test(`vector: ${c.name}`, async () => {
    const answers = [];
    for (const r of c.requests) {
      const frame = await handler.respond(r);
      if (frame) answers.push(frame);
    }
    assert.deepStrictEqual(answers, c.answers);
  });
}
