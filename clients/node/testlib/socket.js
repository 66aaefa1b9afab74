// socket.js: play the broker's side of a handler socket — listen on a fresh Unix socket, start a
// handler process with BESTER_SOCKET pointing at it, and exchange frames with it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FrameDecoder, encodeFrame } from '../index.js';
import { PACKAGE, until } from './daemon.js';

export class FakeBroker {
  static async start(script, env = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bester-node-sock-'));
    const sock = path.join(dir, 'h.sock');
    const fb = new FakeBroker(dir);
    const server = net.createServer((conn) => fb.accept(conn));
    await new Promise((r) => server.listen(sock, r));
    fb.server = server;
    fb.stderr = '';
    fb.child = spawn(process.execPath, [path.join(PACKAGE, script)], {
      env: { ...process.env, BESTER_SOCKET: sock, BESTER_TYPE: env.BESTER_TYPE || 'echo', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    fb.child.stderr.on('data', (d) => {
      fb.stderr += d;
    });
    fb.exit = new Promise((resolve) => fb.child.once('exit', (code, signal) => resolve({ code, signal })));
    await until('the handler to connect', () => fb.conn);
    return fb;
  }

  constructor(dir) {
    this.dir = dir;
    this.conn = null;
    this.frames = [];
    this.decoder = new FrameDecoder();
  }

  accept(conn) {
    this.conn = conn;
    conn.on('data', (chunk) => this.frames.push(...this.decoder.feed(chunk)));
    conn.on('error', () => {});
  }

  send(...values) {
    this.conn.write(Buffer.concat(values.map((v) => encodeFrame(v))));
  }

  /** Wait for `n` frames in all; returns them. */
  async read(n) {
    await until(`${n} frames from the handler`, () => this.frames.length >= n);
    return this.frames.slice(0, n);
  }

  /** Close the socket (EOF to the handler) and wait for it to exit. */
  async eof() {
    this.conn.end();
    const status = await this.exit;
    this.server.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    return status;
  }
}
