//! The length prefix counts bytes of the UTF-8 body, not characters (PROTOCOL.md §1), against the
//! real server: the byte count is answered, a character count breaks the stream as documented.

mod common;

use common::Broker;
use serde_json::json;

#[test]
fn length_prefix_counts_bytes_not_characters() {
    let broker = Broker::start("");
    let body = r#"{"header":{"scope":"client","id":"u"},"payload":{"type":"echo","data":"€😀"}}"#;
    assert_eq!((body.chars().count(), body.len()), (76, 81));

    let mut client = broker.login("alice", "alice-pw");
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    client.send_raw(&frame).unwrap();
    assert_eq!(
        client.recv().unwrap().unwrap(),
        json!({"header":{"status":"ok","kind":"reply","id":"u","type":"echo"},"data":"€😀"})
    );

    // Counting characters cuts the body inside 😀; its last bytes become the next length prefix.
    let mut frame = (body.chars().count() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    client.send_raw(&frame).unwrap();
    assert_eq!(
        client.recv().unwrap().unwrap(),
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":"frame body is not valid UTF-8 (at byte 74)","code":"invalid_utf8"}})
    );
    let prefix = u32::from_le_bytes([0x98, 0x80, b'"', b'}']);
    assert_eq!(
        client.recv().unwrap().unwrap(),
        json!({"header":{"status":"error","kind":"reply"},"data":{"error":format!("frame of {prefix} bytes is over the limit of 1048576 bytes"),"code":"frame_too_large"}})
    );
    assert!(client.recv().unwrap().is_none(), "then the server closes");
}
