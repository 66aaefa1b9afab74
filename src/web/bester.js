// bester.js: a besterd client for browsers, over WebSocket. An ES module with no dependencies and
// no build step: `import { BesterClient } from "./bester.js"`.
//
// One WebSocket text message is one besterd frame body (the JSON of protocol/PROTOCOL.md).
//
//   const client = new BesterClient("ws://127.0.0.1:2223/", { username, password });
//   // or { token } (a JWT the application issued, or a resume token), or { resume }
//   await client.connect();                        // resolves with {user, server, resume, …}
//   const reply = await client.send("echo", {hi: 1});  // resolves with the reply's data
//   client.addEventListener("push", (e) => console.log(e.detail.data));
//
// Events: "open" (logged in; detail {user, server, …}), "push" (detail {type, from, data, header}),
// "presence" (detail {user, server, state, connections, status?, group?, member?}),
// "redirect" (detail {url}: a handler sent the client to another server), "close" (detail {code,
// reason, willReconnect, delay}).
// After a connection is lost, the client reconnects with backoff (250 ms doubling to 30 s) unless
// close() was called or the login itself was refused. It logs in again with the resume token of
// its last login (no password check at the server); only if that is refused, and only at the URL
// it was given, with the password (or token) it was given.
//
// Redirects (PROTOCOL.md §6): a request answered with a redirect is sent again at the new URL
// after logging in there with the redirect's token, and its promise resolves with that answer.
// At most 3 redirects in a row; the password is never sent to a server it was redirected to (a
// redirect without a token fails), nor does a redirect leave TLS (wss: to ws:). Requests the
// server answered `redirected` (in flight when it redirected) reject with that code.

/** An error answered by the server (or a lost connection): `code` is besterd's error code. */
export class BesterError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "BesterError";
    this.code = code;
  }
}

/** Most redirects followed in a row. */
const MAX_HOPS = 3;

/** Refusals of a resume token after which the given credentials may be tried (same URL only). */
const RESUME_REFUSED = ["resume_refused", "resume_expired", "session_expired", "auth_failed"];

/** The WebSocket URL of a redirect's bester+ws:// or bester+wss:// URL, or null. */
function webSocketUrl(url) {
  for (const [scheme, ws] of [["bester+ws://", "ws://"], ["bester+wss://", "wss://"]]) {
    if (typeof url === "string" && url.startsWith(scheme) && url.length > scheme.length) {
      const rest = url.slice(scheme.length);
      if (rest.includes("@")) return null;
      return ws + (rest.includes("/") ? rest : `${rest}/`);
    }
  }
  return null;
}

export class BesterClient extends EventTarget {
  constructor(url, {
    username, password, token, resume, reconnect = true, minDelay = 250, maxDelay = 30000,
  } = {}) {
    super();
    this.url = url;
    this.home = url; // the URL the credentials below may be sent to
    this.username = username;
    this.password = password;
    this.token = token;
    this.resume = resume || null; // the resume token of the last login
    this.redirectToken = null; // the token a redirect gave, for the next login
    this.hops = 0;
    this.reconnect = reconnect;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.delay = minDelay;
    this.ws = null;
    this.pending = new Map(); // id -> {resolve, reject, type, data}
    this.resend = []; // requests answered with a redirect, sent again after the next login
    this.following = false; // a redirect arrived: the close that follows is not a loss
    this.usedResume = false;
    this.nextId = 1;
    this.closed = false;
    this.loggedIn = false;
    this.login = null; // {resolve, reject} while identify is unanswered
    this.timer = null;
  }

  /** Open the connection and log in. Resolves with {user, server}; rejects with a BesterError. */
  connect() {
    this.closed = false;
    return new Promise((resolve, reject) => {
      this.login = { resolve, reject };
      this.open();
    });
  }

  /** What to log in with: a redirect's token, the last resume token, else what we were given. */
  authentication() {
    this.usedResume = false;
    if (this.redirectToken) return { token: this.redirectToken };
    if (this.resume) {
      this.usedResume = true;
      return { resume: this.resume };
    }
    if (this.url !== this.home) return null; // never the password for another server
    if (this.token) return { token: this.token };
    return { username: this.username, password: this.password };
  }

  open() {
    const authentication = this.authentication();
    if (!authentication) {
      return this.fail(new BesterError("auth_failed",
        `no token to log in at ${this.url}: the password is only sent to ${this.home}`));
    }
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ header: { identify: { type: "client", authentication } } }));
    };
    ws.onmessage = (event) => this.frame(ws, event.data);
    ws.onclose = (event) => this.lost(ws, event.code, event.reason);
  }

  /** Give up for good: the login (and every request waiting) is rejected with `error`. */
  fail(error) {
    this.closed = true;
    const login = this.login;
    this.login = null;
    for (const { reject } of [...this.pending.values(), ...this.resend]) reject(error);
    this.pending.clear();
    this.resend = [];
    if (login) login.reject(error);
    this.dispatchEvent(new CustomEvent("loginerror", { detail: error }));
    if (this.ws) this.ws.close(1000);
  }

  frame(ws, text) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      return;
    }
    const header = frame.header || {};
    if (header.kind === "redirect" && header.status === "ok") {
      const waiting = header.id !== undefined && this.pending.get(header.id);
      if (waiting) {
        this.pending.delete(header.id);
        this.resend.push(waiting);
      }
      if (this.loggedIn && !waiting) return; // answers nothing of ours
      return this.follow(frame.data || {});
    }
    if (!this.loggedIn) {
      // The first frame answers identify.
      if (header.status === "ok") {
        const login = this.login;
        this.login = null;
        this.loggedIn = true;
        this.delay = this.minDelay;
        this.redirectToken = null;
        const data = frame.data || {};
        if (typeof data.resume === "string") this.resume = data.resume;
        if (login) login.resolve(data);
        this.dispatchEvent(new CustomEvent("open", { detail: data }));
        const again = this.resend;
        this.resend = [];
        for (const request of again) this.transmit(request);
        return;
      }
      const data = frame.data || {};
      const error = new BesterError(data.code || "error", data.error || "login refused");
      if (this.usedResume && RESUME_REFUSED.includes(data.code) && this.url === this.home) {
        // The resume token is worth nothing now: log in as at first (the server closes).
        this.resume = null;
        this.ws = null;
        ws.close(1000);
        return this.open();
      }
      // A refused login is not retried: the same credentials would be refused again.
      return this.fail(error);
    }
    if (header.kind === "reply" && header.id !== undefined && this.pending.has(header.id)) {
      const { resolve, reject } = this.pending.get(header.id);
      this.pending.delete(header.id);
      this.hops = 0;
      if (header.status === "ok") {
        resolve(frame.data);
      } else {
        const data = frame.data || {};
        reject(new BesterError(data.code || "error", data.error || "error"));
      }
      return;
    }
    if (header.kind === "push") {
      this.dispatchEvent(new CustomEvent("push", {
        detail: { type: header.type, from: header.from, data: frame.data, header },
      }));
      return;
    }
    // A change of someone this connection watches (bester.presence.subscribe).
    if (header.kind === "presence") {
      this.dispatchEvent(new CustomEvent("presence", { detail: frame.data }));
      return;
    }
    // An error without an id (e.g. idle_timeout) comes right before the server closes.
    if (header.status === "error") {
      const data = frame.data || {};
      this.dispatchEvent(new CustomEvent("servererror", { detail: new BesterError(data.code, data.error) }));
    }
  }

  /** A redirect: log in at its URL with its token (the server closes this connection). */
  follow({ url, token }) {
    this.hops += 1;
    const target = webSocketUrl(url);
    let error = null;
    if (this.hops > MAX_HOPS) {
      error = new BesterError("redirect_loop", `redirected more than ${MAX_HOPS} times`);
    } else if (!target) {
      error = new BesterError("bad_redirect", `cannot follow a redirect to ${url} from a browser`);
    } else if (typeof token !== "string" || !token) {
      error = new BesterError("bad_redirect", `redirected to ${url} without a token`);
    } else if (this.url.startsWith("wss:") && !target.startsWith("wss:")) {
      error = new BesterError("bad_redirect", `redirected from TLS to ${url}: not sending the token unencrypted`);
    }
    if (error) return this.fail(error);
    this.url = target;
    this.redirectToken = token;
    this.resume = null;
    this.following = true;
    this.dispatchEvent(new CustomEvent("redirect", { detail: { url } }));
  }

  /** Send a message of `type` with `data`; resolves with the reply's data, rejects with a BesterError. */
  send(type, data) {
    if (!this.loggedIn || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new BesterError("not_connected", "not connected"));
    }
    return new Promise((resolve, reject) => this.transmit({ resolve, reject, type, data }));
  }

  transmit(request) {
    const id = `m${this.nextId++}`;
    this.pending.set(id, request);
    this.ws.send(JSON.stringify({ header: { scope: "client", id }, payload: { type: request.type, data: request.data } }));
  }

  lost(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.loggedIn = false;
    for (const { reject } of this.pending.values()) {
      reject(new BesterError("disconnected", "the connection was lost before the reply"));
    }
    this.pending.clear();
    if (this.following && !this.closed) {
      // Closed after a redirect: on to the new server at once.
      this.following = false;
      return this.open();
    }
    for (const { reject } of this.resend) {
      reject(new BesterError("disconnected", "the connection was lost before the reply"));
    }
    this.resend = [];
    const willReconnect = this.reconnect && !this.closed;
    const delay = this.delay;
    if (this.login && !willReconnect) {
      this.login.reject(new BesterError("disconnected", `connection closed (${code})`));
      this.login = null;
    }
    this.dispatchEvent(new CustomEvent("close", { detail: { code, reason, willReconnect, delay } }));
    if (willReconnect) {
      this.delay = Math.min(this.delay * 2, this.maxDelay);
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.closed) this.open();
      }, delay);
    }
  }

  /** Close for good (no reconnect). */
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }
}
