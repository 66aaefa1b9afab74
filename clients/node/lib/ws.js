// ws.js: a small RFC 6455 WebSocket client over a connected node:net or node:tls socket, enough
// for besterd: the opening handshake (key, Sec-WebSocket-Accept checked), masked text frames out,
// text and binary messages in (fragments reassembled up to a bound), ping answered with pong,
// close answered and ended. One message is one frame body (PROTOCOL.md §1.1). No npm dependency.

import { EventEmitter } from 'node:events';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { decodeBody, errorFor, showUrl } from './protocol.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_RESPONSE_HEAD = 16 * 1024;
const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** The WebSocket side of a Link: emits 'frame' (a parsed body), 'fail' (an error), 'end'. */
export class WebSocketStream extends EventEmitter {
  /** Run the opening handshake on `socket`; resolves with the stream once the server said 101. */
  static handshake(socket, url, { maxMessage, origin } = {}) {
    return new Promise((resolve, reject) => {
      const key = randomBytes(16).toString('base64');
      const lines = [
        `GET ${url.path || '/'} HTTP/1.1`,
        `Host: ${url.authority}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
      ];
      if (origin) lines.push(`Origin: ${origin}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      let head = Buffer.alloc(0);
      const onData = (chunk) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > MAX_RESPONSE_HEAD) fail(`the WebSocket answer's head is over ${MAX_RESPONSE_HEAD} bytes`);
          return;
        }
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        const text = head.subarray(0, end).toString('latin1');
        const [status, ...headerLines] = text.split('\r\n');
        if (!/^HTTP\/1\.1 101 /.test(status)) {
          const body = head.subarray(end + 4).toString('utf8').slice(0, 200).trim();
          fail(`WebSocket upgrade refused: ${status}${body ? ` (${body})` : ''}`);
          return;
        }
        const headers = {};
        for (const line of headerLines) {
          const colon = line.indexOf(':');
          if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        const expected = createHash('sha1').update(key + GUID).digest('base64');
        if (headers['sec-websocket-accept'] !== expected) {
          fail('WebSocket upgrade answered with a wrong Sec-WebSocket-Accept');
          return;
        }
        // Bytes after the head are kept in order and read once the caller has its listeners on.
        const ws = new WebSocketStream(socket, maxMessage, head.subarray(end + 4));
        resolve(ws);
      };
      const onClose = () => fail(`${showUrl(url)} closed the connection during the WebSocket upgrade`);
      const fail = (why) => {
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        socket.destroy();
        reject(errorFor('connection_lost', why));
      };
      socket.on('data', onData);
      socket.on('close', onClose);
    });
  }

  constructor(socket, maxMessage = 16 * 1024 * 1024, early = Buffer.alloc(0)) {
    super();
    this.socket = socket;
    this.maxMessage = maxMessage;
    this.buffer = early;
    if (early.length) setImmediate(() => this.onData(Buffer.alloc(0)));
    this.fragments = null; // {opcode, parts, size} while a fragmented message is arriving
    this.closeSent = false;
    this.closeCode = null;
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.emit('fail', err));
    socket.on('close', () => this.emit('end'));
  }

  onData(chunk) {
    if (chunk.length) this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    try {
      for (;;) {
        const frame = this.parseFrame();
        if (!frame) break;
        this.onFrame(frame);
        if (this.socket.destroyed) return;
      }
    } catch (err) {
      this.emit('fail', err);
      this.closeWith(1002);
      this.socket.destroy();
    }
  }

  // One frame off the buffer, or null when it has not all arrived.
  parseFrame() {
    const b = this.buffer;
    if (b.length < 2) return null;
    const fin = (b[0] & 0x80) !== 0;
    if (b[0] & 0x70) throw errorFor('protocol_error', 'a WebSocket frame with reserved bits set');
    const opcode = b[0] & 0x0f;
    if (b[1] & 0x80) throw errorFor('protocol_error', 'a masked WebSocket frame from the server');
    let length = b[1] & 0x7f;
    let at = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = b.readUInt16BE(2);
      at = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      const high = b.readUInt32BE(2);
      if (high > 0x1fffff) throw errorFor('frame_too_large', 'a WebSocket frame over 2^53 bytes');
      length = high * 2 ** 32 + b.readUInt32BE(6);
      at = 10;
    }
    const total = (this.fragments ? this.fragments.size : 0) + length;
    if (opcode < 8 && total > this.maxMessage) {
      throw errorFor('frame_too_large', `a WebSocket message of over ${this.maxMessage} bytes from the server`);
    }
    if (opcode >= 8 && (length > 125 || !fin)) throw errorFor('protocol_error', 'a bad WebSocket control frame');
    if (b.length < at + length) return null;
    const payload = b.subarray(at, at + length);
    this.buffer = b.subarray(at + length);
    return { fin, opcode, payload };
  }

  onFrame({ fin, opcode, payload }) {
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
        if (this.fragments) throw errorFor('protocol_error', 'a new WebSocket message inside a fragmented one');
        if (fin) this.message(payload);
        else this.fragments = { parts: [Buffer.from(payload)], size: payload.length };
        return;
      case OP_CONT:
        if (!this.fragments) throw errorFor('protocol_error', 'a WebSocket continuation without a message');
        this.fragments.parts.push(Buffer.from(payload));
        this.fragments.size += payload.length;
        if (fin) {
          const whole = Buffer.concat(this.fragments.parts);
          this.fragments = null;
          this.message(whole);
        }
        return;
      case OP_PING:
        this.sendFrame(OP_PONG, payload);
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
        if (this.closeCode !== 1000 && this.closeCode !== 1005) {
          this.emit('fail', errorFor('connection_lost', `the server closed the WebSocket with ${this.closeCode}${reason ? ` (${reason})` : ''}`));
        }
        this.closeWith(this.closeCode === 1005 ? 1000 : this.closeCode);
        this.socket.end();
        return;
      }
      default:
        throw errorFor('protocol_error', `a WebSocket frame of unknown opcode ${opcode}`);
    }
  }

  message(payload) {
    let value;
    try {
      value = decodeBody(payload);
    } catch (err) {
      this.emit('fail', errorFor('protocol_error', `bad message from the server: ${err.message}`));
      this.closeWith(1007);
      this.socket.destroy();
      return;
    }
    this.emit('frame', value);
  }

  // A masked frame, as a client must send (RFC 6455 §5.3).
  encodeFrame(opcode, payload) {
    const length = payload.length;
    const headLen = length < 126 ? 2 : length < 65536 ? 4 : 10;
    const out = Buffer.allocUnsafe(headLen + 4 + length);
    out[0] = 0x80 | opcode;
    if (length < 126) {
      out[1] = 0x80 | length;
    } else if (length < 65536) {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(length, 2);
    } else {
      out[1] = 0x80 | 127;
      out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
      out.writeUInt32BE(length >>> 0, 6);
    }
    const mask = out.subarray(headLen, headLen + 4);
    randomFillSync(mask);
    for (let i = 0; i < length; i++) out[headLen + 4 + i] = payload[i] ^ mask[i & 3];
    return out;
  }

  sendFrame(opcode, payload) {
    if (this.socket.destroyed || this.closeSent) return true;
    return this.socket.write(this.encodeFrame(opcode, payload));
  }

  closeWith(code) {
    if (this.closeSent || this.socket.destroyed) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code, 0);
    this.socket.write(this.encodeFrame(OP_CLOSE, payload));
    this.closeSent = true;
  }

  /** Each body one text message, all in one socket write. */
  write(bodies) {
    if (this.socket.destroyed || this.closeSent) return true;
    const frames = bodies.map((b) => this.encodeFrame(OP_TEXT, b));
    return this.socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  }

  /** Close politely (1000), then end the socket. */
  close() {
    this.closeWith(1000);
    this.socket.end();
  }

  destroy() {
    this.socket.destroy();
  }
}
