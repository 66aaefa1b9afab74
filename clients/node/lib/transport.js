// transport.js: a connection to besterd that carries frame bodies, over TCP, TLS, WebSocket or
// WebSocket over TLS (node:net, node:tls and the RFC 6455 client of ws.js; nothing from npm).
// `open(url, options)` resolves with a Link once the connection (and its TLS and WebSocket
// handshakes) is up. A Link writes values as frames, batching the writes of one tick into one
// socket write (pipelined requests cost one syscall), and emits 'frame' for every value received
// and 'close' (with the error, if any) once.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { COMPRESS_MIN, FrameDecoder, carriesSecret, decodeBody, encodeBody, errorFor, showUrl } from './protocol.js';
import { WebSocketStream } from './ws.js';

/** Largest frame a client accepts: the server's replies wrap data of up to its own limit. */
export const MAX_INCOMING = 16 * 1024 * 1024;

/** Connect to a parsed bester URL. Options: ca, tls (more node:tls options), connectTimeout, maxFrame. */
export function open(url, options = {}) {
  const { connectTimeout = 10000 } = options;
  return new Promise((resolve, reject) => {
    let socket;
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (socket) socket.destroy();
      reject(err instanceof Error && err.code && typeof err.text === 'string' ? err : errorFor('connection_lost', `cannot connect to ${showUrl(url)}: ${err.message || err}`));
    };
    const timer = setTimeout(() => fail(errorFor('timeout', `no connection to ${showUrl(url)} within ${connectTimeout} ms`)), connectTimeout);
    const ready = () => {
      socket.setNoDelay(true);
      if (!url.ws) {
        done(new Link(new StreamSide(socket, options.maxFrame || MAX_INCOMING)));
        return;
      }
      WebSocketStream.handshake(socket, url, { maxMessage: options.maxFrame || MAX_INCOMING }).then(
        (ws) => done(new Link(ws)),
        fail,
      );
    };
    const done = (link) => {
      if (settled) {
        link.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      socket.removeListener('error', fail);
      resolve(link);
    };
    if (url.tls) {
      const tlsOptions = { host: url.host, port: url.port, ...(options.tls || {}) };
      if (options.ca !== undefined) tlsOptions.ca = options.ca;
      if (!net.isIP(url.host)) tlsOptions.servername = url.host;
      socket = tls.connect(tlsOptions, ready);
    } else {
      socket = net.connect({ host: url.host, port: url.port }, ready);
    }
    socket.on('error', fail);
  });
}

/**
 * A compressed frame body (PROTOCOL.md §1.2: 0x00, then raw DEFLATE of the JSON), as read. It is
 * inflated when the frame is handled rather than when it is read, because the identify reply
 * that turns compression on may arrive in one read with compressed frames after it.
 */
class Compressed {
  constructor(body) {
    this.body = body;
  }
}

/** A session's decoder: compressed bodies are kept for `StreamSide.inflate`. */
class SessionDecoder extends FrameDecoder {
  decode(body) {
    return body[0] === 0 ? new Compressed(body) : decodeBody(body);
  }
}

/** Frames as u32 LE length + body, on a stream socket. */
export class StreamSide extends EventEmitter {
  constructor(socket, maxFrame) {
    super();
    this.socket = socket;
    this.maxFrame = maxFrame;
    this.decoder = new SessionDecoder(maxFrame);
    this.compress = false; // the session negotiated "compress" (set by the login)
    this.inflated = 0; // compressed frames received
    this.deflated = 0; // compressed frames sent
    socket.on('data', (chunk) => {
      let frames;
      try {
        frames = this.decoder.feed(chunk);
      } catch (err) {
        this.emit('fail', errorFor('protocol_error', `bad frame from the server: ${err.message}`));
        socket.destroy();
        return;
      }
      for (let f of frames) {
        if (f instanceof Compressed) {
          try {
            f = this.inflate(f.body);
          } catch (err) {
            this.emit('fail', err);
            socket.destroy();
            return;
          }
        }
        this.emit('frame', f);
      }
    });
    socket.on('error', (err) => this.emit('fail', err));
    socket.on('close', () => this.emit('end'));
  }

  /** A compressed body's value: within the frame limit inflated, else frame_too_large. */
  inflate(body) {
    if (!this.compress) {
      throw errorFor('protocol_error', 'a compressed frame on a session that did not negotiate "compress"');
    }
    const stream = body.subarray(1);
    let json;
    try {
      const { buffer, engine } = zlib.inflateRawSync(stream, { maxOutputLength: this.maxFrame, info: true });
      if (engine.bytesWritten !== stream.length) throw new Error('bytes after its end');
      json = buffer;
    } catch (err) {
      if (err.code === 'ERR_BUFFER_TOO_LARGE') {
        throw errorFor('frame_too_large', `compressed frame inflates to over the limit of ${this.maxFrame} bytes`);
      }
      throw errorFor('protocol_error', `compressed frame is not a valid DEFLATE stream: ${err.message}`);
    }
    this.inflated += 1;
    return decodeBody(json);
  }

  /** The body to send for a value's JSON: compressed when that is allowed and pays. */
  pack(body, secret) {
    if (!this.compress || secret || body.length < COMPRESS_MIN) return body;
    const packed = zlib.deflateRawSync(body, { level: 1 });
    if (packed.length + 1 >= body.length) return body;
    const out = Buffer.allocUnsafe(packed.length + 1);
    out[0] = 0;
    packed.copy(out, 1);
    this.deflated += 1;
    return out;
  }

  write(bodies) {
    let total = 0;
    for (const b of bodies) total += 4 + b.length;
    const out = Buffer.allocUnsafe(total);
    let at = 0;
    for (const b of bodies) {
      out.writeUInt32LE(b.length, at);
      out.set(b, at + 4);
      at += 4 + b.length;
    }
    return this.socket.write(out);
  }

  close() {
    this.socket.end();
  }

  destroy() {
    this.socket.destroy();
  }
}

/** One connection: 'frame' (a parsed value), 'close' (error or null), once. */
export class Link extends EventEmitter {
  constructor(side) {
    super();
    this.side = side;
    this.queue = [];
    this.closed = false;
    this.error = null;
    this.lastSent = Date.now();
    this.lastReceived = Date.now();
    side.on('frame', (value) => {
      this.lastReceived = Date.now();
      this.emit('frame', value);
    });
    side.on('fail', (err) => {
      if (!this.error) this.error = err;
    });
    side.on('end', () => {
      if (this.closed) return;
      this.closed = true;
      this.emit('close', this.error);
    });
  }

  /**
   * After the login: whether the server accepted `compress` (only framed sessions can: a
   * WebSocket never gets it).
   */
  compressing(on) {
    if (typeof this.side.pack === 'function') this.side.compress = on;
  }

  /** Queue a value as a frame; the frames of one tick go out in one write. */
  send(value) {
    if (this.closed) throw errorFor('connection_lost', 'the connection is closed');
    const body = encodeBody(value, Number.MAX_SAFE_INTEGER);
    this.queue.push(typeof this.side.pack === 'function' ? this.side.pack(body, carriesSecret(value)) : body);
    this.lastSent = Date.now();
    if (this.queue.length === 1) queueMicrotask(() => this.flush());
  }

  flush() {
    if (!this.queue.length || this.closed) return;
    const bodies = this.queue;
    this.queue = [];
    this.side.write(bodies);
  }

  /** Close after what is queued is written. */
  close() {
    this.flush();
    this.side.close();
  }

  destroy(err) {
    if (err && !this.error) this.error = err;
    this.side.destroy();
  }
}
