//! Durable delivery to offline users against the real daemon: pushes stored for users with no
//! connection, delivered on their next login with `"stored": true`, acknowledged with
//! `bester.ack`, delivered again when unacknowledged, kept across a restart, bounded, and a
//! damaged store refused at start.

mod common;

use besterd::client::Client;
use common::*;
use serde_json::{Value, json};

fn mail_handlers(extra: &str) -> String {
    format!(
        "[handlers.mail]\n{}\noffline = \"store\"\n[handlers.note]\n{}\n{extra}",
        handler("python3", "tests/handlers/greeter.py"),
        handler("python3", "tests/handlers/greeter.py"),
    )
}

fn start(delivery: &str) -> Broker {
    Broker::start_with(
        "",
        &mail_handlers(delivery),
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ],
    )
}

/// Nothing more is waiting for `client` from the store: an ack (answered after the backlog read
/// that the login started) comes back before any push.
fn no_more_pushes(client: &mut Client) {
    client
        .message("barrier", "bester.ack", &json!({"msgs": []}))
        .unwrap();
    let frame = client.recv().unwrap().expect("the ack's reply");
    assert_eq!(frame["header"]["id"], "barrier", "{frame}");
    assert_eq!(frame["data"], json!({"acked": 0}), "{frame}");
}

/// The next push on `client` (a deadline applies).
fn push(client: &mut Client) -> Value {
    let frame = client.recv().unwrap().expect("a push");
    assert_eq!(frame["header"]["kind"], "push", "{frame}");
    frame
}

fn mail(alice: &mut Client, id: &str, to: &[&str], n: u64) -> Value {
    alice
        .request(id, "mail", &json!({"to": to, "n": n}))
        .unwrap()
}

#[test]
fn stored_for_offline_users_delivered_on_login_and_deleted_on_ack() {
    let b = start("");
    let mut alice = b.login("alice", "alice-pw");
    for n in 0..3 {
        let reply = mail(&mut alice, &format!("m{n}"), &["bob"], n);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
        assert_eq!(reply["header"]["delivered"], json!([]), "{reply}");
        assert_eq!(reply["header"]["offline"], json!([]), "{reply}");
    }
    let mut bob = b.login("bob", "bob-pw");
    let got: Vec<Value> = (0..3).map(|_| push(&mut bob)).collect();
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p["header"]["type"], "mail");
        assert_eq!(p["header"]["stored"], true);
        assert_eq!(p["header"]["from"]["user"], "alice");
        assert!(p["header"]["time"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(p["data"]["n"], n as u64, "in order");
    }
    let ids: Vec<&str> = got
        .iter()
        .map(|p| p["header"]["msg"].as_str().unwrap())
        .collect();
    // One by id, then the rest cumulatively.
    let ack = bob
        .request("a1", "bester.ack", &json!({"msgs": [ids[0]]}))
        .unwrap();
    assert_eq!(ack["data"], json!({"acked": 1}), "{ack}");
    let ack = bob
        .request("a2", "bester.ack", &json!({"upto": ids[2]}))
        .unwrap();
    assert_eq!(ack["data"], json!({"acked": 2}), "{ack}");
    drop(bob);
    let mut bob = b.login("bob", "bob-pw");
    no_more_pushes(&mut bob);
}

#[test]
fn a_drain_waits_for_the_commit_of_a_storing_answer_before_it_closes() {
    let faulty = format!(
        "[handlers.faulty]\n{}\noffline = \"store\"\n",
        handler("python3", "tests/handlers/faulty.py")
    );
    let mut b = Broker::start_with("", &faulty, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut alice = b.login("alice", "alice-pw");
    let later = json!({"action": "later", "seconds": 1, "users": ["bob"], "n": 3});
    alice.message("late", "faulty", &later).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(b.pid(), libc::SIGTERM);
    // The handler answers during the drain; the reply waits for the commit, and the drain
    // for the reply: alice hears `stored`, not a closed connection.
    let reply = alice
        .recv()
        .unwrap()
        .expect("the answer, before the drain closes");
    assert_eq!(reply["header"]["id"], "late", "{reply}");
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    b.restart();
    let mut bob = b.login("bob", "bob-pw");
    let p = push(&mut bob);
    assert_eq!(p["data"]["n"], 3, "{p}");
    assert_eq!(p["header"]["stored"], true, "{p}");
}

#[test]
fn unacked_pushes_come_again_and_survive_a_restart() {
    let mut b = start("");
    let mut alice = b.login("alice", "alice-pw");
    let reply = mail(&mut alice, "m", &["bob"], 7);
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    let first = {
        let mut bob = b.login("bob", "bob-pw");
        push(&mut bob)["header"]["msg"].clone()
        // bob's connection dies here without an ack.
    };
    drop(alice);
    b.restart();
    let mut bob = b.login("bob", "bob-pw");
    let again = push(&mut bob);
    assert_eq!(again["header"]["msg"], first);
    assert_eq!(again["data"]["n"], 7);
    // An online user gets a storing push at once, with its id; unacked, it comes again.
    let mut alice = b.login("alice", "alice-pw");
    let reply = mail(&mut alice, "m2", &["bob"], 8);
    assert_eq!(reply["header"]["delivered"], json!(["bob"]), "{reply}");
    let live = push(&mut bob);
    assert_eq!(live["data"]["n"], 8);
    assert!(live["header"]["msg"].is_string(), "{live}");
    assert!(live["header"].get("stored").is_none(), "{live}");
    drop(bob);
    let mut bob = b.login("bob", "bob-pw");
    let (a, c) = (push(&mut bob), push(&mut bob));
    assert_eq!(
        (a["data"]["n"].clone(), c["data"]["n"].clone()),
        (json!(7), json!(8))
    );
    assert_eq!(c["header"]["msg"], live["header"]["msg"]);
}

#[test]
fn store_true_in_the_answer_stores_for_a_type_that_does_not() {
    let b = start("");
    let mut alice = b.login("alice", "alice-pw");
    let reply = alice
        .request("1", "note", &json!({"to": ["bob"], "n": 1}))
        .unwrap();
    assert_eq!(reply["header"]["offline"], json!(["bob"]), "{reply}");
    assert!(reply["header"].get("stored").is_none(), "{reply}");
    let reply = alice
        .request("2", "note", &json!({"to": ["bob"], "n": 2, "store": true}))
        .unwrap();
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    let mut bob = b.login("bob", "bob-pw");
    assert_eq!(push(&mut bob)["data"]["n"], 2);
}

#[test]
fn a_full_queue_is_refused_with_queue_full() {
    let b = start("[delivery]\nmax_per_user = 2\n");
    let mut alice = b.login("alice", "alice-pw");
    for n in 0..2 {
        let reply = mail(&mut alice, &format!("m{n}"), &["bob"], n);
        assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    }
    let reply = mail(&mut alice, "m2", &["bob"], 2);
    assert_eq!(reply["header"]["stored"], json!([]), "{reply}");
    assert_eq!(
        reply["header"]["refused"],
        json!([{"user": "bob", "code": "queue_full",
                "error": "bob's queue holds 2 messages, the most it may ([delivery] max_per_user)"}]),
        "{reply}"
    );
}

#[test]
fn a_message_over_the_byte_limit_is_refused() {
    let b = start("[delivery]\nmax_bytes_per_user = 200\n");
    let mut alice = b.login("alice", "alice-pw");
    let reply = alice
        .request("1", "mail", &json!({"to": ["bob"], "pad": "x".repeat(300)}))
        .unwrap();
    let refused = &reply["header"]["refused"][0];
    assert_eq!(refused["code"], "queue_full", "{reply}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .ends_with("bytes is over the limit of 200 bytes for one user's queue ([delivery] max_bytes_per_user)"),
        "{reply}"
    );
}

#[test]
fn expired_messages_are_not_delivered() {
    let b = start("[delivery]\nmax_age_s = 1\n");
    let mut alice = b.login("alice", "alice-pw");
    let reply = mail(&mut alice, "m", &["bob"], 1);
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    eventually("the message expires", || {
        b.log()
            .contains("delivery store: 1 messages expired")
            .then_some(())
    });
    let mut bob = b.login("bob", "bob-pw");
    no_more_pushes(&mut bob);
}

#[test]
fn a_corrupt_store_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.db");
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    let mut b = Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "",
        &mail_handlers(&format!(
            "[delivery]\npath = {:?}\n",
            db.display().to_string()
        )),
        &[("bob", "bob-pw")],
        &Launch {
            wait_ready: false,
            ..Launch::default()
        },
    );
    let status = b.wait_exit();
    assert!(!status.success(), "{status}");
    let log = b.log();
    assert!(
        log.contains(&format!(
            "delivery store: {} is not a usable delivery store (file is not a database); move it away to start with an empty one, or restore a backup",
            db.display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x42u8; 8192],
        "never reset"
    );
}

#[test]
fn bad_acks_are_refused_exactly() {
    let b = start("");
    let mut bob = b.login("bob", "bob-pw");
    let e = bob
        .request("1", "bester.ack", &json!({"msgs": ["x"]}))
        .unwrap();
    assert_eq!(code(&e), "invalid_message", "{e}");
    assert_eq!(
        e["data"]["error"],
        "bad data for \"bester.ack\": \"x\" is not a message id"
    );
    // Another user's message ids delete nothing.
    let ok = bob
        .request("2", "bester.ack", &json!({"upto": "18446744073709551615"}))
        .unwrap();
    assert_eq!(ok["data"], json!({"acked": 0}), "{ok}");
}

/// Unmounts the small file system at the end of the test.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_new_messages_and_acks_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED a_full_disk_refuses_new_messages_and_acks_still_work: cannot mount a tmpfs here (needs root)"
        );
        return;
    }
    let _mount = Mount(mnt.clone());
    let db = mnt.join("delivery.db");
    let b = start(&format!(
        "[delivery]\npath = {:?}\nmin_free_bytes = 131072\n",
        db.display().to_string()
    ));
    let mut alice = b.login("alice", "alice-pw");
    let pad = "x".repeat(40_000);
    let mut stored = 0;
    let refused = loop {
        let reply = alice
            .request(
                &format!("m{stored}"),
                "mail",
                &json!({"to": ["bob"], "pad": pad}),
            )
            .unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        if reply["header"]["stored"] == json!(["bob"]) {
            stored += 1;
            assert!(stored < 100, "a 1 MiB file system never filled");
            continue;
        }
        break reply["header"]["refused"][0].clone();
    };
    assert!(stored > 3, "only {stored} stored");
    assert_eq!(refused["code"], "store_failed", "{refused}");
    let text = refused["error"].as_str().unwrap();
    assert!(
        text.starts_with("the disk holding the delivery store is full (")
            && text.ends_with(
                " bytes free, 131072 kept for acknowledgements: [delivery] min_free_bytes)"
            ),
        "{text}"
    );
    // The acks (deletes) still go through, and then there is room again.
    // A batch at a time (about 512 KiB here), the next after an ack.
    let mut bob = b.login("bob", "bob-pw");
    for i in 0..stored {
        let msg = push(&mut bob)["header"]["msg"].clone();
        let ack = bob
            .request(&format!("a{i}"), "bester.ack", &json!({"msgs": [msg]}))
            .unwrap();
        assert_eq!(ack["data"], json!({"acked": 1}), "{ack}");
    }
    no_more_pushes(&mut bob);
    drop(bob);
    let reply = alice
        .request("again", "mail", &json!({"to": ["bob"], "pad": pad}))
        .unwrap();
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
}

/// Far from the limit the store keeps its disk figures between commits (`delivery/budget.rs`):
/// a disk filled by someone else is still seen within a quarter of a second, and refused with
/// the same error as a disk the store filled itself.
#[test]
fn a_disk_another_writer_fills_is_seen_though_the_figures_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED a_disk_another_writer_fills_is_seen_though_the_figures_are_kept: cannot mount a tmpfs here (needs root)"
        );
        return;
    }
    let _mount = Mount(mnt.clone());
    let db = mnt.join("delivery.db");
    // 128 MiB free, 16 MiB kept: more than 64 MiB above the limit, so the figure is kept.
    let b = start(&format!(
        "[delivery]\npath = {:?}\nmin_free_bytes = 16777216\n",
        db.display().to_string()
    ));
    let mut alice = b.login("alice", "alice-pw");
    let reply = mail(&mut alice, "first", &["bob"], 0);
    assert_eq!(reply["header"]["stored"], json!(["bob"]), "{reply}");
    // Another writer leaves 12 MiB free, less than min_free_bytes (and room for what is stored
    // before the figure is measured again).
    let free = || {
        let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a writable statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let fill = free().saturating_sub(12 << 20);
    std::fs::write(mnt.join("other"), vec![0u8; fill as usize]).unwrap();
    let started = std::time::Instant::now();
    let mut n = 1;
    let refused = loop {
        let reply = mail(&mut alice, &format!("m{n}"), &["bob"], n);
        assert_eq!(reply["header"]["status"], "ok", "{reply}");
        if reply["header"]["stored"] != json!(["bob"]) {
            break reply["header"]["refused"][0].clone();
        }
        n += 1;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the full disk was not seen: {n} more stored"
        );
    };
    assert_eq!(refused["code"], "store_failed", "{refused}");
    let text = refused["error"].as_str().unwrap();
    assert!(
        text.starts_with("the disk holding the delivery store is full (")
            && text.ends_with(
                " bytes free, 16777216 kept for acknowledgements: [delivery] min_free_bytes)"
            ),
        "{text}"
    );
    // Room again once the other file goes.
    std::fs::remove_file(mnt.join("other")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let reply = mail(&mut alice, "again", &["bob"], 0);
        if reply["header"]["stored"] == json!(["bob"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_store_path_that_is_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("delivery.db");
    std::os::unix::fs::symlink(dir.path().join("target.db"), &link).unwrap();
    let mut b = Broker::launch_with(
        "test",
        "127.0.0.1:0",
        "",
        &mail_handlers(&format!(
            "[delivery]\npath = {:?}\n",
            link.display().to_string()
        )),
        &[("bob", "bob-pw")],
        &Launch {
            wait_ready: false,
            ..Launch::default()
        },
    );
    assert!(!b.wait_exit().success());
    let log = b.log();
    assert!(log.contains("is a symbolic link"), "{log}");
    assert!(
        !dir.path().join("target.db").exists(),
        "nothing created through the link"
    );
}

#[test]
fn operators_see_the_queues_and_the_metrics() {
    let b = Broker::start_with(
        "",
        &mail_handlers("[monitor]\nlisten = \"127.0.0.1:0\"\n"),
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ],
    );
    let mut alice = b.login("alice", "alice-pw");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (n, to) in (0..).zip(["carol", "bob", "bob"]) {
        let reply = mail(&mut alice, &format!("m{n}"), &[to], n);
        assert_eq!(reply["header"]["stored"], json!([to]), "{reply}");
    }
    let socket = b.dir.path().join("run/besterd.ctl");
    let ctl = |json: bool, extra: &[&str]| {
        let mut args = vec!["ctl", "--socket", socket.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        args.push("queues");
        args.extend(extra);
        let out = besterd_cmd(&args, None);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json = |extra: &[&str]| -> Value { serde_json::from_str(&ctl(true, extra)).unwrap() };
    // Deepest first, then by name; each row's oldest is its first message's time.
    let answer = json(&[]);
    let q = &answer["queues"];
    assert_eq!(q.as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(
        (&q[0]["user"], &q[0]["messages"]),
        (&json!("bob"), &json!(2))
    );
    assert_eq!(
        (&q[1]["user"], &q[1]["messages"]),
        (&json!("carol"), &json!(1))
    );
    for row in q.as_array().unwrap() {
        let oldest = row["oldest_ms"].as_u64().expect("oldest_ms");
        assert!(
            oldest >= before && oldest <= answer["now_ms"].as_u64().unwrap(),
            "{answer}"
        );
    }
    assert!(
        q[0]["oldest_ms"].as_u64() >= q[1]["oldest_ms"].as_u64(),
        "{answer}"
    );
    assert_eq!(answer["users"], 2, "{answer}");
    assert_eq!(answer["store"]["messages"], 3, "{answer}");
    // Bounded: the deepest N, saying how many hold a queue; or one user's.
    let answer = json(&["--limit", "1"]);
    assert_eq!(answer["queues"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["queues"][0]["user"], "bob", "{answer}");
    assert_eq!(answer["users"], 2, "{answer}");
    let answer = json(&["--user", "carol"]);
    assert_eq!(answer["queues"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["queues"][0]["user"], "carol", "{answer}");
    assert_eq!(answer["queues"][0]["messages"], 1, "{answer}");
    assert_eq!(json(&["--user", "alice"])["queues"], json!([]));
    let text = ctl(false, &[]);
    assert!(text.starts_with("delivery store "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["bob", "2"])),
        "{text}"
    );
    assert!(!text.contains("deepest of"), "{text}");
    let text = ctl(false, &["--limit", "1"]);
    assert!(!text.lines().any(|l| l.starts_with("carol")), "{text}");
    assert!(
        text.contains(
            "(the 1 deepest of 2 users' queues: --limit N for more, --user NAME for one)"
        ),
        "{text}"
    );

    let log = b.log();
    let marker = "monitor: listening on http://";
    let at = log.find(marker).expect("monitor line in the log") + marker.len();
    let addr = &log[at..at + log[at..].find(' ').unwrap()];
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    let _ = stream.read_to_string(&mut metrics);
    for line in [
        "besterd_delivery_stored_total 3",
        // One after another, each answered before the next: a commit each.
        "besterd_delivery_commits_total 3",
        "besterd_delivery_messages 3",
        "besterd_delivery_refused_total 0",
        "besterd_delivery_expired_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("besterd_delivery_disk_bytes "),
        "{metrics}"
    );
}

/// A small deterministic generator for the kill moments (the seed is printed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// kill -9 while pushes to an offline user are being stored, `BESTER_CRASH_KILLS` times (10 by
/// default; `scripts/crash-durable.sh` runs 200): every push reported `stored` is delivered
/// exactly once to a client that acks, and nothing that was never sent appears. An fsync per
/// commit, 16 requests in flight.
#[test]
fn kill_9_while_storing_loses_nothing_reported_stored() {
    kill_9_while_storing("[delivery]\nmax_per_user = 1000000", 16);
}

/// The same without an fsync per commit (a killed process loses nothing the kernel was given)
/// and 128 requests in flight, so that groups of 64 jobs and more form and go in two commits,
/// the first half reported while the second is written.
#[test]
fn kill_9_while_storing_without_fsync_loses_nothing_reported_stored() {
    kill_9_while_storing("[delivery]\nfsync = \"never\"\nmax_per_user = 1000000", 128);
}

/// The crash test with this `[delivery]` configuration and `window` requests in flight.
fn kill_9_while_storing(delivery: &str, window: usize) {
    let kills: u64 = std::env::var("BESTER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("BESTER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {kills} kills, seed {seed}, window {window}, config {delivery:?}");
    let mut rng = Rng(seed);
    let mut b = start(delivery);
    let mut next = 0u64;
    let mut reported = std::collections::BTreeSet::new();
    // carol is the crashing client: she reads some of her stored pushes after each restart and
    // her connection dies before any ack, so every one must come again, with the same id.
    let mut reported_carol = std::collections::BTreeSet::new();
    let mut crashed_saw: std::collections::BTreeMap<u64, Value> = Default::default();
    let mut in_doubt = 0u64;
    for _ in 0..kills {
        let mut alice = b.login("alice", "alice-pw");
        // Pipelined: up to `window` requests in flight; the kill comes after a random number
        // of replies, with the rest of the window unanswered.
        let stop_after = rng.below(4 * window as u64);
        let mut answered = 0;
        let mut waiting = std::collections::VecDeque::new();
        while answered < stop_after {
            while waiting.len() < window {
                alice
                    .message(
                        &next.to_string(),
                        "mail",
                        &json!({"to": ["bob", "carol"], "n": next}),
                    )
                    .unwrap();
                waiting.push_back(next);
                next += 1;
            }
            let reply = alice.recv().unwrap().expect("a reply");
            let n: u64 = reply["header"]["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(waiting.pop_front(), Some(n), "replies in order");
            // carol's last connection may not be closed yet: then she is `delivered`, and her
            // copy is kept all the same until she acks.
            let h = &reply["header"];
            let has = |list: &str, user: &str| {
                h[list]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|u| u == user))
            };
            // The limits are far above what the test stores: no reply is a refusal.
            assert!(h.get("refused").is_none(), "{reply}");
            let bob = has("stored", "bob");
            let carol = has("stored", "carol") || has("delivered", "carol");
            assert_eq!(bob, carol, "one commit for both: {reply}");
            if bob {
                reported.insert(n);
                reported_carol.insert(n);
            }
            answered += 1;
        }
        in_doubt += waiting.len() as u64;
        b.kill_and_restart();
        // Never acked, so at least what was reported is waiting for her (a login is sent at
        // most a window of 256 before an ack).
        let reads = rng.below(257).min(reported_carol.len() as u64);
        if reads > 0 {
            let mut carol = b.login("carol", "carol-pw");
            for _ in 0..reads {
                let p = push(&mut carol);
                let n = p["data"]["n"].as_u64().unwrap();
                let id = p["header"]["msg"].clone();
                let earlier = crashed_saw.entry(n).or_insert_with(|| id.clone());
                assert_eq!(*earlier, id, "{n} came again with another id");
            }
            // The connection dies here, unacknowledged, as a killed client's does.
        }
    }
    let seen = drain_acking(&mut b.login("bob", "bob-pw"), next);
    let lost: Vec<&u64> = reported.iter().filter(|n| !seen.contains_key(n)).collect();
    assert!(
        lost.is_empty(),
        "reported stored, never delivered: {lost:?}"
    );
    let carol = drain_acking(&mut b.login("carol", "carol-pw"), next);
    let lost: Vec<&u64> = reported_carol
        .iter()
        .filter(|n| !carol.contains_key(n))
        .collect();
    assert!(
        lost.is_empty(),
        "reported stored for the crashing client, not delivered again: {lost:?}"
    );
    for (n, id) in &crashed_saw {
        assert_eq!(carol.get(n), Some(id), "{n} came again with another id");
    }
    eprintln!(
        "crash test: {kills} kills, {next} sent, {} reported stored, {} delivered, {in_doubt} unanswered at a kill, 0 lost, 0 duplicates; \
         crashing client: {} read before a crash, all {} reported delivered again on the next login with the same ids",
        reported.len(),
        seen.len(),
        crashed_saw.len(),
        reported_carol.len(),
    );
}

/// Read every stored push waiting for `client`, acking each batch: (n → its `msg` id). None is
/// delivered twice to this acking client, and none was never sent (`next` were).
fn drain_acking(client: &mut Client, next: u64) -> std::collections::BTreeMap<u64, Value> {
    let bob = client;
    let mut seen = std::collections::BTreeMap::new();
    let mut i = 0;
    loop {
        // The ack answers after the backlog read before it: no push after it means no more.
        let ack_id = format!("a{i}");
        i += 1;
        bob.message(&ack_id, "bester.ack", &json!({"msgs": []}))
            .unwrap();
        let mut got = Vec::new();
        loop {
            let frame = bob.recv().unwrap().expect("a frame");
            if frame["header"]["id"] == json!(ack_id) {
                break;
            }
            assert_eq!(frame["header"]["stored"], true, "{frame}");
            got.push(frame);
        }
        if got.is_empty() {
            break;
        }
        let ids: Vec<Value> = got.iter().map(|p| p["header"]["msg"].clone()).collect();
        for p in &got {
            let n = p["data"]["n"].as_u64().unwrap();
            assert!(n < next, "{n} was never sent");
            let fresh = seen.insert(n, p["header"]["msg"].clone()).is_none();
            assert!(fresh, "{n} delivered twice to a client that acks");
        }
        let ack = bob
            .request(&format!("ack{i}"), "bester.ack", &json!({"msgs": ids}))
            .unwrap();
        assert_eq!(ack["data"]["acked"], got.len(), "{ack}");
    }
    seen
}
