#!/usr/bin/env node
// order.js: a handler written from the original bester spec, for the broker's integration tests
// (configured with correlate = "order"). It never sends a `request` token: the broker keeps one
// request in flight per connection, so the next answer is the reply. It answers with the original
// forms: status "0" for success, numeric statuses for errors, the {"type","data"} command object.
//
// payload.data decides what it does:
//   {"action":"echo", ...}          -> status "0", data {"pid": <pid>, "got": <data>}
//   {"action":"delay","ms":N, ...}  -> the same, after N ms
//   {"action":"status","status":S} -> status S (a numeric string), data "failed"
//   {"action":"send","users":[..]}  -> command {"type":"sendClients","data":users}, data as given
//   {"action":"malformed"}          -> an answer whose status is not a status
// A request arriving while another is unanswered is logged as "OVERLAP" (the broker must not do
// that) and answered with status "9".
'use strict';
const net = require('net');

const socket = net.createConnection(process.env.BESTER_SOCKET);
let buffer = Buffer.alloc(0);
let busy = false;

function send(frame) {
  const body = Buffer.from(JSON.stringify(frame), 'utf8'); // the prefix counts bytes, not chars
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length, 0);
  socket.write(Buffer.concat([head, body]));
}

function answer(type, status, data, command) {
  const header = { status };
  if (command) header.command = command;
  send({ header, payload: { type, data } });
  busy = false;
}

function handle(request) {
  if (request.header.kind !== 'request') return; // reports need no answer
  const type = request.payload.type;
  const data = request.payload.data || {};
  if (busy) {
    process.stderr.write(`order.js ${process.pid}: OVERLAP\n`);
    send({ header: { status: '9' }, payload: { type, data: 'overlap' } });
    return;
  }
  busy = true;
  switch (data.action) {
    case 'echo':
      return answer(type, '0', { pid: process.pid, got: data });
    case 'delay':
      return setTimeout(() => answer(type, '0', { pid: process.pid, got: data }), data.ms);
    case 'status':
      return answer(type, data.status, 'failed');
    case 'send':
      return answer(type, '0', data, { type: 'sendClients', data: data.users });
    case 'malformed':
      return answer(type, 'maybe', null);
    default:
      return answer(type, '1', 'unknown action');
  }
}

socket.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const length = buffer.readUInt32LE(0);
    if (buffer.length < 4 + length) break;
    const body = buffer.subarray(4, 4 + length).toString('utf8');
    buffer = buffer.subarray(4 + length);
    handle(JSON.parse(body));
  }
});
socket.on('end', () => process.exit(0));
socket.on('error', (e) => {
  process.stderr.write(`order.js: ${e.message}\n`);
  process.exit(1);
});
