//! `bester handle` (issue: libraries, "the adapter"): round trips per second from one client
//! through the broker to a handler that is any program, at window 1 and 64, beside the Python
//! echo handler (handlers/python/echo.py, on the Python package) measured in the same run.
//!
//!   cargo bench --bench load -- adapter      (3 s per figure, 3 runs; BENCH_SECS, BENCH_RUNS)
//!
//! Handlers: `line-cat` is `bester handle` in line mode with `cat` (the cheapest filter there is:
//! the adapter's own cost), `line-jq` the same with `jq -c --unbuffered .payload.data`,
//! `per-request` is `--per-request --max-procs 8 -- cat` (a process per request), and `python`
//! handlers/python/echo.py. The runs are interleaved (each run measures every handler once);
//! each figure is the median of the runs, `vs_python` the ratio of the medians.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::{Value, json};

use super::common::{Broker, handler};
use super::login;

const BESTER: &str = env!("CARGO_BIN_EXE_bester");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn adapter(kind: &str, flags: &[&str], program: &[&str]) -> String {
    let mut command = vec![BESTER.to_string(), "handle".into(), kind.into()];
    command.extend(flags.iter().map(|f| f.to_string()));
    command.push("--".into());
    command.extend(program.iter().map(|p| p.to_string()));
    format!(
        "[handlers.{kind}]\ncommand = {}\nmax_inflight = 256\n",
        serde_json::to_string(&command).unwrap()
    )
}

/// Keep `window` requests of `kind` in flight for `length`: round trips per second.
fn requests(c: &mut Client, kind: &str, window: usize, length: Duration) -> f64 {
    let start = Instant::now();
    let deadline = start + length;
    let mut in_flight = HashSet::new();
    let (mut next, mut done) = (0u64, 0u64);
    loop {
        while in_flight.len() < window && Instant::now() < deadline {
            c.message(&next.to_string(), kind, &json!({ "n": next }))
                .unwrap();
            in_flight.insert(next);
            next += 1;
        }
        if in_flight.is_empty() {
            break;
        }
        let r = c.recv().unwrap().expect("open");
        assert_eq!(r["header"]["status"], "ok", "{r}");
        let id: u64 = r["header"]["id"].as_str().unwrap().parse().unwrap();
        assert!(in_flight.remove(&id), "asked once");
        done += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

pub fn adapter_figures() -> Value {
    let secs = env_u64("BENCH_SECS", 3);
    let runs = env_u64("BENCH_RUNS", 3) as usize;
    let tables = [
        adapter("line-cat", &[], &["cat"]),
        adapter(
            "line-jq",
            &[],
            &["jq", "-c", "--unbuffered", ".payload.data"],
        ),
        adapter(
            "per-request",
            &["--per-request", "--max-procs", "8"],
            &["cat"],
        ),
        format!(
            "[handlers.python]\n{}\nmax_inflight = 256\n",
            handler("python3", "handlers/python/echo.py")
        ),
    ]
    .concat();
    let b = Broker::launch(
        "bench",
        "127.0.0.1:0",
        "max_pending_per_connection = 1024",
        &tables,
        &[("u0", "pw")],
    );
    let mut c = login(&b, "u0");
    let kinds = ["python", "line-cat", "line-jq", "per-request"];
    let mut out = serde_json::Map::new();
    for window in [1usize, 64] {
        let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
        for _ in 0..runs {
            for kind in kinds {
                let rate = requests(&mut c, kind, window, Duration::from_secs(secs));
                rates.entry(kind).or_default().push(rate.round());
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let python = median(rates.get_mut("python").unwrap());
        let mut figures = serde_json::Map::new();
        for kind in kinds {
            let all = rates.get_mut(kind).unwrap();
            let m = median(all);
            figures.insert(
                kind.to_string(),
                json!({"round_trips_per_s": all, "median": m,
                       "vs_python": (m / python * 100.0).round() / 100.0}),
            );
        }
        out.insert(format!("window_{window}"), Value::Object(figures));
    }
    Value::Object(out)
}
