#!/usr/bin/env node
// upper.js: a besterd handler (type usually "upper") that upper-cases data.text.
//
//   {"text":"hi"}                  -> reply {"text":"HI"} (other fields kept)
//   {"text":"hi","forward":"echo"} -> sendHandler "echo" with {"text":"HI"}: the payload goes on to
//                                     the echo handler, whose answer reaches the client (a chain)
//   text missing or not a string, or a bad forward type -> error "bad_request"
// Run by the broker as `node handlers/node/upper.js` with BESTER_SOCKET and BESTER_TYPE set.
'use strict';

const bester = require('./bester');

// A payload type as the broker accepts it.
const TYPE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

// Pure: one request in, one answer out (tests call it without a socket).
function handle(request) {
  const data = bester.dataOf(request);
  if (data === null || typeof data !== 'object' || Array.isArray(data) || typeof data.text !== 'string') {
    return bester.error(request, 'bad_request', 'data must be an object with a string field "text"');
  }
  const { forward, ...rest } = data;
  const out = { ...rest, text: data.text.toUpperCase() };
  if (forward === undefined) return bester.reply(request, out);
  if (typeof forward !== 'string' || !TYPE_NAME.test(forward)) {
    return bester.error(request, 'bad_request', 'data.forward must be a type name: 1 to 64 of A-Z a-z 0-9 . _ -');
  }
  return bester.sendHandler(request, forward, out);
}

module.exports = { handle };

if (require.main === module) bester.run(handle);
