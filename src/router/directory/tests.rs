//! The directory's rules, asserted on the frames the router sends.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::protocol::directory::parse_directory_frame;
use crate::protocol::groups::Recipients;
use crate::router::RouterConfig;

const fn conn(n: usize) -> ConnId {
    ConnId {
        slot: n,
        generation: n as u64,
    }
}

const LINK_B: ConnId = conn(50);
const WATCHER: ConnId = conn(1);

fn router(max_frame: usize) -> Router {
    let mut r = Router::new(RouterConfig {
        server: "a".into(),
        request_timeout: Duration::from_secs(5),
        max_chain_depth: 3,
        max_frame,
        login_timeout: Duration::from_secs(1),
        max_logins: 2,
    });
    r.set_directory(DirectoryConfig {
        enabled: true,
        max_entries_per_peer: 3,
    });
    r.add_peer("b");
    r.add_peer("c");
    r
}

fn frames(out: &mut Vec<Action>) -> Vec<(ConnId, Value)> {
    out.drain(..)
        .map(|a| match a {
            Action::Send { to, body } => (to, serde_json::from_slice(&body).unwrap()),
            other => panic!("not a send: {other:?}"),
        })
        .collect()
}

fn link_up(r: &mut Router, now: Instant) -> Vec<(ConnId, Value)> {
    let mut out = Vec::new();
    r.peer_up("b", LINK_B);
    r.directory_link_up(LINK_B, now, &mut out);
    frames(&mut out)
}

/// Feed a frame, as JSON, from b.
fn from_b(r: &mut Router, frame: Value, now: Instant) -> Vec<(ConnId, Value)> {
    let body = frame.to_string();
    let frame = parse_directory_frame(body.as_bytes()).unwrap().unwrap();
    let mut out = Vec::new();
    r.directory_frame(LINK_B, frame, now, &mut out);
    frames(&mut out)
}

fn update(seq: u64, part: Option<(u32, u32)>, data: Value) -> Value {
    let mut header = json!({"kind":"directory","server":"b","seq":seq});
    if let Some((p, n)) = part {
        header["part"] = json!(p);
        header["parts"] = json!(n);
    }
    json!({"header":header,"data":data})
}

fn watch(r: &mut Router, users: &[&str]) {
    r.client_identified(WATCHER, "alice", &mut Vec::new());
    let what = Recipients {
        users: users.iter().map(|s| s.to_string()).collect(),
        ..Recipients::default()
    };
    r.presence_subscribe(WATCHER, &what).unwrap();
}

fn pushes(list: Vec<(ConnId, Value)>) -> Vec<Value> {
    list.into_iter()
        .filter(|(to, _)| *to == WATCHER)
        .map(|(_, v)| v["data"].clone())
        .collect()
}

#[test]
fn a_new_link_gets_a_snapshot_in_parts_then_deltas() {
    let mut r = router(120);
    let now = Instant::now();
    let mut out = Vec::new();
    for (i, user) in ["ann", "bea", "cal", "dan"].iter().enumerate() {
        r.client_identified(conn(10 + i), user, &mut out);
    }
    let sent = link_up(&mut r, now);
    let bodies: Vec<Value> = sent
        .iter()
        .map(|(to, v)| {
            assert_eq!(*to, LINK_B);
            v.clone()
        })
        .collect();
    assert!(bodies.len() >= 2, "cut to the frame limit: {bodies:?}");
    let n = bodies.len() as u64;
    let mut users = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b["header"]["seq"], json!(i as u64 + 1));
        assert_eq!(b["header"]["part"], json!(i as u64 + 1));
        assert_eq!(b["header"]["parts"], json!(n));
        assert_eq!(b["header"]["server"], "a");
        assert!(b.to_string().len() <= 120);
        users.extend(b["data"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        users,
        [
            json!(["ann", 1]),
            json!(["bea", 1]),
            json!(["cal", 1]),
            json!(["dan", 1])
        ]
    );
    // A change is a delta with the next number, at the next flush; repeats are coalesced.
    r.client_identified(conn(20), "ann", &mut out);
    r.client_gone(conn(13), &mut out);
    r.directory_flush(now, &mut out);
    let deltas = frames(&mut out);
    let mut entries = Vec::new();
    for (i, (to, d)) in deltas.iter().enumerate() {
        assert_eq!(*to, LINK_B);
        assert_eq!(
            d["header"],
            json!({"kind":"directory","server":"a","seq":n + 1 + i as u64}),
            "a delta: no part"
        );
        entries.extend(d["data"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(entries, [json!(["ann", 2]), json!(["dan", 0])]);
    r.directory_flush(now, &mut out);
    assert!(out.is_empty(), "nothing new");
}

#[test]
fn entries_from_b_reach_watchers_and_go_with_the_link() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    watch(&mut r, &["bob", "bob@b", "carl@b"]);
    link_up(&mut r, now);
    let got = from_b(
        &mut r,
        update(1, Some((1, 1)), json!([["bob", 2, "away"]])),
        now,
    );
    let bob = json!({"user":"bob","server":"b","state":"online","connections":2,"status":"away"});
    assert_eq!(
        pushes(got),
        vec![bob.clone()],
        "one push, though watched twice"
    );
    assert_eq!(r.directory_server_of("bob"), Some("b"));
    let answer = r
        .presence_query(
            Some("alice"),
            &Recipients::users(vec!["bob".into(), "bob@b".into(), "zed@b".into()]),
        )
        .unwrap();
    let answer = serde_json::to_value(&answer).unwrap();
    assert_eq!(
        answer["users"],
        json!([bob, bob, {"user":"zed","server":"b","state":"offline","connections":0}])
    );
    let got = from_b(
        &mut r,
        update(2, None, json!([["carl", 1], ["bob", 1]])),
        now,
    );
    assert_eq!(
        pushes(got),
        [
            json!({"user":"bob","server":"b","state":"online","connections":1}),
            json!({"user":"carl","server":"b","state":"online","connections":1}),
        ]
    );
    let mut out = Vec::new();
    r.peer_down(LINK_B, &mut Vec::new());
    r.directory_link_down(LINK_B, &mut out);
    assert_eq!(
        pushes(frames(&mut out)),
        [
            json!({"user":"bob","server":"b","state":"offline","connections":0}),
            json!({"user":"carl","server":"b","state":"offline","connections":0}),
        ],
        "entries go at once with the link"
    );
    assert_eq!(r.directory_server_of("bob"), None);
    // A local bob is bob here.
    r.client_identified(conn(7), "bob", &mut out);
    assert_eq!(r.directory_server_of("bob"), None);
}

#[test]
fn a_peer_speaks_only_for_its_own_users() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    watch(&mut r, &["bob", "bob@c"]);
    link_up(&mut r, now);
    // b says it is c: nothing is taken.
    let forged = json!({"header":{"kind":"directory","server":"c","seq":1,"part":1,"parts":1},"data":[["bob",1]]});
    let got = from_b(&mut r, forged, now);
    assert_eq!(
        got,
        [(
            LINK_B,
            json!({"header":{"kind":"directory.error","status":"error","seq":1},"data":{"error":"peer \"b\" may announce only its own users, not those of \"c\"","code":"forged_origin"}})
        )]
    );
    assert_eq!(r.directory_server_of("bob"), None);
    // b names c's user: that entry is refused, b's own is taken.
    let got = from_b(
        &mut r,
        update(2, None, json!([["bob@c", 1], ["dee", 1]])),
        now,
    );
    assert_eq!(
        got,
        [(
            LINK_B,
            json!({"header":{"kind":"directory.error","status":"error","seq":2},"data":{"error":"peer \"b\" may announce only its own users, not \"bob@c\"","code":"forged_origin"}})
        )]
    );
    assert_eq!(r.directory.remote("bob", "c"), None);
    assert_eq!(r.directory.remote("dee", "b"), Some((1, None)));
}

#[test]
fn a_gap_asks_for_a_resync_and_the_snapshot_replaces_everything() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    link_up(&mut r, now);
    from_b(
        &mut r,
        update(1, Some((1, 1)), json!([["old", 1], ["kept", 1]])),
        now,
    );
    // Update 3 before 2: a resync is asked for, and deltas are ignored until the snapshot.
    let got = from_b(&mut r, update(3, None, json!([["new", 1]])), now);
    assert_eq!(
        got,
        [(LINK_B, json!({"header":{"kind":"directory.resync"}}))]
    );
    assert!(
        from_b(&mut r, update(4, None, json!([["new", 1]])), now).is_empty(),
        "asked once"
    );
    assert_eq!(r.directory.remote("new", "b"), None);
    assert_eq!(
        r.directory.remote("old", "b"),
        Some((1, None)),
        "stale until replaced"
    );
    let servers = r.directory_servers();
    assert!(!servers[0].in_sync);
    from_b(&mut r, update(5, Some((1, 2)), json!([["kept", 1]])), now);
    assert_eq!(
        r.directory.remote("old", "b"),
        Some((1, None)),
        "taken at the last part"
    );
    from_b(&mut r, update(6, Some((2, 2)), json!([["new", 3]])), now);
    assert_eq!(r.directory.remote("old", "b"), None);
    assert_eq!(r.directory.remote("new", "b"), Some((3, None)));
    assert!(r.directory_servers()[0].in_sync);
    // A part out of place is a gap too.
    let got = from_b(&mut r, update(7, Some((2, 2)), json!([])), now);
    assert_eq!(
        got,
        [(LINK_B, json!({"header":{"kind":"directory.resync"}}))]
    );
}

#[test]
fn entries_per_peer_are_bounded() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    link_up(&mut r, now);
    let got = from_b(
        &mut r,
        update(
            1,
            Some((1, 1)),
            json!([["u1", 1], ["u2", 1], ["u3", 1], ["u4", 1]]),
        ),
        now,
    );
    assert_eq!(got[0].1["data"]["code"], "limit_reached", "{got:?}");
    assert_eq!(r.directory_servers()[0].entries, 3);
    let got = from_b(
        &mut r,
        update(2, None, json!([["u1", 0], ["u5", 1], ["u6", 1]])),
        now,
    );
    assert_eq!(
        got[0].1["data"]["error"],
        "peer \"b\" announced more than 3 users (the most kept for one server)"
    );
    assert_eq!(
        r.directory_servers()[0].entries,
        3,
        "u1 left, u5 came, u6 refused"
    );
    assert_eq!(r.directory.remote("u6", "b"), None);
}

#[test]
fn resyncs_are_served_at_most_once_a_second() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    link_up(&mut r, now);
    let resync = json!({"header":{"kind":"directory.resync"}});
    assert!(from_b(&mut r, resync.clone(), now).is_empty(), "deferred");
    assert_eq!(r.directory_next_due(), Some(now + RESYNC_INTERVAL));
    let mut out = Vec::new();
    r.directory_flush(now + Duration::from_millis(500), &mut out);
    assert!(out.is_empty());
    r.directory_flush(now + RESYNC_INTERVAL, &mut out);
    let sent = frames(&mut out);
    assert_eq!(sent[0].1["header"]["part"], 1);
    assert_eq!(
        sent[0].1["header"]["seq"], 2,
        "numbers go on across snapshots"
    );
    assert_eq!(r.directory_next_due(), None);
}

#[test]
fn visibility_applies_to_remote_users() {
    let mut r = router(1 << 20);
    r.set_presence(crate::router::PresenceConfig {
        visible: crate::router::Visibility::None,
        ..Default::default()
    });
    r.client_identified(WATCHER, "alice", &mut Vec::new());
    let err = r
        .presence_subscribe(WATCHER, &Recipients::users(vec!["bob@b".into()]))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    assert!(
        r.presence_subscribe(WATCHER, &Recipients::users(vec!["alice@b".into()]))
            .is_ok(),
        "oneself on another server"
    );
}

#[test]
fn off_means_nothing_is_sent_or_taken() {
    let mut r = router(1 << 20);
    r.set_directory(DirectoryConfig::default());
    let now = Instant::now();
    assert!(link_up(&mut r, now).is_empty());
    assert!(from_b(&mut r, update(1, Some((1, 1)), json!([["bob", 1]])), now).is_empty());
    assert_eq!(r.directory_server_of("bob"), None);
}

#[test]
fn traffic_is_counted_per_peer_both_ways() {
    let mut r = router(1 << 20);
    let now = Instant::now();
    let sent_at_link_up: usize = {
        let mut out = Vec::new();
        r.peer_up("b", LINK_B);
        r.directory_link_up(LINK_B, now, &mut out);
        out.iter()
            .map(|a| match a {
                Action::Send { body, .. } => body.len(),
                other => panic!("not a send: {other:?}"),
            })
            .sum()
    };
    let body = update(1, Some((1, 1)), json!([["u1", 1]])).to_string();
    r.directory_received(LINK_B, body.len());
    let frame = parse_directory_frame(body.as_bytes()).unwrap().unwrap();
    let mut out = Vec::new();
    r.directory_frame(LINK_B, frame, now, &mut out);
    // A gap: the resync request is counted as sent.
    let gap = update(5, None, json!([])).to_string();
    r.directory_received(LINK_B, gap.len());
    let frame = parse_directory_frame(gap.as_bytes()).unwrap().unwrap();
    r.directory_frame(LINK_B, frame, now, &mut out);
    let resync: usize = out
        .iter()
        .map(|a| match a {
            Action::Send { body, .. } => body.len(),
            other => panic!("not a send: {other:?}"),
        })
        .sum();
    assert!(resync > 0, "a resync was asked for");
    let b = r
        .directory_servers()
        .into_iter()
        .find(|s| s.server == "b")
        .expect("b listed");
    assert_eq!(
        b.traffic,
        PeerTraffic {
            sent_frames: 2,
            sent_bytes: (sent_at_link_up + resync) as u64,
            received_frames: 2,
            received_bytes: (body.len() + gap.len()) as u64,
        }
    );
    // Kept after the link goes down: a figure since start.
    r.directory_link_down(LINK_B, &mut Vec::new());
    let b = r.directory_servers();
    assert_eq!(b[0].server, "b");
    assert_eq!(b[0].traffic.received_frames, 2);
}
