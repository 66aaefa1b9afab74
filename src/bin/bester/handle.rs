//! `bester handle TYPE -- COMMAND ARGS…`: any program is a handler.
//!
//! `bester handle` connects to the broker as a handler (to `BESTER_SOCKET`, as besterd starts
//! handlers; so it is usable directly as a handler's `command`) and hands each request to
//! COMMAND:
//!
//! - **line mode** (the default): COMMAND runs as one long-lived filter. Each request is written
//!   to its standard input as one line of JSON (the whole request frame); it writes one line of
//!   JSON per request to its standard output, in the same order. `jq -c --unbuffered`, an awk
//!   script that calls `fflush()`, or a shell `while read` loop is a handler.
//! - **`--per-request`**: COMMAND runs once per request (CGI style), with the request's data as
//!   JSON on its standard input and the request's sender in its environment (`BESTER_USER`,
//!   `BESTER_SERVER`, `BESTER_SCOPE`, `BESTER_INFO`, `BESTER_REQUEST_KIND`); what it writes to its
//!   standard output is the answer. At most `--max-procs` run at once; the others wait.
//!
//! What COMMAND writes is the reply's data; with `--answers`, it is a whole answer
//! (`{"header":{"status":…,"command":…,"commandData":…},"payload":{"type":…,"data":…}}`, the request
//! token added here), so a program can also send to other users, to peer servers, to another
//! handler, or answer with an error.
//!
//! Every request gets exactly one answer, whatever COMMAND does: a line or an output that is not
//! JSON is `bad_handler_reply`; no answer within `--request-timeout` is `handler_timeout` (a line
//! filter is then killed and started again, and the requests behind the one it hung on are given
//! to the new one); COMMAND exiting before it answered is `handler_unavailable` (a line filter is
//! started again, after a pause that grows while it keeps dying at once). When the broker closes
//! the socket, the filter's standard input is closed, it gets a moment to exit, and `bester
//! handle` exits 0.
//!
//! This runs in its own process beside the broker: plain blocking I/O and threads.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Largest frame read from the broker, and largest answer taken from COMMAND.
pub const MAX_FRAME: usize = 16 << 20;
/// Largest answer taken from COMMAND (the broker's default frame limit).
pub const MAX_ANSWER: usize = 1 << 20;
/// How long a filter has to exit once its standard input is closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long a filter that closed its output has to exit by itself (to tell how it ended).
const EOF_GRACE: Duration = Duration::from_millis(500);
/// Longest pause before starting a filter that keeps dying at once.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A filter that lived this long is not "dying at once".
const STABLE: Duration = Duration::from_secs(1);

/// How `bester handle` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The handler type (for messages; the broker names it in `BESTER_TYPE`).
    pub kind: String,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// One process per request instead of one filter.
    pub per_request: bool,
    /// COMMAND writes whole answers, not only the reply's data.
    pub answers: bool,
    /// How long COMMAND has to answer one request.
    pub timeout: Duration,
    /// Most processes at once with `per_request`.
    pub max_procs: usize,
    /// The broker's socket (default: `BESTER_SOCKET`).
    pub socket: Option<PathBuf>,
}

/// A request from the broker.
#[derive(Debug, Clone)]
struct Request {
    /// Its token, echoed in the answer.
    token: String,
    /// Its payload type.
    kind: String,
    /// The whole frame.
    frame: Value,
}

/// What COMMAND gave for one request.
enum Output {
    /// Its bytes (a line, or everything written).
    Text(Vec<u8>),
    /// More than [`MAX_ANSWER`] bytes.
    TooLarge,
}

enum Event {
    Request(Request),
    BrokerGone(String),
    /// A line from filter `generation`.
    Line(u64, Output),
    /// Filter `generation` closed its standard output.
    FilterEof(u64),
    /// A per-request process finished.
    Done(String, Result<(std::process::ExitStatus, Output), String>),
}

/// Run until the broker closes the socket (`Ok`: exit 0). `Err`: why it could not go on.
pub fn run(options: Options) -> Result<(), String> {
    let path = match &options.socket {
        Some(path) => path.clone(),
        None => std::env::var_os("BESTER_SOCKET")
            .map(PathBuf::from)
            .ok_or("BESTER_SOCKET is not set: give --socket, or run under besterd")?,
    };
    let stream = UnixStream::connect(&path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let writer = stream
        .try_clone()
        .map_err(|e| format!("cannot use the socket: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let reader_tx = tx.clone();
    thread::spawn(move || read_broker(stream, reader_tx));
    let mut adapter = Adapter {
        name: program_name(&options.command),
        options,
        writer,
        tx,
    };
    if adapter.options.per_request {
        adapter.per_request(rx)
    } else {
        adapter.line_mode(rx)
    }
}

/// The program's file name, for messages.
fn program_name(command: &[OsString]) -> String {
    command
        .first()
        .map(|p| {
            std::path::Path::new(p)
                .file_name()
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Read frames from the broker until it closes the socket.
fn read_broker(mut stream: UnixStream, tx: Sender<Event>) {
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut len) {
            let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the broker closed the socket".to_string()
            } else {
                format!("reading from the broker: {e}")
            };
            let _ = tx.send(Event::BrokerGone(why));
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            let why = format!("the broker sent a frame of {len} bytes, over {MAX_FRAME}");
            let _ = tx.send(Event::BrokerGone(why));
            return;
        }
        let mut body = vec![0u8; len];
        if let Err(e) = stream.read_exact(&mut body) {
            let _ = tx.send(Event::BrokerGone(format!("reading from the broker: {e}")));
            return;
        }
        let Ok(frame) = serde_json::from_slice::<Value>(&body) else {
            eprintln!("bester handle: a frame from the broker is not JSON; ignored");
            continue;
        };
        let header = &frame["header"];
        match header["kind"].as_str() {
            Some("request" | "login") => {}
            // Reports follow a refused answer: the broker also answered the client.
            Some("report") if header["status"] == "error" => {
                eprintln!(
                    "bester handle: the broker refused an answer: {}",
                    frame["payload"]["data"]["error"].as_str().unwrap_or("?")
                );
                continue;
            }
            _ => continue,
        }
        let (Some(token), Some(kind)) = (
            header["request"].as_str(),
            frame["payload"]["type"].as_str(),
        ) else {
            continue;
        };
        let request = Request {
            token: token.to_string(),
            kind: kind.to_string(),
            frame: frame.clone(),
        };
        if tx.send(Event::Request(request)).is_err() {
            return;
        }
    }
}

/// A reply with `data`.
fn reply(request: &Request, data: Value) -> Value {
    json!({"header":{"status":"ok","command":"reply","request":request.token},
           "payload":{"type":request.kind,"data":data}})
}

/// An error answer the broker passes to the client as it is.
fn error(request: &Request, code: &str, text: String) -> Value {
    json!({"header":{"status":"error","command":"reply","request":request.token},
           "payload":{"type":request.kind,"data":{"error":text,"code":code}}})
}

struct Adapter {
    options: Options,
    name: String,
    writer: UnixStream,
    tx: Sender<Event>,
}

impl Adapter {
    /// What its lines on standard error start with.
    fn prefix(&self) -> String {
        format!("bester handle[{}]", self.options.kind)
    }

    /// Send one answer to the broker. `Err`: the broker is gone.
    fn answer(&mut self, answer: &Value) -> Result<(), String> {
        let body = serde_json::to_vec(answer).expect("a Value serialises");
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        self.writer
            .write_all(&frame)
            .map_err(|e| format!("writing to the broker: {e}"))
    }

    /// The answer COMMAND's output makes for `request`.
    fn answer_of(&self, request: &Request, output: Output) -> Value {
        let text = match output {
            Output::TooLarge => {
                let text = format!(
                    "the {} command's answer is over {MAX_ANSWER} bytes",
                    self.name
                );
                return error(request, "bad_handler_reply", text);
            }
            Output::Text(text) => text,
        };
        let value = match serde_json::from_slice::<Value>(&text) {
            Ok(value) => value,
            Err(e) => {
                let why = e.to_string();
                let why = why.rfind(" at line ").map_or(&*why, |at| &why[..at]);
                let text = format!("the {} command's answer is not JSON: {why}", self.name);
                return error(request, "bad_handler_reply", text);
            }
        };
        if !self.options.answers {
            return reply(request, value);
        }
        match value {
            Value::Object(mut answer) if answer.get("header").is_some_and(Value::is_object) => {
                answer["header"]["request"] = Value::String(request.token.clone());
                Value::Object(answer)
            }
            _ => {
                let text = format!(
                    "the {} command's answer is not {{\"header\":{{…}},\"payload\":{{…}}}} (--answers)",
                    self.name
                );
                error(request, "bad_handler_reply", text)
            }
        }
    }

    fn timed_out(&self, request: &Request) -> Value {
        let text = format!(
            "the {} command did not answer within {} s",
            self.name,
            self.options.timeout.as_secs_f64()
        );
        error(request, "handler_timeout", text)
    }

    fn gone(&self, request: &Request, how: &str) -> Value {
        let text = format!("the {} command {how} before answering", self.name);
        error(request, "handler_unavailable", text)
    }

    /// One long-lived filter, one line per request, answers in order.
    fn line_mode(&mut self, rx: Receiver<Event>) -> Result<(), String> {
        let mut filter: Option<Filter> = None;
        let mut generation = 0u64;
        // Requests given to the filter (or waiting for one), oldest first, with their deadlines.
        let mut inflight: VecDeque<(Request, Instant)> = VecDeque::new();
        let mut start_at = Some(Instant::now());
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = Instant::now();
            if start_at.is_some_and(|at| at <= now) {
                start_at = None;
                generation += 1;
                match Filter::start(&self.options.command, generation, &self.tx) {
                    Ok(started) => {
                        for (request, deadline) in &mut inflight {
                            *deadline = now + self.options.timeout;
                            started.give(request);
                        }
                        filter = Some(started);
                    }
                    Err(e) => {
                        eprintln!("{}: cannot start {}: {e}", self.prefix(), self.name);
                        while let Some((request, _)) = inflight.pop_front() {
                            let text = format!("cannot start the {} command: {e}", self.name);
                            self.answer(&error(&request, "handler_unavailable", text))?;
                        }
                        start_at = Some(now + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let wake = [inflight.front().map(|(_, d)| *d), start_at]
                .into_iter()
                .flatten()
                .min();
            let event = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match rx.recv() {
                    Ok(event) => Some(event),
                    Err(_) => return Ok(()),
                },
            };
            match event {
                Some(Event::Request(request)) => {
                    if let Some(filter) = &filter {
                        filter.give(&request);
                    }
                    inflight.push_back((request, Instant::now() + self.options.timeout));
                }
                Some(Event::Line(g, output)) if g == generation => match inflight.pop_front() {
                    Some((request, _)) => {
                        let answer = self.answer_of(&request, output);
                        self.answer(&answer)?;
                    }
                    None => eprintln!(
                        "{}: the {} command wrote a line no request asked for; ignored",
                        self.prefix(),
                        self.name
                    ),
                },
                Some(Event::FilterEof(g)) if g == generation => {
                    let Some(old) = filter.take() else { continue };
                    let (how, lived) = old.stop(EOF_GRACE);
                    eprintln!("{}: the {} command {how}", self.prefix(), self.name);
                    if let Some((request, _)) = inflight.pop_front() {
                        self.answer(&self.gone(&request, &how))?;
                    }
                    if lived >= STABLE {
                        backoff = Duration::from_millis(100);
                    }
                    start_at = Some(
                        Instant::now()
                            + if lived >= STABLE {
                                Duration::ZERO
                            } else {
                                backoff
                            },
                    );
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Some(Event::Line(..) | Event::FilterEof(_) | Event::Done(..)) => {}
                Some(Event::BrokerGone(why)) => {
                    eprintln!("{}: {why}; exiting", self.prefix());
                    if let Some(filter) = filter.take() {
                        filter.stop(EXIT_GRACE);
                    }
                    return Ok(());
                }
                None => {
                    // The oldest request's deadline passed (or it is time to start a filter).
                    let now = Instant::now();
                    if inflight.front().is_some_and(|(_, d)| *d <= now) {
                        let (request, _) = inflight.pop_front().expect("checked");
                        self.answer(&self.timed_out(&request))?;
                        if let Some(old) = filter.take() {
                            old.stop(Duration::ZERO);
                            eprintln!(
                                "{}: the {} command hung on a request; started again",
                                self.prefix(),
                                self.name
                            );
                            start_at = Some(now);
                        }
                    }
                }
            }
        }
    }

    /// One process per request, at most `max_procs` at once.
    fn per_request(&mut self, rx: Receiver<Event>) -> Result<(), String> {
        let mut waiting: VecDeque<Request> = VecDeque::new();
        let mut running: HashMap<String, (Request, u32, Instant)> = HashMap::new();
        loop {
            while running.len() < self.options.max_procs
                && let Some(request) = waiting.pop_front()
            {
                match spawn_one(&self.options.command, &request, &self.tx) {
                    Ok(pid) => {
                        let deadline = Instant::now() + self.options.timeout;
                        running.insert(request.token.clone(), (request, pid, deadline));
                    }
                    Err(e) => {
                        let text = format!("cannot start the {} command: {e}", self.name);
                        self.answer(&error(&request, "handler_unavailable", text))?;
                    }
                }
            }
            let now = Instant::now();
            let wake = running.values().map(|(_, _, d)| *d).min();
            let event = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match rx.recv() {
                    Ok(event) => Some(event),
                    Err(_) => return Ok(()),
                },
            };
            match event {
                Some(Event::Request(request)) => waiting.push_back(request),
                Some(Event::Done(token, result)) => {
                    // A process killed for its deadline was answered then.
                    let Some((request, _, _)) = running.remove(&token) else {
                        continue;
                    };
                    let answer = match result {
                        Ok((status, output)) if status.success() => {
                            self.answer_of(&request, output)
                        }
                        Ok((status, _)) => self.gone(&request, &exited(status)),
                        Err(e) => self.gone(&request, &format!("failed ({e})")),
                    };
                    self.answer(&answer)?;
                }
                Some(Event::BrokerGone(why)) => {
                    eprintln!("{}: {why}; exiting", self.prefix());
                    for (_, pid, _) in running.values() {
                        kill(*pid);
                    }
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    let now = Instant::now();
                    let late: Vec<String> = running
                        .iter()
                        .filter(|(_, (_, _, d))| *d <= now)
                        .map(|(t, _)| t.clone())
                        .collect();
                    for token in late {
                        let (request, pid, _) = running.remove(&token).expect("listed");
                        kill(pid);
                        self.answer(&self.timed_out(&request))?;
                    }
                }
            }
        }
    }
}

/// How a process ended, for messages.
fn exited(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid this process started and has not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Read everything `from` writes, up to [`MAX_ANSWER`] bytes.
fn read_bounded(from: impl Read) -> std::io::Result<Output> {
    let mut out = Vec::new();
    let mut limited = from.take(MAX_ANSWER as u64 + 1);
    limited.read_to_end(&mut out)?;
    if out.len() > MAX_ANSWER {
        // Drain the rest, so the process is not stuck writing.
        let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
        return Ok(Output::TooLarge);
    }
    Ok(Output::Text(out))
}

/// Start COMMAND for one request; its thread reports [`Event::Done`]. The process id.
fn spawn_one(command: &[OsString], request: &Request, tx: &Sender<Event>) -> Result<u32, String> {
    let from = &request.frame["header"]["from"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("BESTER_USER", text(&from["user"]))
        .env("BESTER_SERVER", text(&from["server"]))
        .env("BESTER_SCOPE", text(&request.frame["header"]["scope"]))
        .env(
            "BESTER_REQUEST_KIND",
            text(&request.frame["header"]["kind"]),
        )
        .env(
            "BESTER_INFO",
            from.get("info").map(Value::to_string).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = child.id();
    let mut data = request.frame["payload"]
        .get("data")
        .cloned()
        .unwrap_or(Value::Null)
        .to_string()
        .into_bytes();
    data.push(b'\n');
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let token = request.token.clone();
    let tx = tx.clone();
    thread::spawn(move || {
        // Written from a thread of its own: a program that does not read must not stop us reading.
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let output = read_bounded(stdout);
        let _ = writer.join();
        let result = match (output, child.wait()) {
            (Ok(output), Ok(status)) => Ok((status, output)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        let _ = tx.send(Event::Done(token, result));
    });
    Ok(pid)
}

/// A running line filter.
struct Filter {
    child: Child,
    lines: Sender<Vec<u8>>,
    started: Instant,
}

impl Filter {
    /// Start COMMAND; its lines come as [`Event::Line`] of `generation`.
    fn start(command: &[OsString], generation: u64, tx: &Sender<Event>) -> std::io::Result<Filter> {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (lines, queued) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || write_lines(stdin, queued));
        let tx = tx.clone();
        thread::spawn(move || read_lines(stdout, generation, tx));
        Ok(Filter {
            child,
            lines,
            started: Instant::now(),
        })
    }

    /// Give it a request (as one line).
    fn give(&self, request: &Request) {
        let mut line = serde_json::to_vec(&request.frame).expect("a Value serialises");
        line.push(b'\n');
        let _ = self.lines.send(line);
    }

    /// Close its standard input, wait up to `grace` for it to exit, then kill it. How it ended,
    /// and how long it lived.
    fn stop(mut self, grace: Duration) -> (String, Duration) {
        let lived = self.started.elapsed();
        drop(self.lines);
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (exited(status), lived),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        ("closed its output and was killed".into(), lived)
    }
}

fn write_lines(mut stdin: ChildStdin, lines: Receiver<Vec<u8>>) {
    for line in lines {
        if stdin.write_all(&line).and_then(|_| stdin.flush()).is_err() {
            return;
        }
    }
}

/// Read lines of at most [`MAX_ANSWER`] bytes; a longer one is [`Output::TooLarge`].
fn read_lines(stdout: std::process::ChildStdout, generation: u64, tx: Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_ANSWER as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::FilterEof(generation));
                return;
            }
            Ok(_) => {}
        }
        let output = if line.last() == Some(&b'\n') {
            line.pop();
            Output::Text(line)
        } else if line.len() > MAX_ANSWER {
            // Skip to the end of that line.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).unwrap_or(0) == 0 {
                let _ = tx.send(Event::Line(generation, Output::TooLarge));
                let _ = tx.send(Event::FilterEof(generation));
                return;
            }
            Output::TooLarge
        } else {
            // The last line, without a newline.
            Output::Text(line)
        };
        if tx.send(Event::Line(generation, output)).is_err() {
            return;
        }
    }
}
