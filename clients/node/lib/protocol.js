// protocol.js: the besterd protocol without I/O — frames, error codes, URLs, the login state
// machine and request correlation. It uses only what browsers and Node both have (Uint8Array,
// TextEncoder, TextDecoder, Map), so a page can import it as it is (`import … from
// "./protocol.js"`) and the Node client and handler build on it. No sockets, no clock, no crypto:
// the caller signs key challenges and keeps the time. Spec: protocol/PROTOCOL.md.

/** The broker's default frame limit (`server.max_frame_bytes`): 1 MiB. */
export const MAX_FRAME = 1024 * 1024;
/** Default port of every bester URL scheme. */
export const DEFAULT_PORT = 2222;
/** At most this many redirects in a row are followed. */
export const MAX_REDIRECTS = 3;
const HEADER_LEN = 4;

// ---------------------------------------------------------------------------------------------
// Error codes: every code of PROTOCOL.md §8, then the library's own.
// ---------------------------------------------------------------------------------------------

/** [code, class name, family] for every code. */
const CODES = [
  ['frame_too_large', 'FrameTooLarge', 'FrameError'],
  ['invalid_utf8', 'InvalidUtf8', 'FrameError'],
  ['invalid_json', 'InvalidJson', 'FrameError'],
  ['invalid_message', 'InvalidMessage', 'MessageError'],
  ['unknown_scope', 'UnknownScope', 'MessageError'],
  ['not_identified', 'NotIdentified', 'MessageError'],
  ['already_identified', 'AlreadyIdentified', 'MessageError'],
  ['bad_identify_type', 'BadIdentifyType', 'MessageError'],
  ['auth_failed', 'AuthFailed', 'AuthError'],
  ['identify_timeout', 'IdentifyTimeout', 'AuthError'],
  ['idle_timeout', 'IdleTimeout', 'SessionEnded'],
  ['rate_limited', 'RateLimited', 'AuthError'],
  ['too_many_connections', 'TooManyConnections', 'ServerError'],
  ['unknown_type', 'UnknownType', 'MessageError'],
  ['reserved_type', 'ReservedType', 'MessageError'],
  ['handler_not_running', 'HandlerNotRunning', 'HandlerFailed'],
  ['handler_unavailable', 'HandlerUnavailable', 'HandlerFailed'],
  ['handler_timeout', 'HandlerTimeout', 'HandlerFailed'],
  ['handler_busy', 'HandlerBusy', 'HandlerFailed'],
  ['handler_error', 'HandlerError', 'HandlerFailed'],
  ['bad_handler_reply', 'BadHandlerReply', 'HandlerFailed'],
  ['handler_loop', 'HandlerLoop', 'HandlerFailed'],
  ['chain_too_deep', 'ChainTooDeep', 'HandlerFailed'],
  ['unknown_peer', 'UnknownPeer', 'PeerError'],
  ['peer_unreachable', 'PeerUnreachable', 'PeerError'],
  ['peer_unavailable', 'PeerUnavailable', 'PeerError'],
  ['peer_timeout', 'PeerTimeout', 'PeerError'],
  ['hop_limit', 'HopLimit', 'PeerError'],
  ['forged_origin', 'ForgedOrigin', 'PeerError'],
  ['server_busy', 'ServerBusy', 'ServerError'],
  ['slow_consumer', 'SlowConsumer', 'ServerError'],
  ['shutting_down', 'ShuttingDown', 'SessionEnded'],
  ['session_revoked', 'SessionRevoked', 'SessionEnded'],
  ['kicked', 'Kicked', 'SessionEnded'],
  ['redirected', 'Redirected', 'SessionEnded'],
  ['token_logins_off', 'TokenLoginsOff', 'TokenError'],
  ['token_malformed', 'TokenMalformed', 'TokenError'],
  ['token_unknown_key', 'TokenUnknownKey', 'TokenError'],
  ['token_bad_signature', 'TokenBadSignature', 'TokenError'],
  ['token_expired', 'TokenExpired', 'TokenError'],
  ['token_not_yet_valid', 'TokenNotYetValid', 'TokenError'],
  ['token_wrong_audience', 'TokenWrongAudience', 'TokenError'],
  ['token_wrong_issuer', 'TokenWrongIssuer', 'TokenError'],
  ['resume_expired', 'ResumeExpired', 'ResumeError'],
  ['resume_refused', 'ResumeRefused', 'ResumeError'],
  ['session_expired', 'SessionExpired', 'SessionEnded'],
  ['forbidden', 'Forbidden', 'MessageError'],
  ['limit_reached', 'LimitReached', 'MessageError'],
  ['queue_full', 'QueueFull', 'MessageError'],
  ['store_failed', 'StoreFailed', 'ServerError'],
  ['dial_refused', 'DialRefused', 'MessageError'],
  ['dial_offline', 'DialOffline', 'MessageError'],
  ['dial_timeout', 'DialTimeout', 'MessageError'],
  ['dial_answered', 'DialAnswered', 'MessageError'],
  ['unknown_stream', 'UnknownStream', 'MessageError'],
  ['stream_credit_exceeded', 'StreamCreditExceeded', 'MessageError'],
  ['stream_closed', 'StreamClosed', 'MessageError'],
  ['internal_error', 'InternalError', 'ServerError'],
  // The library's own: never sent by a server.
  ['timeout', 'Timeout', 'ClientError'],
  ['connection_lost', 'ConnectionLost', 'ClientError'],
  ['closed', 'Closed', 'ClientError'],
  ['redirect_refused', 'RedirectRefused', 'ClientError'],
  ['too_many_redirects', 'TooManyRedirects', 'ClientError'],
  ['protocol_error', 'ProtocolError', 'ClientError'],
];

/** Every code by its name in capitals: `ErrorCode.HANDLER_UNAVAILABLE === "handler_unavailable"`. */
export const ErrorCode = Object.freeze(Object.fromEntries(CODES.map(([code]) => [code.toUpperCase(), code])));

/**
 * An error answer (or a failure of the connection): `code` (besterd's stable snake_case code, or
 * a handler's own), `text` (for people) and the whole `frame` when there is one.
 */
export class BesterError extends Error {
  constructor(code, text, frame) {
    super(`${code}: ${text}`);
    this.name = 'BesterError';
    this.code = code;
    this.text = text;
    this.frame = frame;
  }

  /** The error frame's whole `data` (e.g. the `status` of a `handler_error`). */
  get data() {
    return this.frame ? this.frame.data : undefined;
  }
}

function subclass(name, base) {
  // A named class, so stack traces and `err.name` say which.
  const made = {
    [name]: class extends base {
      constructor(code, text, frame) {
        super(code, text, frame);
        this.name = name;
      }
    },
  }[name];
  return made;
}

/** Error families, so a caller can catch "any refused login" or "any handler failure". */
export const FrameError = subclass('FrameError', BesterError);
export const MessageError = subclass('MessageError', BesterError);
export const AuthError = subclass('AuthError', BesterError);
export const TokenError = subclass('TokenError', AuthError);
export const ResumeError = subclass('ResumeError', AuthError);
export const SessionEnded = subclass('SessionEnded', BesterError);
export const HandlerFailed = subclass('HandlerFailed', BesterError);
export const PeerError = subclass('PeerError', BesterError);
export const ServerError = subclass('ServerError', BesterError);
export const ClientError = subclass('ClientError', BesterError);
const FAMILIES = { FrameError, MessageError, AuthError, TokenError, ResumeError, SessionEnded, HandlerFailed, PeerError, ServerError, ClientError };

/** One class per code (`errors.HandlerUnavailable`, …) by class name. */
export const errors = Object.freeze(
  Object.fromEntries(CODES.map(([, name, family]) => [name, subclass(name, FAMILIES[family])])),
);
/** code → class. */
export const ERRORS = Object.freeze(Object.fromEntries(CODES.map(([code, name]) => [code, errors[name]])));

/** The typed error for a code (a handler's own code gives a plain BesterError). */
export function errorFor(code, text, frame) {
  const Class = Object.prototype.hasOwnProperty.call(ERRORS, code) ? ERRORS[code] : BesterError;
  return new Class(code, text, frame);
}

/** The error of an error frame `{"header":{"status":"error",…},"data":{"error","code"}}`. */
export function fromFrame(frame) {
  const data = frame && frame.data;
  if (data && typeof data === 'object' && typeof data.code === 'string') {
    return errorFor(data.code, typeof data.error === 'string' ? data.error : '', frame);
  }
  return errorFor('protocol_error', `an error frame without error data: ${JSON.stringify(frame).slice(0, 200)}`, frame);
}

/** Refusals after which logging in again the same way would be refused again. */
export const FATAL_LOGIN = new Set(
  CODES.map(([c]) => c).filter(
    (c) => c.startsWith('token_') || c.startsWith('resume_') || ['auth_failed', 'rate_limited', 'bad_identify_type', 'not_identified', 'invalid_message'].includes(c),
  ),
);
/** The server ended the session for good: reconnecting would undo what an administrator did. */
export const FINAL = new Set(['session_revoked', 'kicked', 'session_expired']);

// ---------------------------------------------------------------------------------------------
// Frames: u32 little-endian length of the UTF-8 body, then the body (one JSON object).
// ---------------------------------------------------------------------------------------------

const encoder = new TextEncoder();
// fatal: refuse bad UTF-8 instead of replacing it; ignoreBOM: keep a BOM so JSON.parse refuses it.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The UTF-8 body of a value (throws frame_too_large over `maxFrame`). */
export function encodeBody(value, maxFrame = MAX_FRAME) {
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError('cannot encode undefined as a frame');
  const body = encoder.encode(json);
  if (body.length > maxFrame) {
    throw errorFor('frame_too_large', `frame of ${body.length} bytes is over the limit of ${maxFrame} bytes`);
  }
  return body;
}

/** A whole frame: the 4-byte length (of the bytes, not the characters) and the body. */
export function encodeFrame(value, maxFrame = MAX_FRAME) {
  const body = encodeBody(value, maxFrame);
  const frame = new Uint8Array(HEADER_LEN + body.length);
  new DataView(frame.buffer).setUint32(0, body.length, true);
  frame.set(body, HEADER_LEN);
  return frame;
}

/** Parse one frame body (bytes or text) into a JSON value, or throw invalid_utf8 / invalid_json. */
export function decodeBody(body) {
  let text = body;
  if (typeof body !== 'string') {
    try {
      text = decoder.decode(body);
    } catch {
      throw errorFor('invalid_utf8', 'frame body is not valid UTF-8');
    }
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw errorFor('invalid_json', `frame body is not JSON: ${e.message}`);
  }
}

/** Bodies shorter than this are never compressed (as the server does). */
export const COMPRESS_MIN = 256;

/**
 * Whether a frame must never be compressed: anything that is not a message, and the built-in
 * `bester.*` types, which carry passwords (`bester.passwd`), tokens (`bester.refresh`) and other
 * users' credentials. A secret compressed beside text an attacker chose leaks through the sizes
 * (CRIME, BREACH).
 */
export function carriesSecret(frame) {
  const type = frame && frame.payload && frame.payload.type;
  return typeof type !== 'string' || type.startsWith('bester.');
}

/**
 * Incremental frame decoder: `feed(chunk)` with bytes as they arrive returns every whole frame,
 * decoded. Frames may be split across chunks and several may come in one. The declared length is
 * compared with `maxFrame` from the header alone, before the body is kept. After an error the
 * decoder is dead: every later feed throws it again.
 */
export class FrameDecoder {
  constructor(maxFrame = MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.pending = 0; // bytes held (non-zero at EOF: a truncated frame)
    this.error = null;
  }

  feed(chunk) {
    if (this.error) throw this.error;
    if (chunk.length) {
      this.chunks.push(chunk);
      this.pending += chunk.length;
    }
    const frames = [];
    try {
      while (this.pending >= HEADER_LEN) {
        const head = this.peek(HEADER_LEN);
        const length = new DataView(head.buffer, head.byteOffset, HEADER_LEN).getUint32(0, true);
        if (length > this.maxFrame) {
          throw errorFor('frame_too_large', `frame of ${length} bytes is over the limit of ${this.maxFrame} bytes`);
        }
        if (this.pending < HEADER_LEN + length) break;
        const frame = this.take(HEADER_LEN + length);
        frames.push(this.decode(frame.subarray(HEADER_LEN)));
      }
    } catch (e) {
      this.error = e;
      this.chunks = [];
      this.pending = 0;
      throw e;
    }
    return frames;
  }

  /** One whole body as the value `feed` returns (a subclass may keep some bodies as they are). */
  decode(body) {
    return decodeBody(body);
  }

  peek(n) {
    if (this.chunks[0].length < n) {
      const all = new Uint8Array(this.pending);
      let at = 0;
      for (const c of this.chunks) {
        all.set(c, at);
        at += c.length;
      }
      this.chunks = [all];
    }
    return this.chunks[0];
  }

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
// URLs: bester[+tls|+ws|+wss]://[user[:password]@]host[:port][/path]
// ---------------------------------------------------------------------------------------------

const SCHEMES = {
  bester: { tls: false, ws: false },
  'bester+tls': { tls: true, ws: false },
  'bester+ws': { tls: false, ws: true },
  'bester+wss': { tls: true, ws: true },
};

function percentDecode(text, what) {
  try {
    return decodeURIComponent(text);
  } catch {
    throw errorFor('invalid_message', `bad %-escape in the URL's ${what}`);
  }
}

/**
 * Parse a bester URL: `{scheme, host, port, username, password, path, tls, ws, authority}`.
 * Throws a TypeError naming what is wrong (never showing a password).
 */
export function parseUrl(text) {
  if (typeof text !== 'string') throw new TypeError('a bester URL is a string');
  const m = /^([a-z+]+):\/\/([^/?#]*)(\/[^?#]*)?$/.exec(text);
  if (!m || !Object.prototype.hasOwnProperty.call(SCHEMES, m[1])) {
    throw new TypeError(`${JSON.stringify(text.split('://')[0])}: a besterd URL starts with bester://, bester+tls://, bester+ws:// or bester+wss://`);
  }
  const [, scheme, authorityPart, path = '/'] = m;
  let hostPort = authorityPart;
  let username = null;
  let password = null;
  const at = authorityPart.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authorityPart.slice(0, at);
    hostPort = authorityPart.slice(at + 1);
    const colon = userinfo.indexOf(':');
    username = percentDecode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, 'user');
    if (colon >= 0) password = percentDecode(userinfo.slice(colon + 1), 'password');
    if (username === '') username = null;
  }
  let host;
  let portText = null;
  if (hostPort.startsWith('[')) {
    const end = hostPort.indexOf(']');
    if (end < 0) throw new TypeError('the URL has an unclosed [IPv6 address]');
    host = hostPort.slice(1, end);
    const rest = hostPort.slice(end + 1);
    if (rest) {
      if (!rest.startsWith(':')) throw new TypeError('bad port in the URL');
      portText = rest.slice(1);
    }
  } else {
    const colon = hostPort.lastIndexOf(':');
    host = colon >= 0 ? hostPort.slice(0, colon) : hostPort;
    if (colon >= 0) portText = hostPort.slice(colon + 1);
  }
  if (!host) throw new TypeError('the URL needs a host: bester://host:port');
  let port = DEFAULT_PORT;
  if (portText !== null) {
    if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new TypeError(`bad port in the URL: ${JSON.stringify(portText)}`);
    }
    port = Number(portText);
  }
  const { tls, ws } = SCHEMES[scheme];
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return { scheme, host, port, username, password, path, tls, ws, authority };
}

/** A URL for logs and errors: never its password. */
export function showUrl(url) {
  return `${url.scheme}://${url.username ? `${url.username}@` : ''}${url.authority}`;
}

// ---------------------------------------------------------------------------------------------
// Frames a client sends
// ---------------------------------------------------------------------------------------------

/**
 * The identify frame for an authentication object; `features` (PROTOCOL.md §2 "Features and
 * limits") only when there is one to offer, so a client that wants none sends what a spec-v3
 * client sends.
 */
export function identify(authentication, features) {
  const ident = { type: 'client' };
  if (authentication !== undefined && authentication !== null) ident.authentication = authentication;
  if (features && features.length) ident.features = [...features];
  return { header: { identify: ident } };
}

/** A client message. */
export function message(id, type, data) {
  const payload = { type };
  if (data !== undefined) payload.data = data;
  return { header: { scope: 'client', id }, payload };
}

/**
 * The authentication object for the given credentials, in the order the protocol knows them:
 * `{token}` (a JWT or a `v1.` resume token), `{resume}`, `{username, publicKey}` (key login: the
 * caller passes the public key in base64), `{username, password}`; or `custom` as it is (an auth
 * handler's own shape, e.g. `{apiKey}`).
 */
export function authentication({ username, password, token, resume, publicKey, custom } = {}) {
  if (custom !== undefined) return custom;
  if (token !== undefined && token !== null) return { token };
  if (resume !== undefined && resume !== null) return { resume };
  if (publicKey !== undefined && publicKey !== null) {
    if (!username) throw new TypeError('a key login needs a username');
    return { username, publicKey };
  }
  if (username && password !== undefined && password !== null) return { username, password };
  throw new TypeError('no credentials: give {username, password}, {token}, {resume} or {username, key}');
}

/** The bytes a key login signs: "besterd-login-v1" 0 server 0 username 0 nonce. */
export function signedBytes(server, username, nonce) {
  return encoder.encode(`besterd-login-v1\0${server}\0${username}\0${nonce}`);
}

/**
 * One login attempt, as a state machine without I/O. `first()` is the identify frame; feed each
 * frame from the server to `step(frame)`, which returns
 * - `{kind: "ok", data}`: logged in (`data`: user, server, resume, resume_expires, …);
 * - `{kind: "challenge", message, server, nonce}`: sign `message` (Uint8Array) with the key and
 *   send `signature(base64)`; then keep feeding;
 * - `{kind: "redirect", url, token}`: the server sent this login elsewhere;
 * and throws the typed refusal (`AuthFailed`, `TokenExpired`, …).
 */
export class Login {
  constructor(auth, { username, serverName, hasKey = false } = {}) {
    this.auth = auth;
    this.username = username;
    this.serverName = serverName;
    this.hasKey = hasKey;
    this.state = 'identify';
    this.features = []; // offered in identify
  }

  /** How this login is made, for messages (never the secret). */
  get how() {
    return Object.keys(this.auth || {}).filter((k) => k !== 'username').join('+') || 'certificate';
  }

  first() {
    this.state = 'answer';
    return identify(this.auth, this.features);
  }

  signature(base64) {
    this.state = 'signed';
    return { header: { signature: base64 } };
  }

  step(frame) {
    const header = (frame && typeof frame === 'object' && frame.header) || {};
    if (header.status === 'error') throw fromFrame(frame);
    if (header.kind === 'redirect') {
      const { url, token } = redirectTarget(frame);
      return { kind: 'redirect', url, token };
    }
    if (header.status === 'ok' && header.kind === 'challenge' && this.state === 'answer' && this.hasKey) {
      const data = frame.data || {};
      if (typeof data.nonce !== 'string' || typeof data.server !== 'string') {
        throw errorFor('protocol_error', 'a challenge without data.nonce and data.server');
      }
      if (this.serverName !== undefined && this.serverName !== null && data.server !== this.serverName) {
        throw errorFor('auth_failed', `the server says it is ${JSON.stringify(data.server)}, not ${JSON.stringify(this.serverName)}: not signing`);
      }
      this.state = 'challenged';
      return { kind: 'challenge', message: signedBytes(data.server, this.username, data.nonce), server: data.server, nonce: data.nonce };
    }
    if (header.status === 'ok' && (header.kind === 'reply' || header.kind === undefined)) {
      this.state = 'done';
      const data = frame.data && typeof frame.data === 'object' ? frame.data : {};
      return { kind: 'ok', data };
    }
    throw errorFor('protocol_error', `unexpected frame during login: ${JSON.stringify(frame).slice(0, 200)}`);
  }
}

/** `{url, token}` of a redirect frame (`kind: "redirect"`), or protocol_error. */
export function redirectTarget(frame) {
  const data = frame && frame.data;
  if (!data || typeof data !== 'object' || typeof data.url !== 'string') {
    throw errorFor('protocol_error', 'a redirect without data.url');
  }
  return { url: data.url, token: typeof data.token === 'string' ? data.token : null };
}

/**
 * The URL a redirect may be followed to, or the refusal (the texts are `bester`'s): more than
 * MAX_REDIRECTS in a row, no token (the client never sends its password or signs a challenge for
 * a host it was sent to), a URL that is not a bester URL without a user, or from TLS to clear
 * text (the token would travel unencrypted).
 */
export function checkRedirect(current, target, token, hops) {
  if (hops >= MAX_REDIRECTS) throw errorFor('too_many_redirects', `redirected more than ${MAX_REDIRECTS} times`);
  const shown = String(target).slice(0, 512);
  if (!token) throw errorFor('redirect_refused', `redirected to ${shown} without a token`);
  let url;
  try {
    url = parseUrl(target);
  } catch {
    url = null;
  }
  if (!url || url.username !== null || url.password !== null) {
    throw errorFor('redirect_refused', `redirected to ${JSON.stringify(shown)}, which is not a bester:// URL without a user`);
  }
  if (current.tls && !url.tls) {
    throw errorFor('redirect_refused', `redirected from TLS to ${shown}: not sending the token unencrypted`);
  }
  return url;
}

// ---------------------------------------------------------------------------------------------
// Frames from the server, sorted
// ---------------------------------------------------------------------------------------------

/**
 * What a frame from the server is: `"reply"` (answers `id`), `"redirect"` (answers `id` by
 * sending the client elsewhere), `"push"`, `"error"` (an error answering nothing: the server
 * closes next), or `"other"`.
 */
export function classify(frame) {
  const header = frame && typeof frame === 'object' && frame.header && typeof frame.header === 'object' ? frame.header : null;
  if (!header) return { kind: 'other', id: undefined };
  const id = typeof header.id === 'string' ? header.id : undefined;
  if (header.kind === 'redirect') return { kind: 'redirect', id };
  if (header.kind === 'push') return { kind: 'push', id };
  if (id !== undefined && (header.kind === 'reply' || header.kind === undefined)) return { kind: 'reply', id };
  if (header.status === 'error') return { kind: 'error', id };
  return { kind: 'other', id };
}

/** A push as the client hands it out: `{type, data, from, frame}`. */
export function pushOf(frame) {
  const header = frame.header || {};
  const push = { type: header.type, data: frame.data === undefined ? null : frame.data, from: header.from || {}, frame };
  if (typeof header.msg === 'string') {
    push.msg = header.msg;
    push.stored = header.stored === true;
    if (typeof header.time === 'number') push.time = header.time;
  }
  return push;
}

/**
 * Request correlation: ids for outgoing messages and the calls waiting for them. `add(value)`
 * gives a fresh id; `take(id)` removes and returns what waits for it (or undefined: a late or
 * stray reply); `drain()` empties it (the connection is gone).
 */
export class Calls {
  constructor(prefix = '') {
    this.prefix = prefix;
    this.next = 1;
    this.waiting = new Map();
  }

  id() {
    return `${this.prefix}${this.next++}`;
  }

  add(value, id = this.id()) {
    this.waiting.set(id, value);
    return id;
  }

  take(id) {
    const value = this.waiting.get(id);
    if (value !== undefined) this.waiting.delete(id);
    return value;
  }

  get size() {
    return this.waiting.size;
  }

  drain() {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    return all;
  }
}
