// Node client → broker → Node handler, request-reply round trips per second, side by side:
//
// - bester-client  the client of clients/node → besterd → a handler of clients/node
// - nats           NATS's official Node client (`nc.request`) → nats-server → a `nats` responder
//                  (`msg.respond`), in its own process as the besterd handler is
//
// at window 1 (one request in flight) and window 64, a fresh server and handler per measurement,
// BENCH_RUNS (3) runs of BENCH_SECS (3) seconds each after a 0.5 s warm-up, medians. Every reply
// is checked (its payload is the request's). CPU is user + system time per 1,000 round trips of
// the client (this process), the handler process and the broker (from /proc).
//
//   node benches/node/bench.mjs          (scripts/bench.sh node)
//
// BESTERD_BIN (default target/release/besterd), NATS_SERVER (default nats-server on the PATH),
// NATS_MODULES (where `nats` is installed; default target/bench/node), BENCH_SYSTEMS
// (bester-client,nats) and BENCH_WINDOWS (1,64) narrow it down. Prints a Markdown table and a
// final JSON line.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { connect } = await import(path.join(REPO, 'clients', 'node', 'index.js'));
const SECS = Number(process.env.BENCH_SECS || 3);
const RUNS = Number(process.env.BENCH_RUNS || 3);
const WARMUP = 0.5;
const SYSTEMS = (process.env.BENCH_SYSTEMS || 'bester-client,nats').split(',');
const WINDOWS = (process.env.BENCH_WINDOWS || '1,64').split(',').map(Number);
const TICKS = 100; // USER_HZ, what /proc/PID/stat counts in on Linux
const NATS_MODULES = process.env.NATS_MODULES || path.join(REPO, 'target', 'bench', 'node');

const HANDLER = `
import { Handler } from ${JSON.stringify(path.join(REPO, 'clients', 'node', 'index.js'))};
new Handler().on('bench', (request) => request.data).run();
`;

const NATS_RESPONDER = `
const { connect } = require(${JSON.stringify(createRequire(path.join(NATS_MODULES, 'package.json')).resolve('nats'))});
(async () => {
  const nc = await connect({ servers: process.argv[2], user: 'bench', pass: 'bench-pw' });
  const sub = nc.subscribe('bench');
  await nc.flush();
  require('node:fs').writeFileSync(process.argv[3], 'ready');
  for await (const m of sub) m.respond(m.data);
})();
`;

/** user + system time of a process, in seconds (0 if it is gone). */
function cpu(pid) {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(/\s+/);
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return 0;
  }
}

async function waitFor(what, check, deadline = 20000) {
  const end = Date.now() + deadline;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function exited(child) {
  return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
}

class Besterd {
  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bester-bench-'));
    const binary = process.env.BESTERD_BIN || path.join(REPO, 'target', 'release', 'besterd');
    fs.writeFileSync(path.join(this.dir, 'handler.mjs'), HANDLER);
    const users = path.join(this.dir, 'users.json');
    execFileSync(binary, ['user', '--users', users, 'add', 'bench', '--password-stdin'], { input: 'bench-pw\n', stdio: ['pipe', 'ignore', 'ignore'] });
    fs.writeFileSync(
      path.join(this.dir, 'b.toml'),
      `[server]\nname = "bench"\nlisten = "127.0.0.1:0"\nusers = ${JSON.stringify(users)}\nruntime_dir = ${JSON.stringify(path.join(this.dir, 'run'))}\n` +
        `[handlers.bench]\ncommand = [${JSON.stringify(process.execPath)}, ${JSON.stringify(path.join(this.dir, 'handler.mjs'))}]\n`,
    );
    const ready = path.join(this.dir, 'ready');
    this.proc = spawn(binary, ['serve', '--config', path.join(this.dir, 'b.toml'), '--ready-file', ready], { env: { ...process.env, RUST_LOG: 'warn' }, stdio: 'ignore' });
    await waitFor('besterd', () => fs.existsSync(ready) && fs.readFileSync(ready, 'utf8').endsWith('\n'));
    this.url = `bester://bench:bench-pw@${fs.readFileSync(ready, 'utf8').split('\n')[0].trim()}`;
    this.handlerPid = Number(execFileSync('pgrep', ['-P', String(this.proc.pid)], { encoding: 'utf8' }).split('\n')[0]);
    return this;
  }

  async close() {
    this.proc.kill('SIGTERM');
    await exited(this.proc);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

class Nats {
  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nats-bench-'));
    const port = await freePort();
    const binary = process.env.NATS_SERVER || '/usr/sbin/nats-server';
    this.proc = spawn(binary, ['-a', '127.0.0.1', '-p', String(port), '--user', 'bench', '--pass', 'bench-pw'], { stdio: 'ignore' });
    this.url = `nats://127.0.0.1:${port}`;
    await waitFor('nats-server', () => new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    }));
    fs.writeFileSync(path.join(this.dir, 'responder.cjs'), NATS_RESPONDER);
    const ready = path.join(this.dir, 'ready');
    this.handler = spawn(process.execPath, [path.join(this.dir, 'responder.cjs'), this.url, ready], { stdio: 'inherit' });
    await waitFor('the NATS responder', () => fs.existsSync(ready));
    this.handlerPid = this.handler.pid;
    return this;
  }

  async close() {
    this.handler.kill('SIGKILL');
    await exited(this.handler);
    this.proc.kill('SIGTERM');
    await exited(this.proc);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const payload = (n) => ({ n, pad: 'x'.repeat(80) });

async function client(system, url) {
  if (system === 'nats') {
    const nats = createRequire(path.join(NATS_MODULES, 'package.json'))('nats');
    const nc = await nats.connect({ servers: url, user: 'bench', pass: 'bench-pw' });
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    return {
      request: async (n) => {
        const msg = await nc.request('bench', encoder.encode(JSON.stringify(payload(n))), { timeout: 30000 });
        if (JSON.parse(decoder.decode(msg.data)).n !== n) throw new Error('wrong reply');
      },
      close: () => nc.close(),
    };
  }
  const c = await connect(url, { keepalive: 0 });
  return {
    request: async (n) => {
      if ((await c.request('bench', payload(n), { timeout: 30000 })).n !== n) throw new Error('wrong reply');
    },
    close: () => c.close(),
  };
}

async function run(system, url, window) {
  const c = await client(system, url);
  const counter = [0, 0];
  const lane = async (until) => {
    while (performance.now() < until) {
      counter[0] += 1;
      await c.request(counter[0]);
      counter[1] += 1;
    }
  };
  const phase = (secs) => {
    const until = performance.now() + secs * 1000;
    return Promise.all(Array.from({ length: window }, () => lane(until)));
  };
  await phase(WARMUP);
  counter[1] = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await phase(SECS);
  const secs = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(c0);
  await c.close();
  return { count: counter[1], secs, clientCpu: (used.user + used.system) / 1e6 };
}

async function measure(system, window) {
  const server = await (system === 'nats' ? new Nats() : new Besterd()).start();
  try {
    const h0 = cpu(server.handlerPid);
    const s0 = cpu(server.proc.pid);
    const { count, secs, clientCpu } = await run(system, server.url, window);
    const h1 = cpu(server.handlerPid);
    const s1 = cpu(server.proc.pid);
    const perK = 1000 / count;
    return { rate: count / secs, client_ms: clientCpu * perK * 1000, handler_ms: (h1 - h0) * perK * 1000, server_ms: (s1 - s0) * perK * 1000 };
  } finally {
    await server.close();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = new Map();
for (let r = 0; r < RUNS; r++) {
  for (const window of WINDOWS) {
    for (const system of SYSTEMS) {
      const m = await measure(system, window);
      const key = `${system}@${window}`;
      if (!results.has(key)) results.set(key, []);
      results.get(key).push(m);
      console.error(`run ${r + 1} window ${window} ${system}: ${m.rate.toFixed(0)}/s`);
    }
  }
}
console.log(`\nNode client → broker → Node handler; ${RUNS} runs × ${SECS} s, medians; CPU ms per 1,000 round trips (user+system)\n`);
console.log('| window | system | round trips/s | ÷ nats | client CPU | handler CPU | broker CPU |');
console.log('|---|---|---|---|---|---|---|');
const out = {};
for (const window of WINDOWS) {
  const natsRuns = results.get(`nats@${window}`);
  for (const system of SYSTEMS) {
    const runs = results.get(`${system}@${window}`);
    const med = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, median(runs.map((x) => x[k]))]));
    const ratio = natsRuns ? median(runs.map((x, i) => x.rate / natsRuns[i].rate)) : null;
    out[`${system}@${window}`] = { ...med, ratio };
    console.log(`| ${window} | ${system} | ${med.rate.toFixed(0)} | ${ratio === null ? '—' : ratio.toFixed(2)} | ${med.client_ms.toFixed(1)} | ${med.handler_ms.toFixed(1)} | ${med.server_ms.toFixed(1)} |`);
  }
}
console.log(JSON.stringify(out));
