// declarations.test.js: the TypeScript declarations name what the JavaScript exports. Every export
// of index.js and lib/protocol.js is declared; the error codes of ServerErrorCode and
// ClientErrorCode are the runtime's ERRORS; each class of `errors` is declared with its code and
// family. (test/types/check.ts, compiled with tsc in scripts/test.sh, checks the declarations'
// types; this checks they match the code.)
import test from 'node:test';
import assert from 'node:assert';
import fs from 'node:fs';
import * as index from '../index.js';
import * as protocol from '../lib/protocol.js';

const read = (name) => fs.readFileSync(new URL(`../${name}`, import.meta.url), 'utf8');
const PROTOCOL_DTS = read('lib/protocol.d.ts');
const INDEX_DTS = read('index.d.ts');

/** Names a .d.ts declares: `export declare class|function|const NAME`, `export type NAME`. */
function declared(text) {
  return new Set([...text.matchAll(/^export (?:declare (?:class|function|const)|type|interface) (\w+)/gm)].map((m) => m[1]));
}

/** The string literals of `export type NAME = | 'a' | 'b' …;`. */
function union(text, name) {
  const m = new RegExp(`export type ${name} =([^;]*);`).exec(text);
  assert.ok(m, `no type ${name}`);
  return [...m[1].matchAll(/'([a-z0-9_]+)'/g)].map((x) => x[1]);
}

test('every export of lib/protocol.js is declared in lib/protocol.d.ts', () => {
  const names = declared(PROTOCOL_DTS);
  for (const name of Object.keys(protocol)) assert.ok(names.has(name), `${name} is not declared`);
});

test('every export of index.js is declared in index.d.ts or lib/protocol.d.ts', () => {
  assert.match(INDEX_DTS, /^export \* from '\.\/lib\/protocol\.js';$/m);
  const names = new Set([...declared(INDEX_DTS), ...declared(PROTOCOL_DTS)]);
  for (const name of Object.keys(index)) assert.ok(names.has(name), `${name} is not declared`);
});

test('the declared error codes are the runtime codes', () => {
  const server = union(PROTOCOL_DTS, 'ServerErrorCode');
  const client = union(PROTOCOL_DTS, 'ClientErrorCode');
  assert.deepStrictEqual([...server, ...client].sort(), Object.keys(protocol.ERRORS).sort());
  for (const code of client) assert.ok(new protocol.ERRORS[code](code, '') instanceof protocol.ClientError, code);
  for (const code of server) assert.ok(!(new protocol.ERRORS[code](code, '') instanceof protocol.ClientError), code);
});

test('each error class is declared with its code and family', () => {
  const lines = [...PROTOCOL_DTS.matchAll(/readonly (\w+): new \(code: string, text: string, frame\?: ServerFrame\) => (\w+) & Coded<'([a-z0-9_]+)'>;/g)];
  assert.deepStrictEqual(lines.map((m) => m[1]).sort(), Object.keys(protocol.errors).sort());
  for (const [, name, family, code] of lines) {
    const e = new protocol.errors[name](code, 'text');
    assert.strictEqual(protocol.ERRORS[code], protocol.errors[name], `${name} is the class of ${code}`);
    assert.ok(e instanceof protocol[family], `${name} is a ${family}`);
    assert.strictEqual(Object.getPrototypeOf(protocol.errors[name]), protocol[family], `${name} extends ${family} itself`);
  }
});
