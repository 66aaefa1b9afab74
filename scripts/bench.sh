#!/usr/bin/env bash
# Measure besterd with the load generator in benches/load.rs (release build, loopback only,
# bounded: a few minutes in all). Not part of the test suite.
#
#   scripts/bench.sh [rtt] [throughput] [misbehave] [idle] [slow] [federation] [compat]
#       real Python handlers; default: all of these
#   scripts/bench.sh compare
#       besterd beside nats-server (installed from Debian if missing), both with a C echo peer
#       (benches/compare/echo.c, built here), scenarios (a) 1×1 (b) 1×64 (c) 8×16 in flight,
#       fresh servers, 3 runs, a table of medians; BENCH_SECS / BENCH_RUNS / BENCH_SYSTEMS /
#       BENCH_SCENARIOS narrow it down (see benches/compare/mod.rs).
#   scripts/bench.sh federation-compare
#       across servers, besterd peers a↔b beside a 2-node nats-server cluster (routes on
#       loopback), C peers as in `compare`: delivery at window 1 and 64 (also with a's handler
#       naming the user on b, `sendClients ["u1@b"]`, besterd on one server,
#       and a chain a→b→c), request-reply with the responder on the other server at window 64;
#       every message checked, fresh servers, 3 interleaved runs, medians; BENCH_FED narrows it
#       down, BENCH_FED_BASELINE=<besterd binary> runs each besterd system with that build too
#       (see benches/federation/mod.rs)
#   scripts/bench.sh transport [--transports=tcp,tls,ws,wss]
#       bester.ping round trips over TCP, TLS, WebSocket and WSS at window 1 and 64
#   scripts/bench.sh allocs     heap allocations per round trip on the event-loop thread
#   scripts/bench.sh rest       resident memory of a server at rest with 1,000 connections
#   scripts/bench.sh python     the Python library (clients/python) client → besterd → handler
#       beside nats-py → nats-server → a nats-py responder, window 1 and 64, 3 runs, medians
#       (benches/python/bench.py; installs nats-server and nats-py if missing)
#   scripts/bench.sh go         the Go library (clients/go) client → besterd → handler beside
#       nats.go → nats-server → a nats.go responder, window 1 and 64, 3 runs, medians, CPU per
#       request (benches/go; installs golang-go, Debian's nats.go and nats-server if missing)
#   scripts/bench.sh clib       the C library on both sides (clients/c: client -> besterd -> the
#       C echo example), round trips/s and CPU per request of client and handler at window 1 and
#       64, medians of BENCH_RUNS=3 runs of BENCH_SECS=3 s (clients/c/tests/bench.sh)
#   scripts/bench.sh node       the Node package (clients/node) client → besterd → handler beside
#       the `nats` npm client → nats-server → a `nats` responder, window 1 and 64, 3 runs, medians
#       (benches/node/bench.mjs; installs nats-server, and `nats` into target/bench/node, if missing)
#   scripts/bench.sh attach     1,000 users attached to one gateway connection beside the same
#       users on 1,000 sockets: server memory per user, attaches and logins per second, echo
#       round trips as an attached user beside the gateway's own (benches/attach; BENCH_ATTACH_N,
#       BENCH_RUNS)
#   scripts/bench.sh storm      10,000 clients log in again with resume tokens after a restart
#       (time to the last one served, CPU per login; BENCH_STORM_N, BENCH_RUNS), beside the
#       same storm with passwords on BENCH_STORM_PASSWORDS clients
#   scripts/bench.sh restart    2,000 clients of the Rust library through a daemon restart under
#       socket activation: answered / failed / retried, longest gap, time until all are back
#       (BENCH_RESTART_N, BENCH_RUNS)
#   scripts/bench.sh adapter    `bester handle` (line mode with cat and jq, per-request mode)
#       beside the Python echo handler, window 1 and 64, medians of 3
#   scripts/bench.sh fanout     one message to a group of 1,000 connected members, deliveries/s,
#       beside nats-server delivering a publish to 1,000 subscribers of a subject, 100-byte
#       payloads, server CPU per delivery, medians of 3 (benches/fanout; installs nats-server
#       if missing; BENCH_FANOUT_MEMBERS, BENCH_FANOUT_MESSAGES, BENCH_RUNS, BENCH_FANOUT_PUBLISH
#       = batch | window, BENCH_FANOUT_BASELINE = another besterd binary in the same rounds)
#   scripts/bench.sh compress   a 2 KB chat-like message echoed over TCP (with and without the
#       feature `compress`) and WebSocket (with and without permessage-deflate): bytes on the
#       wire and server CPU per round trip, medians of 3
#       (benches/compress; BENCH_MESSAGES, BENCH_RUNS)
#   scripts/bench.sh directory  the federation directory on 3 linked servers with 10,000 users
#       online: entries and memory per server, directory bytes per presence change and for a
#       relink's snapshots, time for a login on c to reach a watcher on a (p50/p99), medians of 3
#       (benches/directory; BENCH_DIR_USERS, BENCH_DIR_CHANGES, BENCH_RUNS)
#   scripts/bench.sh durable    stored pushes with acknowledgement: a client's request answered by
#       the C handler with a storing sendClients to an offline user, the reply listing it in
#       `stored` (committed) awaited, at window 1 and 64, with [delivery] fsync = "always" and
#       "never", and (push-always, push-never) the load generator as the handler of a
#       `socket =` type, its pushes' reports (`stored`) awaited, beside JetStream (nats-server
#       -js, a file-storage stream, PubAck awaited); every reply checked, fresh servers, 3
#       interleaved runs, medians, same-run ratios, CPU per message (benches/durable;
#       BENCH_SECS, BENCH_RUNS, BENCH_WINDOWS, BENCH_DURABLE_SYSTEMS; BENCH_DURABLE_BASELINE = another
#       besterd binary measured beside this build in the same runs)
#   scripts/bench.sh durable-memory  1,000,000 stored pushes (10,000 users and one at its
#       max_per_user): the server's VmRSS/VmHWM while storing and after, the database's size,
#       the time to a user's queue on login (BENCH_MEM_TOTAL, BENCH_MEM_USERS, BENCH_MEM_FSYNC)
#   scripts/bench.sh streams    a client-to-client stream (bester.dial) relayed through besterd
#       beside a plain TCP relay (benches/streams/relay.c, built here) carrying the same frames
#       with the same credit: MiB/s one way and CPU per MiB, round-trip p50/p99 of a small
#       frame, fresh servers, 3 runs, medians and same-run ratios (benches/streams;
#       BENCH_STREAM_MB, BENCH_STREAM_FRAME, BENCH_STREAM_WINDOW, BENCH_RUNS)
#
# Prints a table and a final JSON line; compare medians and ratios between runs on the same
# machine rather than absolute numbers on a shared one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [[ " $* " == *" compare "* || " $* " == *" allocs "* || " $* " == *" federation-compare "* ||
    " $* " == *" durable "* || " $* " == *" durable-memory "* ]]; then
    if ! command -v nats-server >/dev/null; then
        apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
    fi
    mkdir -p target/bench
    cc -O2 -Wall -Wextra -o target/bench/echo benches/compare/echo.c
    export BENCH_ECHO="$PWD/target/bench/echo"
fi
if [[ " $* " == *" streams "* ]]; then
    mkdir -p target/bench
    cc -O2 -Wall -Wextra -o target/bench/relay benches/streams/relay.c
    export BENCH_RELAY="$PWD/target/bench/relay"
fi
if [[ " $* " == *" fanout "* ]]; then
    command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
fi
if [[ " $* " == *" python "* ]]; then
    command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
    .venv/bin/python -c "import nats" 2>/dev/null || .venv/bin/python -m pip install --quiet nats-py
    cargo build --release --bins --quiet
    exec .venv/bin/python benches/python/bench.py
fi
if [[ " $* " == " go " ]]; then
    # Built offline in GOPATH mode: Debian's nats.go package ships nuid without a go.mod, so
    # a module `replace` of it cannot work; GOPATH mode finds every package by its directory.
    pkgs=()
    command -v go >/dev/null || pkgs+=(golang-go)
    command -v nats-server >/dev/null || pkgs+=(nats-server)
    [[ -d /usr/share/gocode/src/github.com/nats-io/nats.go ]] || pkgs+=(golang-github-nats-io-go-nats-dev)
    if ((${#pkgs[@]})); then apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null; fi
    cargo build --release --quiet --bin besterd
    gopath="$PWD/target/gopath"
    mkdir -p "$gopath/src/besterd.dev"
    ln -sfn "$PWD/clients/go" "$gopath/src/besterd.dev/bester"
    (cd benches/go && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" go build -o "$PWD/../../target/gobench" .)
    exec target/gobench
fi
if [[ " $* " == " clib " ]]; then
    cargo build --release --quiet --bin besterd
    make -C clients/c --no-print-directory -s bench
    exit 0
fi
if [[ " $* " == *" node "* ]]; then
    command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
    if [ ! -d target/bench/node/node_modules/nats ]; then
        mkdir -p target/bench/node
        (cd target/bench/node && echo '{"name":"bester-bench-node","private":true}' >package.json &&
            npm install --silent --no-audit --no-fund nats@2)
    fi
    cargo build --release --bins --quiet
    exec node benches/node/bench.mjs
fi
cargo bench --bench load -- "$@"
