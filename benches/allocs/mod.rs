//! `allocs`: heap allocations per round trip on besterd's event-loop thread.
//!
//! The load generator's global allocator counts allocations (and reallocations) made on threads
//! that asked to be counted. This scenario runs a real [`Server`] in-process on such a thread,
//! with the C echo handler (`BENCH_ECHO`) or, without it, the Python one, and drives it from
//! ordinary client connections: first a warm-up, then a counted stretch, 1 connection × 1 in
//! flight and 1 × 64. Client threads, the verifier threads and the handler process are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use besterd::client::Client;
use besterd::config::Config;
use besterd::server::Server;
use serde_json::{Value, json};

use crate::common::{add_user, handler};
use crate::compare::{Proto, drive};

/// Counts allocations on threads that set [`COUNTED`].
pub struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    // `try_with`: no count (rather than a panic) while a thread's locals are being torn down.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's own arguments, so the
// GlobalAlloc contract is the system allocator's; the counting touches only an atomic and a
// const-initialised thread-local Cell, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

pub fn allocs() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    add_user(&users, "u0", "pw");
    let command = match std::env::var("BENCH_ECHO") {
        Ok(echo) => format!("command = [{echo:?}, \"bester\"]"),
        Err(_) => handler("python3", "handlers/python/echo.py"),
    };
    let text = format!(
        "[server]\nname = \"allocs\"\nlisten = \"127.0.0.1:0\"\nusers = {:?}\nruntime_dir = {:?}\n\
         max_connections_per_ip = 100000\n[handlers.echo]\n{command}\nprocesses = 1\n",
        users.display().to_string(),
        dir.path().join("run").display().to_string()
    );
    let config = Config::parse(&text, "allocs").expect("config");
    let server = Server::bind(config).expect("bind");
    let addr = server.local_addr();
    let loop_thread = thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        server.run()
    });
    // The handler is up once an echo is answered ok.
    let started = Instant::now();
    let (mut c, _) = Client::login(addr, "u0", "pw").expect("login");
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    while c.request("w", "echo", &json!(1)).unwrap()["header"]["status"] != "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "echo handler not up"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut figures = serde_json::Map::new();
    for (name, window) in [("1x1", 1), ("1x64", 64)] {
        drive(Proto::Bester, addr, 1, window, 0.5); // warm-up: buffers and tables at size
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let done = drive(Proto::Bester, addr, 1, window, 2.0);
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
        figures.insert(
            name.into(),
            json!({"round_trips": done, "allocations": allocs,
                   "per_round_trip": (allocs as f64 / done.max(1) as f64 * 100.0).round() / 100.0}),
        );
    }
    drop(c);
    // The server stops on SIGTERM (its signal handler, not the default action, gets it).
    // SAFETY: raise(3) sends a signal to this process; no memory is involved.
    unsafe { libc::raise(libc::SIGTERM) };
    loop_thread.join().unwrap().expect("server run");
    Value::Object(figures)
}
