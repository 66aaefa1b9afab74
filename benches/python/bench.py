"""Python client → broker → Python handler, request-reply round trips per second, side by side:

- ``bester``     the blocking client of clients/python → besterd → a handler of clients/python
- ``bester.aio`` the asyncio client → besterd → the same handler
- ``nats-py``    NATS's official Python client (``nc.request``) → nats-server → a nats-py responder
                 (``msg.respond``), each in its own process as the besterd side is

at window 1 (one request in flight) and window 64, a fresh server and handler per measurement,
BENCH_RUNS (3) runs of BENCH_SECS (3) seconds each after a 0.5 s warm-up, medians. Every reply is
checked (its payload is the request's). CPU is utime + stime from /proc per 1,000 round trips, of
the client (this process, or its child for one system), the handler process and the broker.

    python benches/python/bench.py            (scripts/bench.sh python)

BESTERD_BIN (default target/release/besterd), NATS_SERVER (default nats-server on the PATH),
BENCH_SYSTEMS (bester,bester.aio,nats-py) and BENCH_WINDOWS (1,64) narrow it down. Prints a
Markdown table and a final JSON line.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))

SECS = float(os.environ.get("BENCH_SECS", "3"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
WARMUP = 0.5
SYSTEMS = os.environ.get("BENCH_SYSTEMS", "bester,bester.aio,nats-py").split(",")
WINDOWS = [int(w) for w in os.environ.get("BENCH_WINDOWS", "1,64").split(",")]
TICKS = os.sysconf("SC_CLK_TCK")

HANDLER = """
import os, bester
handler = bester.Handler(workers=int(os.environ.get("BENCH_WORKERS", "0")))
@handler.on("bench")
def bench(request):
    return request.data
handler.run()
"""

NATS_RESPONDER = """
import asyncio, os, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1], user="bench", password="bench-pw")
    async def respond(msg):
        await msg.respond(msg.data)
    await nc.subscribe("bench", cb=respond)
    await nc.flush()
    open(sys.argv[2], "w").write("ready")
    await asyncio.Event().wait()
asyncio.run(main())
"""


def cpu(pid):
    """utime + stime of a process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError):
        return 0.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, deadline=20.0):
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Besterd:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bester-bench-"))
        binary = os.environ.get("BESTERD_BIN") or str(REPO / "target" / "release" / "besterd")
        (self.dir / "handler.py").write_text(HANDLER)
        users = self.dir / "users.json"
        subprocess.run([binary, "user", "--users", str(users), "add", "bench", "--password-stdin"], input="bench-pw\n", text=True, check=True, capture_output=True)
        (self.dir / "b.toml").write_text(
            f'[server]\nname = "bench"\nlisten = "127.0.0.1:0"\nusers = "{users}"\nruntime_dir = "{self.dir / "run"}"\n'
            f'[handlers.bench]\ncommand = ["{sys.executable}", "{self.dir / "handler.py"}"]\n'
        )
        env = dict(os.environ, PYTHONPATH=str(REPO / "clients" / "python" / "src"), RUST_LOG="warn")
        self.proc = subprocess.Popen([binary, "serve", "--config", str(self.dir / "b.toml"), "--ready-file", str(self.dir / "ready")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("besterd", lambda: (self.dir / "ready").exists() and (self.dir / "ready").read_text().endswith("\n"))
        self.url = f"bester://bench:bench-pw@{(self.dir / 'ready').read_text().splitlines()[0]}"
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        self.handler_pid = int(children[0])

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


class Nats:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="nats-bench-"))
        port = free_port()
        binary = os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "--user", "bench", "--pass", "bench-pw"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"nats://127.0.0.1:{port}"

        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for("nats-server", up)
        (self.dir / "responder.py").write_text(NATS_RESPONDER)
        ready = self.dir / "ready"
        self.handler = subprocess.Popen([sys.executable, str(self.dir / "responder.py"), self.url, str(ready)])
        wait_for("the NATS responder", ready.exists)
        self.handler_pid = self.handler.pid

    def close(self):
        self.handler.kill()
        self.handler.wait()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


def payload(n):
    return {"n": n, "pad": "x" * 80}


def run_blocking(url, window):
    import bester

    with bester.connect(url, keepalive=None) as c:
        n = 0
        inflight = deque()

        def one(until):
            nonlocal n
            count = 0
            while time.monotonic() < until:
                while len(inflight) < window:
                    n += 1
                    inflight.append((n, c.send("bench", payload(n))))
                k, f = inflight.popleft()
                assert f.result(30)["data"]["n"] == k
                count += 1
            return count

        one(time.monotonic() + WARMUP)
        c0, t0 = time.process_time(), time.monotonic()
        count = one(t0 + SECS)
        return count, time.monotonic() - t0, time.process_time() - c0


async def run_async(url, window, kind):
    if kind == "nats-py":
        import nats

        nc = await nats.connect(url, user="bench", password="bench-pw")

        async def request(n):
            msg = await nc.request("bench", json.dumps(payload(n)).encode(), timeout=30)
            assert json.loads(msg.data)["n"] == n

        close = nc.close
    else:
        import bester.aio

        c = await bester.aio.connect(url, keepalive=None)

        async def request(n):
            assert (await c.request("bench", payload(n), 30))["n"] == n

        close = c.close
    counter = [0, 0]

    async def lane(until):
        while time.monotonic() < until:
            counter[0] += 1
            await request(counter[0])
            counter[1] += 1

    async def phase(secs):
        until = time.monotonic() + secs
        await asyncio.gather(*(lane(until) for _ in range(window)))

    await phase(WARMUP)
    counter[1] = 0
    c0, t0 = time.process_time(), time.monotonic()
    await phase(SECS)
    result = counter[1], time.monotonic() - t0, time.process_time() - c0
    await close()
    return result


def measure(system, window):
    server = Nats() if system == "nats-py" else Besterd()
    try:
        h0, s0 = cpu(server.handler_pid), cpu(server.proc.pid)
        if system == "bester":
            count, secs, client_cpu = run_blocking(server.url, window)
        else:
            count, secs, client_cpu = asyncio.run(run_async(server.url, window, system))
        h1, s1 = cpu(server.handler_pid), cpu(server.proc.pid)
        per_k = 1000 / count
        return {"rate": count / secs, "client_ms": client_cpu * per_k * 1000, "handler_ms": (h1 - h0) * per_k * 1000, "server_ms": (s1 - s0) * per_k * 1000}
    finally:
        server.close()


def main():
    results = {}
    for run in range(RUNS):
        for window in WINDOWS:
            for system in SYSTEMS:
                r = measure(system, window)
                results.setdefault((system, window), []).append(r)
                print(f"run {run + 1} window {window} {system}: {r['rate']:.0f}/s", file=sys.stderr, flush=True)
    print(f"\nPython client → broker → Python handler; {RUNS} runs × {SECS:g} s, medians; CPU ms per 1,000 round trips (utime+stime)\n")
    print("| window | system | round trips/s | ÷ nats-py | client CPU | handler CPU | broker CPU |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for window in WINDOWS:
        nats_runs = results.get(("nats-py", window))
        for system in SYSTEMS:
            runs = results[(system, window)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ratio = statistics.median(r["rate"] / n["rate"] for r, n in zip(runs, nats_runs)) if nats_runs else None
            out[f"{system}@{window}"] = dict(med, ratio=ratio)
            print(f"| {window} | {system} | {med['rate']:.0f} | {ratio:.2f} | {med['client_ms']:.1f} | {med['handler_ms']:.1f} | {med['server_ms']:.1f} |" if ratio else f"| {window} | {system} | {med['rate']:.0f} | — | {med['client_ms']:.1f} | {med['handler_ms']:.1f} | {med['server_ms']:.1f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
