// bester.js: a besterd client for browsers, over WebSocket. An ES module with no dependencies and
// no build step: `import { BesterClient } from "./bester.js"`.
//
// One WebSocket text message is one besterd frame body (the JSON of protocol/PROTOCOL.md).
//
//   const client = new BesterClient("ws://127.0.0.1:2223/", { username, password });
//   await client.connect();                        // resolves with {user, server}
//   const reply = await client.send("echo", {hi: 1});  // resolves with the reply's data
//   client.addEventListener("push", (e) => console.log(e.detail.data));
//
// Events: "open" (logged in; detail {user, server}), "push" (detail {type, from, data, header}),
// "close" (detail {code, reason, willReconnect, delay}).
// After a connection is lost, the client reconnects and logs in again with backoff (250 ms
// doubling to 30 s) unless close() was called or the login itself was refused.

/** An error answered by the server (or a lost connection): `code` is besterd's error code. */
export class BesterError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "BesterError";
    this.code = code;
  }
}

export class BesterClient extends EventTarget {
  constructor(url, { username, password, reconnect = true, minDelay = 250, maxDelay = 30000 } = {}) {
    super();
    this.url = url;
    this.username = username;
    this.password = password;
    this.reconnect = reconnect;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.delay = minDelay;
    this.ws = null;
    this.pending = new Map(); // id -> {resolve, reject}
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

  open() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({
        header: { identify: { type: "client", authentication: { username: this.username, password: this.password } } },
      }));
    };
    ws.onmessage = (event) => this.frame(event.data);
    ws.onclose = (event) => this.lost(ws, event.code, event.reason);
  }

  frame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      return;
    }
    const header = frame.header || {};
    if (!this.loggedIn) {
      // The first frame answers identify.
      const login = this.login;
      this.login = null;
      if (header.status === "ok") {
        this.loggedIn = true;
        this.delay = this.minDelay;
        if (login) login.resolve(frame.data);
        this.dispatchEvent(new CustomEvent("open", { detail: frame.data }));
      } else {
        const data = frame.data || {};
        // A refused login is not retried: the same password would be refused again.
        this.closed = true;
        const error = new BesterError(data.code || "error", data.error || "login refused");
        if (login) login.reject(error);
        this.dispatchEvent(new CustomEvent("loginerror", { detail: error }));
      }
      return;
    }
    if (header.kind === "reply" && header.id !== undefined && this.pending.has(header.id)) {
      const { resolve, reject } = this.pending.get(header.id);
      this.pending.delete(header.id);
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
    // An error without an id (e.g. idle_timeout) comes right before the server closes.
    if (header.status === "error") {
      const data = frame.data || {};
      this.dispatchEvent(new CustomEvent("servererror", { detail: new BesterError(data.code, data.error) }));
    }
  }

  /** Send a message of `type` with `data`; resolves with the reply's data, rejects with a BesterError. */
  send(type, data) {
    if (!this.loggedIn || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new BesterError("not_connected", "not connected"));
    }
    const id = `m${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ header: { scope: "client", id }, payload: { type, data } }));
    });
  }

  lost(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.loggedIn = false;
    for (const { reject } of this.pending.values()) {
      reject(new BesterError("disconnected", "the connection was lost before the reply"));
    }
    this.pending.clear();
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
