//! Feature negotiation against the real binary: identify with and without `features`, unknown
//! names, malformed offers, a server that turns compression off, WebSocket (which compresses by
//! its own extension), and federation links that negotiate in their handshake — including a
//! dial to a server from before negotiation, which refuses the offer and is dialled again
//! without it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use besterd::net::blocking::{Connection, Scheme};
use common::{Broker, DEADLINE, eventually, handler};
use serde_json::{Value, json};

fn broker(server_keys: &str) -> Broker {
    let tables = format!(
        "[handlers.echo]\n{}\n[[listeners]]\nname = \"ws\"\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n",
        handler("python3", "handlers/python/echo.py")
    );
    Broker::start_with(server_keys, &tables, &[("alice", "alice-pw")])
}

fn identify(features: Option<Value>) -> Vec<u8> {
    let mut identify =
        json!({"type":"client","authentication":{"username":"alice","password":"alice-pw"}});
    if let Some(features) = features {
        identify["features"] = features;
    }
    serde_json::to_vec(&json!({"header":{"identify":identify}})).unwrap()
}

fn write_body(stream: &mut TcpStream, body: &[u8]) {
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).unwrap();
}

/// One frame body as sent; `None` at the end of the stream.
fn read_body(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    Some(body)
}

fn dial(broker: &Broker) -> TcpStream {
    let stream = TcpStream::connect(broker.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// The keys of an object, in the order sent.
fn keys(value: &Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn echo(stream: &mut TcpStream) {
    let msg =
        json!({"header":{"scope":"client","id":"e"},"payload":{"type":"echo","data":{"x":1}}});
    write_body(stream, &serde_json::to_vec(&msg).unwrap());
    let reply: Value = serde_json::from_slice(&read_body(stream).unwrap()).unwrap();
    assert_eq!(reply["data"], json!({"x":1}), "{reply}");
}

#[test]
fn a_client_that_offers_nothing_gets_the_reply_of_old() {
    let b = broker("");
    let mut s = dial(&b);
    write_body(&mut s, &identify(None));
    let reply: Value = serde_json::from_slice(&read_body(&mut s).unwrap()).unwrap();
    assert_eq!(reply["header"], json!({"status":"ok","kind":"reply"}));
    assert_eq!(
        keys(&reply["data"]),
        ["user", "server", "resume", "resume_expires"],
        "no features, no limits: {reply}"
    );
    echo(&mut s);
}

#[test]
fn a_client_that_offers_compress_gets_it_and_the_session_limits() {
    let b = broker("idle_timeout_ms = 120000\nmax_pending_per_connection = 64");
    let mut s = dial(&b);
    write_body(&mut s, &identify(Some(json!(["compress"]))));
    let body = read_body(&mut s).unwrap();
    assert_eq!(
        body[0], b'{',
        "the login reply carries a token: never compressed"
    );
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        keys(&reply["data"]),
        [
            "user",
            "server",
            "resume",
            "resume_expires",
            "features",
            "limits"
        ]
    );
    assert_eq!(reply["data"]["features"], json!(["compress"]));
    assert_eq!(
        reply["data"]["limits"],
        json!({"max_frame_bytes":1048576,"max_in_flight":64,"idle_timeout_ms":120000})
    );
    echo(&mut s);
}

#[test]
fn unknown_features_are_ignored_and_an_empty_offer_still_gets_limits() {
    let b = broker("");
    for offer in [
        json!(["teleport", "multiplex", "x-from-the-future"]),
        json!([]),
    ] {
        let mut s = dial(&b);
        write_body(&mut s, &identify(Some(offer.clone())));
        let reply: Value = serde_json::from_slice(&read_body(&mut s).unwrap()).unwrap();
        assert_eq!(reply["header"]["status"], "ok", "{offer}: {reply}");
        assert_eq!(reply["data"]["features"], json!([]), "{offer}: {reply}");
        assert_eq!(reply["data"]["limits"]["max_frame_bytes"], 1048576);
        echo(&mut s);
    }
    // Unknown names mixed with a known one: the known one is accepted.
    let mut s = dial(&b);
    write_body(&mut s, &identify(Some(json!(["x-new", "compress"]))));
    let reply: Value = serde_json::from_slice(&read_body(&mut s).unwrap()).unwrap();
    assert_eq!(reply["data"]["features"], json!(["compress"]));
}

#[test]
fn an_offer_that_is_not_a_list_of_names_is_refused_and_closed() {
    let b = broker("");
    for (offer, text) in [
        (
            json!("compress"),
            "header.identify.features: invalid type: string, expected a sequence",
        ),
        (
            json!([1]),
            "header.identify.features[0]: invalid type: integer, expected a string",
        ),
    ] {
        let mut s = dial(&b);
        write_body(&mut s, &identify(Some(offer)));
        let reply: Value = serde_json::from_slice(&read_body(&mut s).unwrap()).unwrap();
        assert_eq!(reply["data"]["code"], "invalid_message", "{reply}");
        assert_eq!(reply["data"]["error"], text);
        assert!(read_body(&mut s).is_none(), "closed");
    }
}

#[test]
fn compression_off_in_the_configuration_is_never_accepted() {
    let b = broker("compression = false");
    let mut s = dial(&b);
    write_body(&mut s, &identify(Some(json!(["compress"]))));
    let reply: Value = serde_json::from_slice(&read_body(&mut s).unwrap()).unwrap();
    assert_eq!(reply["data"]["features"], json!([]), "{reply}");
}

#[test]
fn websocket_sessions_are_not_given_compress_frames() {
    let b = broker("");
    let mut ws = Connection::connect(
        Scheme::Ws,
        b.listener("ws"),
        "127.0.0.1",
        None,
        Some(DEADLINE),
    )
    .unwrap();
    ws.send_body(&identify(Some(json!(["compress"])))).unwrap();
    let reply: Value = serde_json::from_slice(&ws.recv_body().unwrap().unwrap()).unwrap();
    assert_eq!(reply["header"]["status"], "ok", "{reply}");
    assert_eq!(
        reply["data"]["features"],
        json!([]),
        "a WebSocket compresses by its extension"
    );
}

const SECRET: &str = "secret-of-a-and-b";

fn peer_tables(name: &str, address: Option<std::net::SocketAddr>) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "[handlers.faulty]\n{}\n[peers.{name}]\nsecret = {SECRET:?}\n{address}",
        handler("python3", "tests/handlers/faulty.py")
    )
}

fn wait_for_log(broker: &Broker, line: &str) {
    eventually(&format!("{line:?} in the log"), || {
        broker.log().contains(line).then_some(())
    });
}

#[test]
fn federation_links_negotiate_compress_in_their_handshake() {
    let users = [("alice", "alice-pw")];
    let a = Broker::launch("a", "127.0.0.1:0", "", &peer_tables("b", None), &users);
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &peer_tables("a", Some(a.addr)),
        &users,
    );
    wait_for_log(&b, "peer=a features [\"compress\", \"stream\"]");
    wait_for_log(&a, "peer=b features [\"compress\", \"stream\"]");
    // The link carries traffic (compressed frames both ways: the request to a, its reply back).
    let mut alice = b.login("alice", "alice-pw");
    let text = "a longer chat line that repeats itself, ".repeat(50);
    let data = json!({"action":"to_servers","servers":["a"],"replies":true,"data":{"action":"echo","text":text}});
    let reply = alice.request("s", "faulty", &data).unwrap();
    assert_eq!(reply["header"]["servers"]["a"]["status"], "ok", "{reply}");
    assert_eq!(reply["data"]["a"]["text"], json!(text), "{reply}");
}

#[test]
fn a_peer_from_before_negotiation_is_dialled_again_without_an_offer() {
    // A responder of the original handshake: identify with a field it does not know is
    // refused as invalid_message (what an older besterd answers), then the connection closes.
    let old = TcpListener::bind("127.0.0.1:0").unwrap();
    let old_addr = old.local_addr().unwrap();
    let users = [("alice", "alice-pw")];
    let b = Broker::launch(
        "b",
        "127.0.0.1:0",
        "",
        &peer_tables("a", Some(old_addr)),
        &users,
    );
    let deadline = Instant::now() + DEADLINE;
    let mut identifies = Vec::new();
    while identifies.len() < 2 {
        assert!(Instant::now() < deadline, "redialled: {identifies:?}");
        let (mut s, _) = old.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let Some(body) = read_body(&mut s) else {
            continue;
        };
        let identify: Value = serde_json::from_slice(&body).unwrap();
        let offered = identify["header"]["identify"].get("features").is_some();
        identifies.push(identify);
        if offered {
            let refusal = json!({"header":{"status":"error","kind":"reply"},"data":{"error":"header.identify: unknown field `features`, expected one of `type`, `authentication`, `name`, `nonce`","code":"invalid_message"}});
            write_body(&mut s, &serde_json::to_vec(&refusal).unwrap());
        }
    }
    assert_eq!(
        identifies[0]["header"]["identify"]["features"],
        json!(["compress", "stream"])
    );
    assert_eq!(
        keys(&identifies[1]["header"]["identify"]),
        ["type", "name", "nonce"],
        "the original identify, as an old server reads it"
    );
    assert!(
        b.log()
            .contains("peer=a refused the features offered; dialling without them")
    );
}
