//! The handler half: serve the requests besterd hands a handler type. [`serve`] connects to
//! `BESTER_SOCKET` (as besterd starts handlers), calls the function for each request on a pool
//! of worker threads (so requests are served concurrently; answers go back as each is ready, each
//! naming its request), ignores reports, and returns `Ok(())` when besterd closes the socket (a
//! handler's `main` then exits 0).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use serde_json::{Value, json};

use crate::frame::{FrameDecoder, encode_frame};

/// Largest frame read from besterd.
const MAX_FRAME: usize = 16 << 20;

/// A request (or, for an auth handler, a login) as besterd sent it.
#[derive(Debug, Clone)]
pub struct Request {
    frame: Value,
}

impl Request {
    /// The request from its frame.
    pub fn new(frame: Value) -> Request {
        Request { frame }
    }

    /// The whole frame.
    pub fn frame(&self) -> &Value {
        &self.frame
    }

    /// Its token (echoed in the answer).
    pub fn token(&self) -> &str {
        self.frame["header"]["request"].as_str().unwrap_or_default()
    }

    /// The payload type.
    pub fn kind(&self) -> &str {
        self.frame["payload"]["type"].as_str().unwrap_or_default()
    }

    /// The payload data (`null` when there is none).
    pub fn data(&self) -> &Value {
        &self.frame["payload"]["data"]
    }

    /// The user who sent it, if a user did.
    pub fn user(&self) -> Option<&str> {
        self.frame["header"]["from"]["user"].as_str()
    }

    /// The session's authorisation data (`header.from.info`), if any.
    pub fn info(&self) -> Option<&Value> {
        self.frame["header"]["from"].get("info")
    }

    /// Whether it is a login for an auth handler to decide (its data is the client's
    /// `authentication` object).
    pub fn is_login(&self) -> bool {
        self.frame["header"]["kind"] == "login"
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Reply to the sender with this data.
    Reply(Value),
    /// An error the sender receives as it is.
    Error {
        /// A stable snake_case code.
        code: String,
        /// Text for people.
        text: String,
    },
    /// Deliver the payload to these users (the sender gets a delivery report).
    SendClients(Vec<String>, Value),
    /// Send the payload to these peer servers.
    SendServers(Vec<String>, Value),
    /// Pass the payload on to the handler of this type.
    SendHandler(String, Value),
    /// Accept a login as this user, with this authorisation data (auth handlers).
    Login {
        /// The session's user.
        user: String,
        /// Its `info`, an object of at most 4 KiB.
        info: Option<Value>,
    },
    /// Send the client to another server, with a token to log in there (`"mint"`: a resume
    /// token the server signs).
    Redirect {
        /// A `bester…://host:port` URL.
        url: String,
        /// The token, if any.
        token: Option<String>,
    },
    /// Send nothing.
    Nothing,
}

impl Answer {
    /// The frame answering `request`, or `None` for [`Answer::Nothing`].
    pub fn frame(&self, request: &Request) -> Option<Value> {
        let (status, command, command_data, kind, data) = match self {
            Answer::Nothing => return None,
            Answer::Reply(data) => ("ok", "reply", None, request.kind(), data.clone()),
            Answer::Error { code, text } => (
                "error",
                "reply",
                None,
                request.kind(),
                json!({"error": text, "code": code}),
            ),
            Answer::SendClients(users, data) => (
                "ok",
                "sendClients",
                Some(json!(users)),
                request.kind(),
                data.clone(),
            ),
            Answer::SendServers(servers, data) => (
                "ok",
                "sendServers",
                Some(json!(servers)),
                request.kind(),
                data.clone(),
            ),
            Answer::SendHandler(kind, data) => (
                "ok",
                "sendHandler",
                Some(json!(kind)),
                kind.as_str(),
                data.clone(),
            ),
            Answer::Login { user, info } => {
                let mut data = json!({ "user": user });
                if let Some(info) = info {
                    data["info"] = info.clone();
                }
                ("ok", "reply", None, request.kind(), data)
            }
            Answer::Redirect { url, token } => {
                let mut target = json!({ "url": url });
                if let Some(token) = token {
                    target["token"] = json!(token);
                }
                return Some(json!({
                    "header": {"status": "ok", "command": "redirect", "commandData": target,
                               "request": request.token()},
                }));
            }
        };
        let mut header = json!({"status": status, "command": command, "request": request.token()});
        if let Some(command_data) = command_data {
            header["commandData"] = command_data;
        }
        Some(json!({"header": header, "payload": {"type": kind, "data": data}}))
    }
}

/// Connect to `BESTER_SOCKET` and serve `handle` until besterd closes the socket.
pub fn serve<F>(handle: F) -> io::Result<()>
where
    F: Fn(&Request) -> Answer + Send + Sync + 'static,
{
    let path = std::env::var_os("BESTER_SOCKET").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "BESTER_SOCKET is not set: handlers are started by besterd",
        )
    })?;
    let workers = thread::available_parallelism().map_or(2, |n| n.get().max(2));
    serve_on(UnixStream::connect(path)?, workers, handle)
}

/// Serve `handle` on a connected socket with `workers` threads.
pub fn serve_on<F>(stream: UnixStream, workers: usize, handle: F) -> io::Result<()>
where
    F: Fn(&Request) -> Answer + Send + Sync + 'static,
{
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let handle = Arc::new(handle);
    // Bounded: a handler that falls behind stops reading, and besterd holds the rest.
    let (jobs, queue) = mpsc::sync_channel::<Request>(workers * 4);
    let queue = Arc::new(Mutex::new(queue));
    let pool: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (queue, writer, handle) = (queue.clone(), writer.clone(), handle.clone());
            thread::spawn(move || {
                loop {
                    let next = queue.lock().map(|q| q.recv());
                    let Ok(Ok(request)) = next else { return };
                    let Some(answer) = handle(&request).frame(&request) else {
                        continue;
                    };
                    let mut frame = Vec::new();
                    encode_frame(answer.to_string().as_bytes(), &mut frame);
                    let Ok(mut out) = writer.lock() else { return };
                    if out.write_all(&frame).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let result = read_requests(stream, &jobs);
    drop(jobs);
    for worker in pool {
        let _ = worker.join();
    }
    result
}

/// Read frames until end of stream, handing requests and logins to the workers.
fn read_requests(mut stream: UnixStream, jobs: &mpsc::SyncSender<Request>) -> io::Result<()> {
    let decoder = FrameDecoder::new(MAX_FRAME);
    let mut input = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some((used, body)) = decoder.decode(&input)? {
            let frame: Value = serde_json::from_slice(body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            input.drain(..used);
            let kind = frame["header"]["kind"].as_str().unwrap_or_default();
            if (kind == "request" || kind == "login") && jobs.send(Request::new(frame)).is_err() {
                return Ok(());
            }
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        input.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_protocols_frames() {
        let request = Request::new(json!({
            "header": {"kind": "request", "request": "7", "scope": "client",
                       "from": {"user": "alice", "server": "s"}},
            "payload": {"type": "echo", "data": {"x": 1}}}));
        assert_eq!(
            (request.token(), request.kind(), request.user()),
            ("7", "echo", Some("alice"))
        );
        assert_eq!(
            Answer::Reply(json!(1)).frame(&request).unwrap(),
            json!({"header":{"status":"ok","command":"reply","request":"7"},
                   "payload":{"type":"echo","data":1}})
        );
        assert_eq!(
            Answer::Error {
                code: "nope".into(),
                text: "no".into()
            }
            .frame(&request)
            .unwrap(),
            json!({"header":{"status":"error","command":"reply","request":"7"},
                   "payload":{"type":"echo","data":{"error":"no","code":"nope"}}})
        );
        assert_eq!(
            Answer::SendClients(vec!["bob".into()], json!("hi"))
                .frame(&request)
                .unwrap()["header"],
            json!({"status":"ok","command":"sendClients","request":"7","commandData":["bob"]})
        );
        assert_eq!(
            Answer::Redirect {
                url: "bester://h:1".into(),
                token: Some("mint".into())
            }
            .frame(&request)
            .unwrap(),
            json!({"header":{"status":"ok","command":"redirect",
                             "commandData":{"url":"bester://h:1","token":"mint"},"request":"7"}})
        );
        assert_eq!(Answer::Nothing.frame(&request), None);
    }
}
