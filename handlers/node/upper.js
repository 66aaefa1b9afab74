#!/usr/bin/env node
// upper.js: a besterd handler (type usually "upper") that upper-cases data.text.
//
//   {"text":"hi"}                  -> reply {"text":"HI"} (other fields kept)
//   {"text":"hi","forward":"echo"} -> sendHandler "echo" with {"text":"HI"}: the payload goes on to
//                                     the echo handler, whose answer reaches the client (a chain)
//   text missing or not a string, or a bad forward type -> error "bad_request"
// Run by the broker as `node handlers/node/upper.js` with BESTER_SOCKET and BESTER_TYPE set.
// Written with the Node package (clients/node, `bester-client`), which sits beside it in
// node_modules/bester-client: a link to clients/node in the repository, the installed copy in
// the Debian package.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BesterError, Handler } from 'bester-client';

// A payload type as the broker accepts it.
const TYPE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** One request in, its answer out: the reply's data, or an Answer (tests call it without a socket). */
export function upper(request) {
  const data = request.data;
  if (data === null || typeof data !== 'object' || Array.isArray(data) || typeof data.text !== 'string') {
    throw new BesterError('bad_request', 'data must be an object with a string field "text"');
  }
  const { forward, ...rest } = data;
  const out = { ...rest, text: data.text.toUpperCase() };
  if (forward === undefined) return out;
  if (typeof forward !== 'string' || !TYPE_NAME.test(forward)) {
    throw new BesterError('bad_request', 'data.forward must be a type name: 1 to 64 of A-Z a-z 0-9 . _ -');
  }
  return request.sendHandler(forward, out);
}

/** Serves every type it is sent with upper(). */
export const handler = new Handler().on('*', upper);

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) handler.run();
