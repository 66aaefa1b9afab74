// handler.js: besterd handlers in Node — a function per request type, served concurrently.
//
//   import { Handler } from 'bester-client';
//   const handler = new Handler();
//   handler.on('echo', (request) => request.data);   // a plain value is the reply's data
//   handler.run();                                     // $BESTER_SOCKET; exits 0 when besterd closes it
//
// A function gets a Request and returns (or resolves with) a value (the reply's data) or an
// Answer (`request.reply(data)`, `request.error(code, text)`, `request.sendClients(users, data)`,
// `request.sendServers(servers, data)`, `request.sendHandler(type, data)`,
// `request.redirect(url, token)`), or throws a BesterError (an error answer with its code and
// text); anything else thrown is answered `internal_error` and logged. Async functions run
// concurrently: answers go out as they are ready. `handler.push(users, type, data)` sends a
// message that answers no request and resolves with the broker's Report. `handler.login(fn)`
// serves the `kind:"login"` requests of an auth handler. `new Handler({listen: true})` is for
// `connect = "/path"`: the handler listens on $BESTER_SOCKET and besterd dials it per request.
// Logs go to stderr only. Spec: protocol/PROTOCOL.md §6.

import net from 'node:net';
import fs from 'node:fs';
import { BesterError, FrameDecoder, MAX_FRAME, encodeFrame } from './protocol.js';

const REDIRECT_SCHEMES = ['bester://', 'bester+tls://', 'bester+ws://', 'bester+wss://'];

/** A frame for the broker; the request token is filled in when it is sent. */
export class Answer {
  constructor(frame) {
    this.frame = frame;
  }
}

function answer(command, commandData, type, data, status = 'ok') {
  const header = { status, command };
  if (commandData !== undefined) header.commandData = commandData;
  return new Answer({ header, payload: { type, data: data === undefined ? null : data } });
}

/** A request from the broker: type, data, user, server, info, scope, via, token, raw. */
export class Request {
  constructor(raw) {
    const header = raw.header || {};
    const payload = raw.payload || {};
    this.raw = raw;
    this.token = header.request;
    this.type = payload.type;
    this.data = payload.data === undefined ? null : payload.data;
    this.scope = header.scope || 'client';
    this.from = header.from || {};
    this.via = header.via || [];
  }

  get user() {
    return this.from.user || null;
  }

  get server() {
    return this.from.server || null;
  }

  /** The session's authorisation data (a token's `info` claim, or an auth handler's), or null. */
  get info() {
    return this.from.info || null;
  }

  /** Answer the sender only. */
  reply(data, type = this.type) {
    return answer('reply', undefined, type, data);
  }

  /** An error answer: `code` stable snake_case, `text` for people. */
  error(code, text) {
    return answer('reply', undefined, this.type, { error: text, code }, 'error');
  }

  /** Deliver the payload to these users (the sender's reply says who got it). */
  sendClients(users, data, type = this.type) {
    return answer('sendClients', [...users], type, data);
  }

  /** Deliver the payload to these peer servers. */
  sendServers(servers, data, type = this.type) {
    return answer('sendServers', [...servers], type, data);
  }

  /** Pass the payload on to the handler of `type`; its answer is routed in turn. */
  sendHandler(type, data) {
    return answer('sendHandler', type, type, data);
  }

  /**
   * Send the client to another server (`url`: a bester URL without a user, ≤ 512 bytes) to log
   * in there with `token` (yours, ≤ 8 KiB; "mint" for a resume token the broker signs for the
   * session; or none). The broker then closes the client's connection. Throws TypeError for
   * what the broker would refuse.
   */
  redirect(url, token) {
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
    return new Answer({ header: { status: 'ok', command: 'redirect', commandData } });
  }
}

/** A login for an auth handler: authentication (what the client sent), address, listener, transport. */
export class LoginRequest {
  constructor(raw) {
    const header = raw.header || {};
    const from = header.from || {};
    const data = (raw.payload || {}).data;
    this.raw = raw;
    this.token = header.request;
    this.type = (raw.payload || {}).type || 'bester.login';
    this.authentication = data && typeof data === 'object' && !Array.isArray(data) ? data : {};
    this.address = from.address || null;
    this.listener = from.listener || null;
    this.transport = from.transport || null;
  }

  /** Accept as `user`; `info` (an object ≤ 4 KiB as JSON) reaches handlers as from.info. */
  accept(user, info) {
    return answer('reply', undefined, this.type, info === undefined ? { user } : { user, info });
  }

  /** Refuse: the client gets this code and text, then the broker closes its connection. */
  refuse(code, text) {
    return answer('reply', undefined, this.type, { error: text, code }, 'error');
  }

  toJSON() {
    return { request: this.token, address: this.address, fields: Object.keys(this.authentication).sort() }; // never the credentials
  }
}

/** The broker's report on a push: status, delivered, offline, servers; code and text for an error. */
export class Report {
  constructor(frame) {
    const h = frame.header || {};
    const data = frame.data && typeof frame.data === 'object' ? frame.data : {};
    this.status = h.status;
    this.delivered = h.delivered || [];
    this.offline = h.offline || [];
    this.servers = h.servers || {};
    this.code = data.code || null;
    this.text = data.error || null;
    this.frame = frame;
  }
}

const name = `${process.env.BESTER_TYPE || 'handler'}[${process.pid}]`;
const debugOn = (process.env.BESTER_LOG || '').toLowerCase() === 'debug';
/** Logs to stderr as "<type>[<pid>] LEVEL message" (BESTER_LOG=debug shows reports). */
export const log = {
  debug: (msg) => debugOn && console.error(`${name} DEBUG ${msg}`),
  info: (msg) => console.error(`${name} INFO ${msg}`),
  warn: (msg) => console.error(`${name} WARNING ${msg}`),
  error: (msg) => console.error(`${name} ERROR ${msg}`),
};

/** Serves request types for besterd; see the module comment. */
export class Handler {
  constructor({ path, listen = false, maxFrame = MAX_FRAME, exitOnClose = true } = {}) {
    this.path = path;
    this.listen = listen;
    this.maxFrame = maxFrame;
    this.exitOnClose = exitOnClose;
    this.routes = new Map();
    this.fallback = null;
    this.loginFn = null;
    this.socket = null;
    this.pushIds = 0;
    this.reports = new Map();
  }

  /** Serve `type` with `fn` (`'*'`: every type not registered otherwise). */
  on(type, fn) {
    if (type === '*' || type === null) this.fallback = fn;
    else this.routes.set(type, fn);
    return this;
  }

  /** Serve the auth handler's `kind:"login"` requests: fn(LoginRequest) returns a user name,
   * `{user, info}`, or an Answer (`login.accept`/`login.refuse`); throwing a BesterError refuses. */
  login(fn) {
    this.loginFn = fn;
    return this;
  }

  /** Push to users (no request answered); resolves with the broker's Report. */
  push(users, type, data) {
    return this.pushFrame('sendClients', [...users], type, data);
  }

  /** Push to peer servers; resolves with the Report (its `servers`). */
  pushServers(servers, type, data) {
    return this.pushFrame('sendServers', [...servers], type, data);
  }

  pushFrame(command, commandData, type, data) {
    if (!this.socket || this.socket.destroyed) return Promise.reject(new BesterError('connection_lost', 'not connected to the broker'));
    const id = `push-${++this.pushIds}`;
    return new Promise((resolve) => {
      this.reports.set(id, resolve);
      this.socket.write(encodeFrame({ header: { status: 'ok', command, commandData, id }, payload: { type, data: data === undefined ? null : data } }, this.maxFrame));
    });
  }

  /** The answer frame for one frame from the broker, or null (reports, strays). Never throws. */
  async respond(msg) {
    const header = msg && typeof msg === 'object' && msg.header && typeof msg.header === 'object' ? msg.header : {};
    if (header.kind === 'report') {
      const resolve = typeof header.id === 'string' ? this.reports.get(header.id) : undefined;
      if (resolve) {
        this.reports.delete(header.id);
        resolve(new Report(msg));
      } else (header.status === 'ok' ? log.debug : log.warn)(`report: ${JSON.stringify(msg).slice(0, 500)}`);
      return null;
    }
    if (header.kind !== 'request' && header.kind !== 'login') {
      log.warn(`ignoring a frame that is neither request, login nor report: ${JSON.stringify(msg).slice(0, 200)}`);
      return null;
    }
    const token = header.request;
    const isLogin = header.kind === 'login';
    const request = isLogin ? new LoginRequest(msg) : new Request(msg);
    let result;
    try {
      if (isLogin) {
        if (!this.loginFn) throw new BesterError('internal_error', 'this handler serves no logins');
        result = await this.loginFn(request);
        if (typeof result === 'string') result = request.accept(result);
        else if (result && !(result instanceof Answer) && typeof result === 'object') result = request.accept(result.user, result.info);
      } else {
        const fn = this.routes.get(request.type) || this.fallback;
        if (!fn) throw new BesterError('unknown_type', `this handler does not serve ${JSON.stringify(request.type)}`);
        result = await fn(request);
      }
    } catch (err) {
      if (err instanceof BesterError) result = (isLogin ? request.refuse : request.error).call(request, err.code, err.text);
      else {
        log.error(`request ${token} failed: ${err && err.stack ? err.stack : err}`);
        result = answer('reply', undefined, request.type, { error: `the ${request.type} handler failed: ${(err && err.name) || 'Error'}`, code: 'internal_error' }, 'error');
      }
    }
    const frame = result instanceof Answer ? result.frame : request.reply(result).frame;
    return { ...frame, header: { ...frame.header, request: token } };
  }

  encode(frame) {
    try {
      return encodeFrame(frame, this.maxFrame);
    } catch (err) {
      log.error(`answer to request ${frame.header.request} cannot be sent: ${err.message}`);
      const header = { status: 'error', command: 'reply', request: frame.header.request };
      const type = frame.payload ? frame.payload.type : 'error';
      return encodeFrame({ header, payload: { type, data: { error: `the ${type} handler's answer is too large`, code: 'internal_error' } } });
    }
  }

  /** Serve until the broker closes the socket; then exit 0 (or resolve, with exitOnClose false). */
  run() {
    const path = this.path || process.env.BESTER_SOCKET;
    if (!path) {
      log.error('BESTER_SOCKET is not set: handlers are started by besterd');
      process.exit(2);
    }
    return this.listen ? this.serveDialled(path) : this.serveSocket(path);
  }

  serveSocket(path) {
    return new Promise((resolve) => {
      const decoder = new FrameDecoder(this.maxFrame);
      let connected = false;
      const sock = net.createConnection(path);
      this.socket = sock;
      const write = (bytes) => {
        if (!sock.destroyed && !sock.write(bytes) && !sock.isPaused()) {
          sock.pause(); // back-pressure: read no more requests until the answers drain
          sock.once('drain', () => sock.resume());
        }
      };
      sock.on('connect', () => {
        connected = true;
        log.info(`connected to ${path}`);
      });
      sock.on('data', (chunk) => {
        let frames;
        try {
          frames = decoder.feed(chunk);
        } catch (err) {
          log.error(`bad frame from the broker, closing: ${err.message}`);
          sock.destroy();
          process.exit(1);
        }
        for (const msg of frames) {
          this.respond(msg).then((frame) => frame && write(this.encode(frame)));
        }
      });
      sock.on('error', (err) => {
        if (!connected) {
          log.error(`cannot connect to ${path}: ${err.message}`);
          process.exit(1);
        }
        log.info(`socket error: ${err.message}`);
      });
      sock.on('close', () => {
        if (!connected) return;
        for (const resolveReport of this.reports.values()) resolveReport(new Report({ header: { status: 'error' }, data: { code: 'connection_lost', error: 'the broker closed the socket' } }));
        this.reports.clear();
        log.info('broker closed the socket; exiting');
        if (this.exitOnClose) process.exit(0);
        resolve();
      });
    });
  }

  // connect = "/path": listen there; besterd connects per request, sends it, reads one answer.
  serveDialled(path) {
    return new Promise((resolve, reject) => {
      try {
        const st = fs.lstatSync(path);
        // Only a stale socket of our own user is replaced; anything else is not ours to remove.
        if (!st.isSocket() || st.uid !== process.getuid()) {
          reject(new Error(`${path} exists and is not a socket of ours: not replacing it`));
          return;
        }
        fs.unlinkSync(path);
      } catch (err) {
        if (err.code !== 'ENOENT') {
          reject(err);
          return;
        }
      }
      const server = net.createServer((conn) => {
        const decoder = new FrameDecoder(this.maxFrame);
        conn.on('data', (chunk) => {
          let frames;
          try {
            frames = decoder.feed(chunk);
          } catch (err) {
            log.warn(`bad frame from the broker: ${err.message}`);
            conn.destroy();
            return;
          }
          for (const msg of frames) this.respond(msg).then((frame) => frame && !conn.destroyed && conn.write(this.encode(frame)));
        });
        conn.on('error', () => {});
      });
      const oldMask = process.umask(0o177); // the socket is created 0600
      server.listen(path, () => {
        process.umask(oldMask);
        log.info(`listening on ${path}`);
      });
      server.on('error', (err) => {
        process.umask(oldMask);
        reject(err);
      });
      const stop = () => {
        server.close();
        try {
          fs.unlinkSync(path);
        } catch {
          /* already gone */
        }
        if (this.exitOnClose) process.exit(0);
        resolve();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      this.server = server;
    });
  }
}
