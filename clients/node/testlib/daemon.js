// daemon.js: start the real besterd binary for a test — a temporary directory with a config, a
// user store made with `besterd user add`, handler processes written with this package — on an
// ephemeral loopback port, and read its address (and its listeners') from --ready-file. Polls
// with a deadline, never a fixed sleep. BESTERD_BIN names another build (default: the
// repository's target/debug/besterd; build it with `cargo build --bin besterd`).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE = path.resolve(HERE, '..');
export const REPO = path.resolve(PACKAGE, '..', '..');
export const BESTERD = process.env.BESTERD_BIN || path.join(REPO, 'target', 'debug', 'besterd');
export const DEADLINE_MS = 20000;

/** `command = [...]` for a handler script of this package (testlib/handlers, examples). */
export function handler(script) {
  return `command = ["${process.execPath}", ${JSON.stringify(path.join(PACKAGE, script))}]`;
}

/** Poll `check` (returning a truthy value when done) every 20 ms until the deadline. */
export async function until(what, check, deadline = DEADLINE_MS) {
  const end = Date.now() + deadline;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function besterdCmd(args, input) {
  const out = spawnSync(BESTERD, args, { input, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`besterd ${args.join(' ')} failed: ${out.stderr}`);
  return out.stdout;
}

/** A running broker: addr ("127.0.0.1:port"), listener(name), dir, stop(), restart(), log(). */
export class Broker {
  static async start({ name = 'test', tables = '', server = '', users = [['alice', 'alice-pw'], ['bob', 'bob-pw']], setup } = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bester-node-'));
    const b = new Broker(dir);
    for (const [user, password] of users) besterdCmd(['user', '--users', b.users, 'add', user, '--password-stdin'], `${password}\n`);
    if (setup) setup(b);
    const config = `[server]\nname = ${JSON.stringify(name)}\nlisten = "127.0.0.1:0"\nusers = ${JSON.stringify(b.users)}\nruntime_dir = ${JSON.stringify(path.join(dir, 'run'))}\nlogin_failures_per_ip = 1000\nlogin_failures_per_user = 1000\n${server}\n${typeof tables === 'function' ? tables(b) : tables}\n`;
    fs.writeFileSync(path.join(dir, 'besterd.toml'), config);
    await b.launch();
    return b;
  }

  constructor(dir) {
    this.dir = dir;
    this.users = path.join(dir, 'users.json');
    this.child = null;
    this.addr = null;
  }

  path(name) {
    return path.join(this.dir, name);
  }

  async launch() {
    const ready = this.path('ready');
    fs.rmSync(ready, { force: true });
    const logFd = fs.openSync(this.path('besterd.log'), 'a');
    this.child = spawn(BESTERD, ['serve', '--config', this.path('besterd.toml'), '--ready-file', ready], {
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, RUST_LOG: process.env.BESTER_TEST_LOG || 'info' },
    });
    fs.closeSync(logFd);
    let exited = null;
    this.child.once('exit', (code, signal) => {
      exited = { code, signal };
    });
    this.exit = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    const text = await until('the ready file', () => {
      if (exited) throw new Error(`besterd exited (${JSON.stringify(exited)}) before ready:\n${this.log()}`);
      try {
        return fs.readFileSync(ready, 'utf8');
      } catch {
        return null;
      }
    });
    const [first, ...rest] = text.trim().split('\n');
    this.addr = first.trim();
    this.listeners = Object.fromEntries(rest.map((l) => l.trim().split(/\s+/)).map(([n, , a]) => [n, a]));
    // A restart listens where this run did (the ready file lists the listeners in config order).
    const configPath = this.path('besterd.toml');
    let config = fs.readFileSync(configPath, 'utf8').replace('listen = "127.0.0.1:0"', `listen = "${this.addr}"`);
    for (const [, address] of Object.entries(this.listeners)) config = config.replace('address = "127.0.0.1:0"', `address = "${address}"`);
    fs.writeFileSync(configPath, config);
  }

  /** The address of the [[listeners]] entry `name`. */
  listener(name) {
    if (!this.listeners[name]) throw new Error(`no listener ${name} in the ready file`);
    return this.listeners[name];
  }

  log() {
    try {
      return fs.readFileSync(this.path('besterd.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGKILL: the daemon vanishes without closing anything politely. */
  async kill() {
    const child = this.child;
    this.child = null;
    child.kill('SIGKILL');
    return this.exit;
  }

  async stop() {
    if (!this.child) return null;
    const child = this.child;
    this.child = null;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    const status = await this.exit;
    clearTimeout(timer);
    return status;
  }

  /** SIGTERM, then start again with the same config, store and directory. */
  async restart() {
    const status = await this.stop();
    if (status.code !== 0) throw new Error(`besterd did not stop cleanly: ${JSON.stringify(status)}\n${this.log()}`);
    await this.launch();
  }

  async close() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An HS256 JWT (node:crypto), claims as given. */
export async function hs256(secret, claims) {
  const { createHmac } = await import('node:crypto');
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
