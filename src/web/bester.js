// bester.js: a besterd client for browsers, over WebSocket. An ES module with no build step:
// `import { BesterClient } from "./bester.js"`. The protocol itself — error codes and their typed
// errors, bester:// URLs, the login state machine, request correlation, redirect checks — is the
// Node package's I/O-free core, clients/node/lib/protocol.js, which besterd serves beside this file
// as ./protocol.js: this module only drives it over a WebSocket.
//
// One WebSocket text message is one besterd frame body (the JSON of protocol/PROTOCOL.md).
//
//   const client = new BesterClient("ws://127.0.0.1:2223/", { username, password });
//   // or { token } (a JWT the application issued, or a resume token), or { resume }
//   await client.connect();                        // resolves with {user, server, resume, …}
//   const reply = await client.send("echo", {hi: 1});  // resolves with the reply's data
//   client.addEventListener("push", (e) => console.log(e.detail.data));
//
// Errors are the typed errors of protocol.js (re-exported here): a BesterError (AuthFailed,
// HandlerUnavailable, …) with `code`, `text` and the server's `frame`.
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

import {
  BesterError,
  Calls,
  Login,
  authentication,
  checkRedirect,
  classify,
  errorFor,
  fromFrame,
  message,
  pushOf,
  redirectTarget,
} from "./protocol.js";

export * from "./protocol.js";

/** Refusals of a resume token after which the given credentials may be tried (same URL only). */
const RESUME_REFUSED = ["resume_refused", "resume_expired", "session_expired", "auth_failed"];

/** The WebSocket URL of a redirect target (a parsed bester+ws:// or bester+wss:// URL), or null. */
function webSocketUrl(url) {
  return url.ws ? `${url.tls ? "wss" : "ws"}://${url.authority}${url.path}` : null;
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
    this.calls = new Calls("m"); // id -> {resolve, reject, type, data}
    this.resend = []; // requests answered with a redirect, sent again after the next login
    this.following = false; // a redirect arrived: the close that follows is not a loss
    this.usedResume = false;
    this.closed = false;
    this.loggedIn = false;
    this.attempt = null; // the Login (protocol.js) of the connection not yet logged in
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
    const { username, password, token } = this;
    try {
      return authentication({ username, password, token });
    } catch (e) {
      return { username, password }; // incomplete: the server refuses it, saying why
    }
  }

  open() {
    const auth = this.authentication();
    if (!auth) {
      return this.fail(errorFor("auth_failed",
        `no token to log in at ${this.url}: the password is only sent to ${this.home}`));
    }
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.attempt = new Login(auth);
    ws.onopen = () => ws.send(JSON.stringify(this.attempt.first()));
    ws.onmessage = (event) => this.frame(ws, event.data);
    ws.onclose = (event) => this.lost(ws, event.code, event.reason);
  }

  /** Give up for good: the login (and every request waiting) is rejected with `error`. */
  fail(error) {
    this.closed = true;
    const login = this.login;
    this.login = null;
    for (const { reject } of [...this.calls.drain(), ...this.resend]) reject(error);
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
    if (!this.loggedIn) return this.loginAnswer(ws, frame);
    const { kind, id } = classify(frame);
    if (kind === "redirect") {
      const waiting = id !== undefined && this.calls.take(id);
      if (!waiting || frame.header.status !== "ok") return; // answers nothing of ours
      this.resend.push(waiting);
      return this.follow(frame);
    }
    if (kind === "reply") {
      const waiting = this.calls.take(id);
      if (!waiting) return; // late, or not ours
      this.hops = 0;
      if (frame.header.status === "ok") waiting.resolve(frame.data);
      else waiting.reject(fromFrame(frame));
      return;
    }
    if (kind === "push") {
      const { type, from, data } = pushOf(frame);
      this.dispatchEvent(new CustomEvent("push", { detail: { type, from, data, header: frame.header } }));
      return;
    }
    // A change of someone this connection watches (bester.presence.subscribe).
    if (frame.header && frame.header.kind === "presence") {
      this.dispatchEvent(new CustomEvent("presence", { detail: frame.data }));
      return;
    }
    // An error without an id (e.g. idle_timeout) comes right before the server closes.
    if (kind === "error") this.dispatchEvent(new CustomEvent("servererror", { detail: fromFrame(frame) }));
  }

  /** The first frames of a connection answer identify (protocol.js's Login decides what they say). */
  loginAnswer(ws, frame) {
    let step;
    try {
      step = this.attempt.step(frame);
    } catch (error) {
      if (this.usedResume && RESUME_REFUSED.includes(error.code) && this.url === this.home) {
        // The resume token is worth nothing now: log in as at first (the server closes).
        this.resume = null;
        this.ws = null;
        ws.close(1000);
        return this.open();
      }
      // A refused login is not retried: the same credentials would be refused again.
      return this.fail(error instanceof BesterError ? error : errorFor("protocol_error", String(error)));
    }
    if (step.kind === "redirect") return this.follow(frame);
    if (step.kind !== "ok") return this.fail(errorFor("protocol_error", `a ${step.kind} a browser cannot answer`));
    const login = this.login;
    this.login = null;
    this.loggedIn = true;
    this.delay = this.minDelay;
    this.redirectToken = null;
    const data = step.data;
    if (typeof data.resume === "string") this.resume = data.resume;
    if (login) login.resolve(data);
    this.dispatchEvent(new CustomEvent("open", { detail: data }));
    const again = this.resend;
    this.resend = [];
    for (const request of again) this.transmit(request);
  }

  /** A redirect: log in at its URL with its token (the server closes this connection). */
  follow(frame) {
    let target;
    let url;
    try {
      const { url: to, token } = redirectTarget(frame);
      url = to;
      const parsed = checkRedirect({ tls: this.url.startsWith("wss:") }, to, token, this.hops);
      target = webSocketUrl(parsed);
      if (!target) throw errorFor("redirect_refused", `cannot follow a redirect to ${to} from a browser`);
      this.redirectToken = token;
    } catch (error) {
      return this.fail(error);
    }
    this.hops += 1;
    this.url = target;
    this.resume = null;
    this.following = true;
    this.dispatchEvent(new CustomEvent("redirect", { detail: { url } }));
  }

  /** Send a message of `type` with `data`; resolves with the reply's data, rejects with a BesterError. */
  send(type, data) {
    if (!this.loggedIn || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(this.closed ? errorFor("closed", "the client is closed") : errorFor("connection_lost", "not connected"));
    }
    return new Promise((resolve, reject) => this.transmit({ resolve, reject, type, data }));
  }

  transmit(request) {
    const id = this.calls.add(request);
    this.ws.send(JSON.stringify(message(id, request.type, request.data)));
  }

  lost(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.loggedIn = false;
    const gone = () => errorFor("connection_lost", "the connection was lost before the reply");
    for (const { reject } of this.calls.drain()) reject(gone());
    if (this.following && !this.closed) {
      // Closed after a redirect: on to the new server at once.
      this.following = false;
      return this.open();
    }
    for (const { reject } of this.resend) reject(gone());
    this.resend = [];
    const willReconnect = this.reconnect && !this.closed;
    const delay = this.delay;
    if (this.login && !willReconnect) {
      this.login.reject(errorFor("connection_lost", `connection closed (${code})`));
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
