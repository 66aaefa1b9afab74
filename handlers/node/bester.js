// bester.js: a small library for writing besterd handlers in Node (built-in modules only).
//
// A handler is a process the broker starts with BESTER_SOCKET (a Unix stream socket the broker
// listens on) and BESTER_TYPE (the payload type it serves). It connects (connected = ready),
// reads requests and writes answers. Every frame is a 4-byte little-endian length, then that
// many bytes of UTF-8 JSON (one object). When the broker closes the socket we exit with status 0.
//
//   const bester = require('./bester');
//   bester.run((request) => bester.reply(request, bester.dataOf(request)));
//
// handle(request) returns an answer object, an array of frames, null (send nothing), or a
// Promise of one of those (answers may then go out in any order). Full spec: protocol/PROTOCOL.md.
'use strict';

const net = require('node:net');

// The broker rejects frames with a body over 1 MiB; so do we, in both directions.
const MAX_FRAME = 1024 * 1024;
const HEADER_LEN = 4;

// The stream cannot be decoded (or a frame cannot be encoded). `code` is a stable string:
// "frame_too_large", "invalid_json" or "invalid_utf8".
class FrameError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'FrameError';
    this.code = code;
  }
}

// Serialize `obj` as UTF-8 JSON and prefix it with its length.
function encodeFrame(obj, maxFrame = MAX_FRAME) {
  const json = JSON.stringify(obj);
  if (json === undefined) throw new TypeError('cannot encode undefined as a frame');
  const body = Buffer.from(json, 'utf8');
  if (body.length > maxFrame) {
    throw new FrameError('frame_too_large', `frame of ${body.length} bytes is over the limit of ${maxFrame} bytes`);
  }
  const header = Buffer.alloc(HEADER_LEN);
  header.writeUInt32LE(body.length, 0);
  return Buffer.concat([header, body]);
}

// fatal: reject bad UTF-8 instead of replacing it; ignoreBOM: keep a BOM so JSON.parse rejects it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// Parse one frame body (a Buffer) into a JSON value, or throw FrameError.
function decodeBody(body) {
  let text;
  try {
    text = utf8.decode(body);
  } catch {
    throw new FrameError('invalid_utf8', 'frame body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FrameError('invalid_json', `frame body is not JSON: ${e.message}`);
  }
}

// Incremental decoder: feed(chunk) with bytes as they arrive, get back every whole frame decoded.
// Handles frames split across reads and several frames in one read. The declared length is
// checked against maxFrame as soon as the header is in, before the body is buffered. After a
// FrameError the stream is unusable: every later feed() throws the same error, and frames decoded
// earlier in the failing call are dropped (the connection is being closed anyway).
class FrameDecoder {
  constructor(maxFrame = MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.chunks = []; // received bytes not yet decoded, kept as a list to avoid re-copying
    this.pending = 0; // their total length (non-zero at EOF = truncated frame)
    this.error = null;
  }

  feed(chunk) {
    if (this.error) throw this.error;
    this.chunks.push(chunk);
    this.pending += chunk.length;
    const frames = [];
    try {
      while (this.pending >= HEADER_LEN) {
        const length = this.peek(HEADER_LEN).readUInt32LE(0);
        if (length > this.maxFrame) {
          throw new FrameError('frame_too_large', `frame of ${length} bytes is over the limit of ${this.maxFrame} bytes`);
        }
        if (this.pending < HEADER_LEN + length) break; // the rest has not arrived yet
        const frame = this.take(HEADER_LEN + length);
        frames.push(decodeBody(frame.subarray(HEADER_LEN)));
      }
    } catch (e) {
      this.error = e;
      this.chunks = [];
      this.pending = 0;
      throw e;
    }
    return frames;
  }

  // Join buffered chunks until the first one holds at least n bytes; return it.
  peek(n) {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }

  // Remove and return the first n buffered bytes.
  take(n) {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.pending -= n;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading requests
// ---------------------------------------------------------------------------------------------

const typeOf = (request) => request.payload.type;
// Missing and null data are the same.
const dataOf = (request) => (request.payload.data === undefined ? null : request.payload.data);
const senderOf = (request) => (request.header.from && request.header.from.user) || null;
// An auth handler's logins: header.kind "login"; their data is the client's authentication object.
const isLogin = (request) => request.header.kind === 'login';
// A login's client address ("ip:port"), or null.
const addressOf = (request) => (request.header.from && request.header.from.address) || null;
// The session's authorisation data (header.from.info, given at login), or null.
const infoOf = (request) => (request.header.from && request.header.from.info) || null;

// ---------------------------------------------------------------------------------------------
// Building answers (handler -> broker). The broker rejects unknown header/payload fields.
// ---------------------------------------------------------------------------------------------

function answer(request, command, commandData, type, data, status = 'ok') {
  const header = { status, command, request: request.header.request };
  if (commandData !== undefined) header.commandData = commandData;
  return { header, payload: { type, data } };
}

// Answer only the sender. The type defaults to the request's type.
const reply = (request, data, type = typeOf(request)) => answer(request, 'reply', undefined, type, data);

// Accept a login as `user`; `info` (an object, at most 4 KiB as JSON) reaches every handler as
// header.from.info on the session's requests.
const loginOk = (request, user, info) => reply(request, info === undefined ? { user } : { user, info });

// Answer the sender with an error: code is stable snake_case, text is for people.
const error = (request, code, text) =>
  answer(request, 'reply', undefined, typeOf(request), { error: text, code }, 'error');

// Answer by delivering the payload to these users of this server.
const sendClients = (request, users, data, type = typeOf(request)) =>
  answer(request, 'sendClients', [...users], type, data);

// Answer by passing the payload on to the handler of `type`; its answer is routed in turn.
const sendHandler = (request, type, data) => answer(request, 'sendHandler', type, type, data);

const REDIRECT_SCHEMES = ['bester://', 'bester+tls://', 'bester+ws://', 'bester+wss://'];

// Answer by sending the client to another server (PROTOCOL.md §6, "Redirects"): it is told `url`
// (a bester[+tls|+ws|+wss]:// URI with no user in it, at most 512 bytes) and `token`, what it logs
// in with there: a token of your own (at most 8 KiB), 'mint' for a resume token the broker signs
// for the client's session (the target shares its [auth] token_secret_file), or nothing; then the
// broker closes the client's connection. Checked here as the broker checks it (throws TypeError).
function redirect(request, url, token) {
  if (typeof url !== 'string' || !REDIRECT_SCHEMES.some((s) => url.startsWith(s))) {
    throw new TypeError('a redirect url must be a bester://, bester+tls://, bester+ws:// or bester+wss:// URI');
  }
  if (Buffer.byteLength(url) > 512) throw new TypeError('a redirect url is at most 512 bytes');
  const commandData = { url };
  if (token !== undefined && token !== null) {
    if (typeof token !== 'string' || token.length === 0 || Buffer.byteLength(token) > 8192) {
      throw new TypeError('a redirect token is a string of 1 to 8192 bytes');
    }
    commandData.token = token;
  }
  return { header: { status: 'ok', command: 'redirect', commandData, request: request.header.request } };
}

// A message to users that answers no request; the broker replies with a report echoing `id`.
function push(users, type, data, id) {
  const header = { status: 'ok', command: 'sendClients', commandData: [...users] };
  if (id !== undefined) header.id = id;
  return { header, payload: { type, data } };
}

// ---------------------------------------------------------------------------------------------
// The connection loop
// ---------------------------------------------------------------------------------------------

// Log to stderr only, as "<type>[<pid>] LEVEL message". BESTER_LOG=debug shows reports.
const logName = `${process.env.BESTER_TYPE || 'handler'}[${process.pid}]`;
const debugOn = (process.env.BESTER_LOG || '').toLowerCase() === 'debug';
const log = {
  debug: (msg) => debugOn && console.error(`${logName} DEBUG ${msg}`),
  info: (msg) => console.error(`${logName} INFO ${msg}`),
  warn: (msg) => console.error(`${logName} WARNING ${msg}`),
  error: (msg) => console.error(`${logName} ERROR ${msg}`),
};

// Encode what handle() returned: an answer, an array of frames, or nothing.
function encodeAnswers(result) {
  if (result === null || result === undefined) return Buffer.alloc(0);
  const frames = Array.isArray(result) ? result : [result];
  return Buffer.concat(frames.map((f) => encodeFrame(f)));
}

// A handler that threw (or answered something unencodable) answers internal_error instead.
function failure(request, err) {
  log.error(`request ${request.header.request} failed: ${err && err.stack ? err.stack : err}`);
  try {
    const text = `the ${typeOf(request)} handler failed: ${(err && err.name) || 'Error'}`;
    return encodeFrame(error(request, 'internal_error', text));
  } catch {
    return Buffer.alloc(0); // the request itself is malformed: nothing sensible to answer
  }
}

// The bytes to write back for one frame from the broker (pure: no socket): a Buffer, or a
// Promise of one when handle() is async. A request goes to handle(); its answers are encoded, and
// a throw (or an answer that cannot be encoded) becomes an "internal_error" answer. A report is
// logged, never answered.
function respond(msg, handle) {
  const header = msg && typeof msg === 'object' ? msg.header : undefined;
  const kind = header && typeof header === 'object' ? header.kind : undefined;
  if (kind === 'report') {
    // Reports follow our pushes, or a frame the broker rejected.
    (header.status === 'ok' ? log.debug : log.warn)(`report: ${JSON.stringify(msg)}`);
    return Buffer.alloc(0);
  }
  if (kind !== 'request' && kind !== 'login') {
    log.warn(`ignoring a frame that is neither request, login nor report: ${JSON.stringify(msg).slice(0, 200)}`);
    return Buffer.alloc(0);
  }
  try {
    const result = handle(msg);
    if (result && typeof result.then === 'function') {
      return Promise.resolve(result).then(encodeAnswers).catch((err) => failure(msg, err));
    }
    return encodeAnswers(result);
  } catch (err) {
    return failure(msg, err);
  }
}

// Connect to $BESTER_SOCKET and serve `handle` until the broker closes the socket (exit 0).
// Exits 2 if BESTER_SOCKET is unset, 1 if it cannot connect or the broker sends a bad frame.
function run(handle, path = process.env.BESTER_SOCKET) {
  if (!path) {
    log.error('BESTER_SOCKET is not set: handlers are started by besterd');
    process.exit(2);
  }
  const decoder = new FrameDecoder();
  let connected = false;
  const sock = net.createConnection(path);

  // Write, and stop reading while the socket's write buffer is full (back-pressure).
  let draining = false;
  const write = (bytes) => {
    if (bytes.length === 0 || sock.destroyed) return;
    if (!sock.write(bytes) && !draining) {
      draining = true;
      sock.pause();
      sock.once('drain', () => {
        draining = false;
        sock.resume();
      });
    }
  };

  sock.on('connect', () => {
    connected = true;
    log.info(`connected to ${path}`);
  });
  sock.on('data', (chunk) => {
    let messages;
    try {
      messages = decoder.feed(chunk);
    } catch (err) {
      log.error(`bad frame from the broker, closing: ${err.message}`);
      sock.destroy();
      process.exit(1);
    }
    for (const msg of messages) {
      const out = respond(msg, handle);
      if (Buffer.isBuffer(out)) write(out); // written at once, so answers keep the request order
      else out.then(write); // an async handler: its answer goes out whenever it is ready
    }
  });
  sock.on('error', (err) => {
    if (!connected) {
      log.error(`cannot connect to ${path}: ${err.message}`);
      process.exit(1);
    }
    log.info(`socket error: ${err.message}`); // 'close' follows
  });
  sock.on('close', () => {
    if (!connected) return;
    if (decoder.pending) log.warn(`socket closed in the middle of a frame (${decoder.pending} bytes)`);
    log.info('broker closed the socket; exiting');
    process.exit(0);
  });
  return sock;
}

module.exports = {
  MAX_FRAME,
  FrameError,
  FrameDecoder,
  encodeFrame,
  decodeBody,
  respond,
  typeOf,
  dataOf,
  senderOf,
  isLogin,
  addressOf,
  infoOf,
  reply,
  loginOk,
  error,
  sendClients,
  sendHandler,
  redirect,
  push,
  run,
  log,
};
