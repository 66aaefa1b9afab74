//! Reload on SIGHUP, against the real binary: each row of the reload matrix (see
//! `src/server/reload.rs`) that can be observed from outside.

mod common;

use common::{Broker, code, eventually, handler, signal};
use serde_json::{Value, json};

const USERS: &[(&str, &str)] = &[("alice", "alice-pw")];

fn table(kind: &str, program: &str, script: &str, extra: &str) -> String {
    format!("[handlers.{kind}]\n{}\n{extra}\n", handler(program, script))
}

/// Rewrite the configuration (the harness's `[server]` head, with `listen` if given, plus
/// `server_keys` and `rest`) and send SIGHUP; wait until the reload is applied.
fn reload(broker: &Broker, listen: Option<&str>, server_keys: &str, rest: &str) {
    let text = std::fs::read_to_string(broker.config_path()).unwrap();
    // The harness writes [server], name, listen, users and runtime_dir first; keep them.
    let mut head: Vec<String> = text.lines().take(5).map(str::to_string).collect();
    if let Some(listen) = listen {
        head[2] = format!("listen = {listen:?}");
    }
    let new = format!("{}\n{server_keys}\n{rest}", head.join("\n"));
    std::fs::write(broker.config_path(), new).unwrap();
    let before = broker.log().matches("reload applied: ").count();
    signal(broker.pid(), libc::SIGHUP);
    eventually("the reload to be applied", || {
        (broker.log().matches("reload applied: ").count() > before).then_some(())
    });
}

fn pid_of(reply: &Value) -> Option<i32> {
    (reply["header"]["status"] == "ok")
        .then(|| reply["data"]["pid"].as_i64().map(|p| p as i32))
        .flatten()
}

fn gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    unsafe { libc::kill(pid, 0) != 0 }
}

#[test]
fn handlers_added_removed_and_restarted_in_turn_limits_live_listener_needs_restart() {
    let faulty = table("faulty", "python3", "tests/handlers/faulty.py", "");
    let echo = table("echo", "python3", "handlers/python/echo.py", "");
    let broker = Broker::start_with("", &format!("{faulty}{echo}"), USERS);
    let mut alice = broker.login("alice", "alice-pw");
    let old_pid = pid_of(
        &alice
            .request("p0", "faulty", &json!({"action":"pid"}))
            .unwrap(),
    )
    .expect("a pid");
    let echo_pid = {
        let log = broker.log();
        let line = log
            .lines()
            .find(|l| l.contains("handler=echo#0 started: pid "))
            .expect("echo started")
            .to_string();
        line.split(" started: pid ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse::<i32>()
            .unwrap()
    };
    // A slow request is in flight on the old faulty process when the reload comes.
    alice
        .message(
            "slow",
            "faulty",
            &json!({"action":"stall","seconds":1,"n":1}),
        )
        .unwrap();
    eventually("the slow request to reach the handler", || {
        broker.log().contains(": stall").then_some(())
    });

    // faulty changes (env), echo goes, extra comes, the request timeout shrinks, the listener
    // address changes.
    let faulty2 = table(
        "faulty",
        "python3",
        "tests/handlers/faulty.py",
        "env = { RELOADED = \"1\" }",
    );
    let extra = table("extra", "python3", "tests/handlers/faulty.py", "");
    reload(
        &broker,
        Some("127.0.0.1:1"),
        "request_timeout_ms = 600",
        &format!("{faulty2}{extra}"),
    );
    let log = broker.log();
    assert!(
        log.contains("reload: server.listen changed; it needs a restart"),
        "{log}"
    );
    assert!(
        log.contains("reload applied: handlers added extra; handlers removed echo; handlers restarted faulty; applied server.request_timeout_ms; needs a restart: server.listen"),
        "{log}"
    );

    // The slow request gets its real answer from the old process.
    let slow = alice.recv().unwrap().expect("the slow answer");
    assert_eq!(slow["header"]["id"], "slow");
    assert_eq!(slow["header"]["status"], "ok", "{slow}");

    // faulty is never refused while it is restarted, and ends up served by a new process only.
    let mut n = 0;
    let new_pid = eventually("a new faulty process to serve", || {
        n += 1;
        let reply = alice
            .request(&format!("p{n}"), "faulty", &json!({"action":"pid"}))
            .unwrap();
        let pid = pid_of(&reply).unwrap_or_else(|| panic!("refused during the restart: {reply}"));
        (pid != old_pid).then_some(pid)
    });
    eventually("the old faulty process to exit", || {
        gone(old_pid).then_some(())
    });
    for i in 0..5 {
        let reply = alice
            .request(&format!("q{i}"), "faulty", &json!({"action":"pid"}))
            .unwrap();
        assert_eq!(pid_of(&reply), Some(new_pid), "only the new process serves");
    }

    // echo is gone: unknown_type, and its process exited.
    let reply = alice.request("e", "echo", &json!({})).unwrap();
    assert_eq!(code(&reply), "unknown_type", "{reply}");
    eventually("the echo process to exit", || gone(echo_pid).then_some(()));

    // extra is started and served.
    let mut n = 0;
    eventually("the extra handler", || {
        n += 1;
        let reply = alice
            .request(&format!("x{n}"), "extra", &json!({"action":"echo","x":1}))
            .unwrap();
        (reply["header"]["status"] == "ok").then_some(())
    });

    // The new request timeout is in force.
    let reply = alice
        .request("h", "faulty", &json!({"action":"hang"}))
        .unwrap();
    assert_eq!(code(&reply), "handler_timeout");
    assert_eq!(
        reply["data"]["error"],
        "the \"faulty\" handler did not answer within 600 ms"
    );
    // Still listening where it was.
    let mut again = broker.login("alice", "alice-pw");
    let ping = again.request("p", "bester.ping", &json!(null)).unwrap();
    assert_eq!(ping["header"]["status"], "ok");
}

#[test]
fn peers_added_are_linked_and_removed_ones_unlinked() {
    const SECRET: &str = "0123456789abcdef-reload";
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &format!("[peers.a]\nsecret = {SECRET:?}\n"),
        USERS,
    );
    let a = Broker::launch("a", "127.0.0.1:0", "", "", USERS);
    let mut alice = a.login("alice", "alice-pw");
    let peers = |client: &mut besterd::client::Client, n: &mut u32| {
        *n += 1;
        client
            .request(&format!("w{n}"), "bester.whoami", &json!(null))
            .unwrap()["data"]["peers"]
            .clone()
    };
    let mut n = 0;
    assert_eq!(peers(&mut alice, &mut n), json!([]));
    reload(
        &a,
        None,
        "",
        &format!("[peers.b]\naddress = \"{}\"\nsecret = {SECRET:?}\n", b.addr),
    );
    eventually("the link to b", || {
        (peers(&mut alice, &mut n) == json!(["b"])).then_some(())
    });
    reload(&a, None, "", "");
    eventually("the link to b to go", || {
        (peers(&mut alice, &mut n) == json!([])).then_some(())
    });
    assert!(a.log().contains("reload: peer=b removed; unlinking"));
}

/// `[delivery]` needs a restart: the store's thread took its path and limits when it opened the
/// file. A reload that changes them says so, and the running store and limits stay, as
/// `besterd ctl queues` and the next push show.
#[test]
fn a_changed_delivery_store_needs_a_restart_and_the_running_one_stays() {
    let mail = format!(
        "{}offline = \"store\"\n",
        table("mail", "python3", "tests/handlers/greeter.py", "")
    );
    let users = &[("alice", "alice-pw"), ("bob", "bob-pw")];
    let broker = Broker::start_with("", &format!("{mail}[delivery]\nmax_per_user = 1\n"), users);
    let queues = || -> Value {
        let socket = broker.dir.path().join("run/besterd.ctl");
        let out = common::besterd_cmd(
            &[
                "ctl",
                "--socket",
                socket.to_str().unwrap(),
                "--json",
                "queues",
            ],
            None,
        );
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let path = queues()["store"]["path"].clone();
    assert!(path.as_str().is_some_and(|p| p.ends_with(".db")), "{path}");
    let mut alice = broker.login("alice", "alice-pw");
    let send = |alice: &mut besterd::client::Client, id: &str| {
        alice.request(id, "mail", &json!({"to": ["bob"]})).unwrap()["header"].clone()
    };
    assert_eq!(send(&mut alice, "m0")["stored"], json!(["bob"]));

    let elsewhere = broker.dir.path().join("other.db");
    reload(
        &broker,
        None,
        "",
        &format!("{mail}[delivery]\nmax_per_user = 5\npath = {elsewhere:?}\n"),
    );
    let log = broker.log();
    assert!(
        log.contains("reload: delivery changed; it needs a restart (the running value stays)"),
        "{log}"
    );
    assert!(
        log.contains("reload applied: needs a restart: delivery"),
        "{log}"
    );
    // Still the limit of 1 and the first file.
    let header = send(&mut alice, "m1");
    assert_eq!(header["refused"][0]["code"], "queue_full", "{header}");
    let q = queues();
    assert_eq!(q["store"]["path"], path, "{q}");
    assert_eq!(
        q["queues"],
        json!([{"user":"bob","messages":1,"bytes":q["queues"][0]["bytes"],"oldest_ms":q["queues"][0]["oldest_ms"]}]),
        "{q}"
    );
    assert!(!elsewhere.exists(), "no store was opened at {elsewhere:?}");
}
