// client.js: the Node client of besterd. `connect(url, credentials)` logs in and resolves with a
// Client; `client.request(type, data, {timeout})` resolves with the reply's data or rejects with
// the typed BesterError; requests are pipelined on one connection, each correlated by its id.
// Pushes come as the 'push' event and as an async iterator (`for await (const p of client)`).
// The client keeps the session up: `bester.ping` on a quiet line, a fresh resume token two thirds
// into the life of the last, and after a lost connection a reconnect with backoff that logs in
// with the resume token (and, only at the URL the credentials were given for, with them). A
// redirect answering a request is followed to the new URL with its token alone, at most 3 in a
// row, never from TLS to clear text; the request is then sent again there. A stored push (one
// with `msg`, PROTOCOL.md §4) is handed over once, a copy that comes again dropped (lib/acks.js),
// and acknowledged once taken unless autoAck is false (then client.ack()).

import { EventEmitter } from 'node:events';
import { createPrivateKey, createPublicKey, sign as edSign, KeyObject } from 'node:crypto';
import {
  BesterError,
  Calls,
  FATAL_LOGIN,
  FINAL,
  Login,
  MAX_REDIRECTS,
  authentication,
  checkRedirect,
  classify,
  errorFor,
  fromFrame,
  message,
  parseUrl,
  pushOf,
  redirectTarget,
  showUrl,
} from './protocol.js';
import { open } from './transport.js';
import { MAX_ACK, MAX_SEEN, Seen } from './acks.js';

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An ed25519 private key from a KeyObject, PKCS#8 PEM text, or its 32-byte seed. */
export function loadKey(key) {
  let obj;
  if (key instanceof KeyObject) obj = key;
  else if (typeof key === 'string' || (Buffer.isBuffer(key) && key.includes('-----BEGIN'))) obj = createPrivateKey(key);
  else if (key instanceof Uint8Array && key.length === 32) {
    obj = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, key]), format: 'der', type: 'pkcs8' });
  } else throw new TypeError('key: an ed25519 KeyObject, PKCS#8 PEM, or a 32-byte seed');
  if (obj.type !== 'private' || obj.asymmetricKeyType !== 'ed25519') throw new TypeError('key: not an ed25519 private key');
  return obj;
}

/** The public key of an ed25519 private key, as the protocol names it (base64 of 32 bytes). */
export function publicKeyOf(key) {
  return createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(12).toString('base64');
}

/** What the session needs across connections: who we are, where, and the resume token. */
class Session {
  constructor(home, credentials) {
    this.home = home;
    this.url = home;
    this.credentials = credentials;
    this.user = null;
    this.server = null;
    this.resume = null;
    this.resumeExpires = null;
    this.resumeIssued = 0;
    this.expires = null;
    this.redirectLogin = null; // a {token} login owed to the URL we were redirected to
    this.offer = []; // features offered at every login
    this.features = []; // what the server accepted at the last login (data.features)
    this.limits = {}; // the last login's data.limits
  }

  get atHome() {
    return this.url.scheme === this.home.scheme && this.url.authority === this.home.authority;
  }

  /** The logins to try, in order (see the module comment). */
  logins() {
    if (this.redirectLogin) return [this.redirectLogin];
    const out = [];
    if (this.resume && (this.resumeExpires === null || this.resumeExpires * 1000 > Date.now() + 1000)) {
      out.push(new Login({ resume: this.resume }));
    }
    if (this.atHome) out.push(this.credentials.login());
    return out;
  }

  loggedIn(data) {
    this.redirectLogin = null;
    if (typeof data.user === 'string') this.user = data.user;
    if (typeof data.server === 'string') this.server = data.server;
    if (typeof data.expires === 'number') this.expires = data.expires;
    this.features = Array.isArray(data.features) ? data.features.filter((f) => typeof f === 'string') : [];
    this.limits = data.limits && typeof data.limits === 'object' ? { ...data.limits } : {};
    this.renewed(data);
  }

  renewed(data) {
    if (typeof data.resume === 'string') {
      this.resume = data.resume;
      this.resumeExpires = typeof data.resume_expires === 'number' ? data.resume_expires : null;
      this.resumeIssued = Date.now();
    }
  }

  /** When to ask for a new resume token: two thirds into the life of this one (ms). */
  renewAt() {
    if (!this.resume || !this.resumeExpires) return null;
    return this.resumeIssued + ((this.resumeExpires * 1000 - this.resumeIssued) * 2) / 3;
  }
}

/** The credentials given to connect(), kept for the URL they were given for. */
class Credentials {
  constructor(url, o) {
    this.username = o.username !== undefined ? o.username : url.username;
    this.token = o.token;
    this.resume = o.resume;
    this.key = o.key !== undefined && o.key !== null ? loadKey(o.key) : null;
    this.serverName = o.serverName;
    this.custom = o.authentication;
    const other = this.token != null || this.resume != null || this.key || this.custom !== undefined;
    this.password = o.password !== undefined ? o.password : other ? null : url.password;
    this.login(); // fail now on missing credentials
  }

  login() {
    const publicKey = this.key ? publicKeyOf(this.key) : null;
    const auth = authentication({
      username: this.username,
      password: this.password,
      token: this.token,
      resume: this.resume,
      publicKey,
      custom: this.custom,
    });
    return new Login(auth, { username: this.username, serverName: this.serverName, hasKey: !!this.key });
  }

  toJSON() {
    return { username: this.username }; // never the secrets
  }
}

/** Connect to `url` and log in; resolves with the Client, rejects with the typed refusal. */
export function connect(url, options = {}) {
  return new Client(url, options).connect();
}

/**
 * A client of besterd. Events: 'connect' (logged in, again after a reconnect; the identify
 * reply's data), 'disconnect' (the connection was lost; the error), 'push' (a push), 'redirect'
 * ({from, to}), 'close' (for good; the error, or null after close()), 'ackError' (the server
 * refused an automatic `bester.ack`; the error).
 */
export class Client extends EventEmitter {
  constructor(url, options = {}) {
    super();
    const home = parseUrl(url);
    this.options = {
      timeout: 60000,
      connectTimeout: 10000,
      keepalive: 30000,
      reconnect: true,
      backoff: 100,
      maxBackoff: 10000,
      maxPushes: 10000,
      autoAck: true,
      maxSeen: MAX_SEEN,
      ...options,
    };
    this.seen = new Seen(this.options.maxSeen); // stored pushes' ids handed over, across reconnections
    this.ackScheduled = false;
    this.session = new Session(home, new Credentials(home, options));
    // compress: offered at every login, used where the server accepts it (TCP and TLS).
    if (this.options.compress) this.session.offer = ['compress'];
    this.calls = new Calls('n');
    this.queue = []; // calls waiting for a connection
    this.link = null;
    this.closed = false;
    this.error = null;
    this.delay = this.options.backoff;
    this.timer = null;
    this.pushBuffer = [];
    this.pushWaiters = [];
    this.serverError = null;
    this.follow = null;
    this.renewing = false;
    /** How many times the client has logged in (1 after connect()). */
    this.connections = 0;
    if (options.onPush) this.on('push', options.onPush);
  }

  /** The user logged in as, and the server's name. */
  get user() {
    return this.session.user;
  }

  get server() {
    return this.session.server;
  }

  get connected() {
    return this.link !== null;
  }

  /** The features the server accepted at the last login (`data.features`). */
  get features() {
    return [...this.session.features];
  }

  /** The session's limits the server named at the last login (empty when nothing was offered). */
  get limits() {
    return { ...this.session.limits };
  }

  /** The URL connected to now (without credentials). */
  get url() {
    return showUrl(this.session.url);
  }

  async connect() {
    const { link, data } = await this.establish();
    this.install(link, data);
    const period = Math.max(50, Math.min(this.options.keepalive || 1000, 1000) / 2);
    this.ticker = setInterval(() => this.tick(), period);
    this.ticker.unref();
    return this;
  }

  /** Send a message of `type`; resolves with the reply's data. Options: timeout (ms). */
  request(type, data, { timeout } = {}) {
    return this.call(type, data, timeout, false);
  }

  /** Like request(), resolving with the whole reply frame (header: delivered, offline, …). */
  requestFrame(type, data, { timeout } = {}) {
    return this.call(type, data, timeout, true);
  }

  ping(options) {
    return this.request('bester.ping', null, options);
  }

  whoami(options) {
    return this.request('bester.whoami', null, options);
  }

  /** Log out (the session's resume tokens die) and close. */
  async logout() {
    const data = await this.request('bester.logout', null);
    this.finish(null);
    return data;
  }

  /** Close for good: requests still waiting reject with `closed`. */
  close() {
    this.finish(null);
  }

  /** The next push, or null once the client is closed. */
  nextPush() {
    if (this.pushBuffer.length) return Promise.resolve(this.taken(this.pushBuffer.shift()));
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => this.pushWaiters.push(resolve));
  }

  /**
   * `bester.ack`: the server deletes these stored pushes (Push objects or their `msg` ids);
   * resolves with how many it deleted. With `autoAck: false`, once the work a push started is
   * done; a copy that comes again before is not handed over twice.
   */
  async ack(...msgs) {
    const ids = msgs.map((m) => (m !== null && typeof m === 'object' ? m.msg : m)).filter((m) => m !== undefined);
    for (const id of ids) if (typeof id !== 'string') throw new TypeError('ack(): pushes or message id strings');
    this.seen.acked(ids);
    let acked = 0;
    for (let at = 0; at < ids.length; at += MAX_ACK) {
      const data = await this.request('bester.ack', { msgs: ids.slice(at, at + MAX_ACK) });
      acked += (data && data.acked) || 0;
    }
    return acked;
  }

  /** Pushes as an async iterator; it ends when the client closes. */
  async *pushes() {
    for (;;) {
      const push = await this.nextPush();
      if (push === null) return;
      yield push;
    }
  }

  [Symbol.asyncIterator]() {
    return this.pushes();
  }

  // -- calls ----------------------------------------------------------------------------------

  call(type, data, timeout = this.options.timeout, whole) {
    if (this.closed) return Promise.reject(this.error || errorFor('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      const call = { type, data, resolve, reject, whole, hops: 0, id: null, timer: null };
      if (timeout) {
        call.timer = setTimeout(() => {
          if (call.id !== null) this.calls.take(call.id);
          const i = this.queue.indexOf(call);
          if (i >= 0) this.queue.splice(i, 1);
          reject(errorFor('timeout', `no answer to ${JSON.stringify(type)} within ${timeout} ms`));
        }, timeout);
      }
      if (this.link) this.dispatch(call);
      else this.queue.push(call);
    });
  }

  dispatch(call) {
    call.id = this.calls.add(call);
    try {
      this.link.send(message(call.id, call.type, call.data));
    } catch (err) {
      this.calls.take(call.id);
      this.settle(call, err);
    }
  }

  settle(call, err, value) {
    clearTimeout(call.timer);
    if (err) call.reject(err);
    else call.resolve(value);
  }

  // -- connections ----------------------------------------------------------------------------

  /** Connect and log in by the first login that works, following login redirects. */
  async establish() {
    const logins = this.session.logins();
    if (!logins.length) {
      throw errorFor('closed', `no way to log in at ${showUrl(this.session.url)} again (no resume token, and the credentials are for ${showUrl(this.session.home)})`);
    }
    let hops = 0;
    for (let i = 0; i < logins.length; i++) {
      const login = logins[i];
      const link = await open(this.session.url, this.options);
      let outcome;
      try {
        outcome = await this.runLogin(link, login);
      } catch (err) {
        link.destroy();
        const resumeRefused = err.code === 'resume_expired' || err.code === 'resume_refused';
        if (resumeRefused && login.auth.resume !== undefined && i + 1 < logins.length) {
          this.session.resume = null;
          continue;
        }
        throw err;
      }
      if (outcome.redirect) {
        link.destroy();
        const target = checkRedirect(this.session.url, outcome.redirect.url, outcome.redirect.token, hops++);
        this.emit('redirect', { from: showUrl(this.session.url), to: showUrl(target) });
        this.session.url = target;
        this.session.resume = null;
        logins.splice(i + 1, logins.length, new Login({ token: outcome.redirect.token }));
        continue;
      }
      return { link, data: outcome.data };
    }
    throw errorFor('closed', 'no login left to try');
  }

  /** One login on a fresh link: resolves with {data} or {redirect}; holds frames that follow. */
  runLogin(link, login) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(errorFor('timeout', `no answer to the login within ${this.options.connectTimeout} ms`));
      }, this.options.connectTimeout);
      const cleanup = () => {
        clearTimeout(timer);
        link.removeListener('frame', onFrame);
        link.removeListener('close', onClose);
      };
      const onFrame = (frame) => {
        let step;
        try {
          step = login.step(frame);
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (step.kind === 'challenge') {
          const signature = edSign(null, Buffer.from(step.message), this.session.credentials.key).toString('base64');
          link.send(login.signature(signature));
          return;
        }
        cleanup();
        if (step.kind === 'redirect') {
          resolve({ redirect: step });
          return;
        }
        // Frames after the reply may be compressed: the link must know before it reads them.
        link.compressing(Array.isArray(step.data.features) && step.data.features.includes('compress'));
        link.held = [];
        link.hold = (f) => link.held.push(f);
        link.on('frame', link.hold);
        resolve({ data: step.data });
      };
      const onClose = (err) => {
        cleanup();
        reject(errorFor('connection_lost', `${showUrl(this.session.url)} closed the connection during the login${err ? `: ${err.message}` : ''}`));
      };
      link.on('frame', onFrame);
      link.on('close', onClose);
      login.features = this.session.offer;
      link.send(login.first());
    });
  }

  install(link, data) {
    if (this.closed) {
      link.close();
      return;
    }
    link.removeListener('frame', link.hold);
    this.link = link;
    this.serverError = null;
    this.delay = this.options.backoff;
    this.session.loggedIn(data);
    this.connections += 1;
    link.on('frame', (frame) => this.onFrame(link, frame));
    link.on('close', (err) => this.lost(link, err));
    const queued = this.queue;
    this.queue = [];
    for (const call of queued) this.dispatch(call);
    for (const frame of link.held) this.onFrame(link, frame);
    link.held = null;
    this.flushAcks(); // owed when the last connection went
    this.emit('connect', data);
    if (link.closed) this.lost(link, link.error);
  }

  onFrame(link, frame) {
    if (link !== this.link) return;
    const { kind, id } = classify(frame);
    if (kind === 'reply') {
      const call = this.calls.take(id);
      if (!call) return; // a late answer to a request that timed out
      if (frame.header.status === 'ok') this.settle(call, null, call.whole ? frame : frame.data === undefined ? null : frame.data);
      else this.settle(call, fromFrame(frame));
    } else if (kind === 'redirect') {
      const call = this.calls.take(id);
      if (call) this.follow = { call, frame };
    } else if (kind === 'push') {
      this.deliver(pushOf(frame));
    } else if (kind === 'error') {
      this.serverError = fromFrame(frame); // answers nothing: the server closes next
    }
  }

  deliver(push) {
    if (this.seen.arrived(push.msg) !== 'deliver') {
      // Handed over before: acknowledged again if it was (then owed), else dropped.
      if (this.seen.owed.length) this.scheduleAcks();
      return;
    }
    const listened = this.listenerCount('push') > 0;
    this.emit('push', push);
    if (listened) this.taken(push); // the listeners ran: taken
    const waiter = this.pushWaiters.shift();
    if (waiter) waiter(listened ? push : this.taken(push));
    else {
      this.pushBuffer.push(push);
      if (this.pushBuffer.length > this.options.maxPushes) {
        const dropped = this.pushBuffer.shift(); // oldest dropped
        if (!listened) this.seen.forget(dropped.msg); // never taken: it comes again
      }
    }
  }

  /** The application took `push` (a 'push' listener ran, or the iterator handed it out). */
  taken(push) {
    if (push.msg !== undefined && this.options.autoAck) {
      this.seen.owe(push.msg);
      this.scheduleAcks();
    }
    return push;
  }

  /** One `bester.ack` per turn of the event loop for the pushes taken in it. */
  scheduleAcks() {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      this.flushAcks();
    });
  }

  /**
   * Send the acks owed on the current connection (without one, after the next login). The reply
   * is taken here: a refusal is the 'ackError' event; a lost connection brings the pushes again,
   * to be acknowledged again.
   */
  flushAcks() {
    while (this.link && !this.closed && this.seen.owed.length) {
      const msgs = this.seen.take();
      this.call('bester.ack', { msgs }, this.options.timeout, false).catch((err) => {
        if (err.code !== 'connection_lost' && err.code !== 'closed') this.emit('ackError', err);
      });
    }
  }

  lost(link, err) {
    if (link !== this.link) return;
    this.link = null;
    const why = this.serverError || err;
    const lostError = errorFor(
      'connection_lost',
      `the connection to ${showUrl(this.session.url)} was lost before the reply${why ? ` (${why.message})` : ''}`,
    );
    for (const call of this.calls.drain()) this.settle(call, lostError);
    if (this.closed) return;
    this.emit('disconnect', why || lostError);
    if (this.follow) {
      const { call, frame } = this.follow;
      this.follow = null;
      let target;
      try {
        const { url, token } = redirectTarget(frame);
        target = checkRedirect(this.session.url, url, token, call.hops);
        call.hops += 1;
        this.emit('redirect', { from: showUrl(this.session.url), to: showUrl(target) });
        this.session.url = target;
        this.session.resume = null;
        this.session.redirectLogin = new Login({ token });
      } catch (refusal) {
        this.settle(call, refusal);
        target = null;
      }
      if (target) {
        this.queue.unshift(call);
        this.reconnect(0);
        return;
      }
    }
    if (why instanceof BesterError && FINAL.has(why.code)) {
      this.finish(why);
      return;
    }
    if (!this.options.reconnect) {
      this.finish(why || lostError);
      return;
    }
    this.reconnect(this.delay);
  }

  reconnect(delay) {
    clearTimeout(this.timer);
    const jittered = delay ? delay * (0.5 + Math.random() / 2) : 0;
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.closed) return;
      try {
        const { link, data } = await this.establish();
        this.install(link, data);
      } catch (err) {
        if (this.closed) return;
        const fatal = err instanceof BesterError && (FATAL_LOGIN.has(err.code) || FINAL.has(err.code) || ['closed', 'redirect_refused', 'too_many_redirects'].includes(err.code));
        if (fatal) {
          this.finish(err);
          return;
        }
        this.emit('disconnect', err);
        this.delay = Math.min(this.delay * 2, this.options.maxBackoff);
        this.reconnect(this.delay);
      }
    }, jittered);
  }

  tick() {
    const link = this.link;
    if (!link || this.closed) return;
    const now = Date.now();
    const keepalive = this.options.keepalive;
    if (keepalive && now - link.lastSent >= keepalive) {
      this.request('bester.ping', null, { timeout: keepalive }).catch((err) => {
        if (err.code === 'timeout' && link === this.link) link.destroy(errorFor('timeout', `no answer to a keep-alive ping within ${keepalive} ms`));
      });
    }
    const renewAt = this.session.renewAt();
    if (renewAt !== null && now >= renewAt && !this.renewing) {
      this.renewing = true;
      this.request('bester.token', null)
        .then((data) => this.session.renewed(data || {}))
        .catch(() => {})
        .finally(() => {
          this.renewing = false;
        });
    }
  }

  finish(err) {
    if (this.closed) return;
    this.closed = true;
    this.error = err;
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    const reason = err || errorFor('closed', 'the client is closed');
    for (const call of this.queue.splice(0)) this.settle(call, reason);
    for (const call of this.calls.drain()) this.settle(call, reason);
    for (const waiter of this.pushWaiters.splice(0)) waiter(null);
    const link = this.link;
    this.link = null;
    if (link) link.close();
    this.emit('close', err);
  }
}

export { MAX_REDIRECTS };
