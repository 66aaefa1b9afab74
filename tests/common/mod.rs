//! Test harness: start the real `besterd` binary on an ephemeral loopback port with real handler
//! processes, wait for its ready file (polling with a deadline, no fixed sleeps), and stop it with
//! SIGTERM when the test ends. Each broker gets its own temporary directory for config, users,
//! sockets and log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use besterd::client::Client;
use serde_json::Value;

/// How long anything in a test may take before it is a failure.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `command = [...]` for an example handler, by path from the repository root.
pub fn handler(program: &str, script: &str) -> String {
    format!(
        "command = [{:?}, {:?}]",
        program,
        repo().join(script).display().to_string()
    )
}

/// The handlers most tests use: Python echo and chat, Node upper, the faulty test handler.
pub fn standard_handlers() -> String {
    format!(
        "[handlers.echo]\n{}\n[handlers.chat]\n{}\n[handlers.upper]\n{}\n[handlers.faulty]\n{}\n",
        handler("python3", "handlers/python/echo.py"),
        handler("python3", "handlers/python/chat.py"),
        handler("node", "handlers/node/upper.js"),
        handler("python3", "tests/handlers/faulty.py"),
    )
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Broker {
    /// Start with the standard handlers and these extra `[server]` keys.
    pub fn start(server_keys: &str) -> Broker {
        Broker::start_with(
            server_keys,
            &standard_handlers(),
            &[
                ("alice", "alice-pw"),
                ("bob", "bob-pw"),
                ("carol", "carol-pw"),
            ],
        )
    }

    /// Start with explicit `[server]` keys, handler tables and users.
    pub fn start_with(server_keys: &str, handlers: &str, users: &[(&str, &str)]) -> Broker {
        Broker::launch("test", "127.0.0.1:0", server_keys, handlers, users)
    }

    /// Start a server named `name` on `listen` with these `[server]` keys, further tables
    /// (handlers, peers) and users.
    pub fn launch(
        name: &str,
        listen: &str,
        server_keys: &str,
        tables: &str,
        users: &[(&str, &str)],
    ) -> Broker {
        Broker::launch_with(name, listen, server_keys, tables, users, &Launch::default())
    }

    /// [`Broker::launch`] with extra environment, a wrapper command, or without waiting for the
    /// ready file.
    pub fn launch_with(
        name: &str,
        listen: &str,
        server_keys: &str,
        tables: &str,
        users: &[(&str, &str)],
        how: &Launch,
    ) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        for (user, password) in users {
            add_user(&dir.path().join("users.json"), user, password);
        }
        let config = format!(
            "[server]\nname = {name:?}\nlisten = {listen:?}\nusers = {:?}\nruntime_dir = {:?}\n{server_keys}\n{tables}",
            dir.path().join("users.json").display().to_string(),
            dir.path().join("run").display().to_string(),
        );
        std::fs::write(dir.path().join("besterd.toml"), config).unwrap();
        let ready = dir.path().join("ready");
        let log = std::fs::File::create(dir.path().join("besterd.log")).unwrap();
        // BESTERD_BIN: another build of the daemon (the load generator compares builds).
        let program = how.program.clone().map(Into::into).unwrap_or_else(|| {
            std::env::var_os("BESTERD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_besterd").into())
        });
        let mut command = match how.wrapper.split_first() {
            Some((wrapper, args)) => {
                let mut c = Command::new(wrapper);
                c.args(args).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let child = command
            .envs(how.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("besterd.toml"))
            .arg("--ready-file")
            .arg(&ready)
            .env(
                "RUST_LOG",
                how.env
                    .iter()
                    .find(|(k, _)| k == "RUST_LOG")
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var("BESTER_TEST_LOG").ok())
                    .unwrap_or_else(|| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start besterd");
        let mut broker = Broker {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        if !how.wait_ready {
            return broker;
        }
        broker.wait_ready();
        broker
    }

    /// Wait for the ready file and take the address from it.
    pub fn wait_ready(&mut self) {
        let broker = self;
        let ready = broker.dir.path().join("ready");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let first = text.lines().next().unwrap_or_default();
                broker.addr = first.trim().parse().expect("address in ready file");
                return;
            }
            if let Some(status) = broker.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "besterd exited with {status} before ready:\n{}",
                    broker.log()
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "besterd not ready in time:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of the `[[listeners]]` entry named `name` (from the ready file's
    /// `name kind address` lines).
    pub fn listener(&self, name: &str) -> SocketAddr {
        let text = std::fs::read_to_string(self.dir.path().join("ready")).expect("ready file");
        text.lines()
            .skip(1)
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(name)).then(|| words.nth(1).unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no listener {name:?} in the ready file:\n{text}"))
    }

    /// The configuration file (rewrite it, then SIGHUP, to test a reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("besterd.toml")
    }

    /// Wait (up to the deadline) for the daemon to exit by itself and return its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.reap("exit")
    }

    /// Wait (up to the deadline) for the daemon to end; past it, kill it and fail saying it did
    /// not `what`.
    fn reap(&mut self, what: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("besterd did not {what}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("besterd.log")).unwrap_or_default()
    }

    /// The user store path.
    pub fn users(&self) -> PathBuf {
        self.dir.path().join("users.json")
    }

    /// Log in; panics unless the login succeeds.
    pub fn login(&self, user: &str, password: &str) -> Client {
        let (client, reply) = Client::login(self.addr, user, password).expect("connect");
        assert_eq!(
            reply["header"]["status"], "ok",
            "login of {user} failed: {reply}"
        );
        client.set_timeout(Some(DEADLINE)).unwrap();
        client
    }

    /// A raw connection (not identified) with a read timeout.
    pub fn connect(&self) -> Client {
        let client = Client::connect(self.addr).expect("connect");
        client.set_timeout(Some(DEADLINE)).unwrap();
        client
    }

    /// Stop the daemon (SIGTERM) and start it again with the same configuration, user store
    /// and directory; waits for the new ready file.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "besterd did not stop cleanly");
        self.start_again();
    }

    /// Kill the daemon with SIGKILL (no drain, no cleanup) and start it again as
    /// [`Broker::restart`] does.
    pub fn kill_and_restart(&mut self) {
        signal(self.pid(), libc::SIGKILL);
        self.reap("die on SIGKILL");
        self.start_again();
    }

    fn start_again(&mut self) {
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("besterd.log"))
            .unwrap();
        let program =
            std::env::var_os("BESTERD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_besterd").into());
        let child = Command::new(program)
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--ready-file")
            .arg(&ready)
            .env(
                "RUST_LOG",
                std::env::var("BESTER_TEST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start besterd again");
        self.child = Some(child);
        self.wait_ready();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Stop with SIGTERM and return the exit status (waits at most the deadline, then kills).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        self.reap("stop on SIGTERM")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            if !std::thread::panicking() {
                assert!(
                    status.success(),
                    "besterd exited with {status}:\n{}",
                    self.log()
                );
            }
        }
    }
}

/// How [`Broker::launch_with`] starts the daemon.
pub struct Launch {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that runs besterd, e.g. `systemd-socket-activate -l ...`.
    pub wrapper: Vec<String>,
    /// Wait for the ready file before returning.
    pub wait_ready: bool,
    /// The binary to start (default: this build's, or `BESTERD_BIN`).
    pub program: Option<PathBuf>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            env: Vec::new(),
            wrapper: Vec::new(),
            wait_ready: true,
            program: None,
        }
    }
}

/// Send a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we own; no memory involved.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// `besterd user add NAME --password-stdin --users PATH`.
pub fn add_user(users: &Path, name: &str, password: &str) {
    let out = besterd_cmd(
        &[
            "user",
            "--users",
            users.to_str().unwrap(),
            "add",
            name,
            "--password-stdin",
        ],
        Some(password),
    );
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run the besterd binary with these arguments and optional stdin.
pub fn besterd_cmd(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_besterd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command that fails before reading stdin (e.g. `user add` of an existing user) may
        // have exited already: a broken pipe here is its outcome, which the caller checks.
        let _ = writeln!(input, "{text}");
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Poll `f` until it returns Some, or panic at the deadline.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The error code of a reply.
pub fn code(frame: &Value) -> &str {
    frame["data"]["code"].as_str().unwrap_or("<none>")
}

/// A well-behaved client beside a test's misbehaving one: each check is an echo round trip that
/// must be answered with exactly its own reply, with nothing unasked-for arriving before it.
pub struct Side {
    client: Client,
    n: u32,
}

impl Side {
    /// Log in on the broker's plain TCP port and check once.
    pub fn new(broker: &Broker, user: &str, password: &str) -> Side {
        let mut side = Side {
            client: broker.login(user, password),
            n: 0,
        };
        side.check();
        side
    }

    /// One echo round trip, answered exactly.
    pub fn check(&mut self) {
        self.n += 1;
        let id = format!("side-{}", self.n);
        self.client
            .message(&id, "echo", &serde_json::json!({"n": self.n}))
            .unwrap();
        let reply = self.client.recv().unwrap().expect("side connection open");
        assert_eq!(
            reply,
            serde_json::json!({"header":{"status":"ok","kind":"reply","id":id,"type":"echo"},"data":{"n": self.n}}),
            "the side client saw something other than its own answer"
        );
    }
}

/// A TCP connection from `source` (a loopback address such as 127.0.0.2) to `to` (IPv4).
pub fn connect_from(source: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(source, 0);
        let r = libc::bind(fd, (&raw const from).cast(), len);
        assert_eq!(r, 0, "bind {source}: {}", std::io::Error::last_os_error());
        let dest = sockaddr(*to.ip(), to.port());
        let r = libc::connect(fd, (&raw const dest).cast(), len);
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }
}

/// Write one frame (length prefix and JSON body).
pub fn send_frame(stream: &mut TcpStream, value: &Value) {
    let body = serde_json::to_vec(value).unwrap();
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).unwrap();
}

/// Read one frame; `None` on EOF.
pub fn recv_frame(stream: &mut TcpStream) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    Some(serde_json::from_slice(&body).unwrap())
}

/// Raise this process's own descriptor limit to its hard limit (at most 65,536): tests and the
/// load generator open many connections.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A hand-rolled peer server `name` linked to `server` over a real socket, after the handshake
/// with the shared `secret`, offering `features` when given: the link (reads time out after
/// [`DEADLINE`]) and the responder's last frame.
pub fn fake_peer(
    server: &Broker,
    name: &str,
    secret: &str,
    features: Option<&[&str]>,
) -> (Client, Value) {
    use besterd::federation::handshake::{self, Side, Transcript};
    use serde_json::json;
    let mut c = server.connect();
    let nonce = handshake::nonce();
    let mut identify = json!({"type":"server","name":name,"nonce":nonce});
    if let Some(features) = features {
        identify["features"] = json!(features);
    }
    c.send(&json!({"header":{"identify":identify}})).unwrap();
    let challenge = c.recv().unwrap().expect("a challenge");
    let responder = challenge["data"]["server"].as_str().unwrap().to_string();
    let theirs = challenge["data"]["nonce"].as_str().unwrap().to_string();
    let t = Transcript {
        initiator: name,
        responder: &responder,
        initiator_nonce: &nonce,
        responder_nonce: &theirs,
    };
    c.send(&json!({"header":{"proof": t.proof(secret.as_bytes(), Side::Initiator)}}))
        .unwrap();
    let answer = c.recv().unwrap().expect("an answer");
    c.set_timeout(Some(DEADLINE)).unwrap();
    (c, answer)
}

/// Wait until `server` reports exactly the peers `want` linked (`bester.whoami` of a session of
/// `user`, kept open while waiting).
pub fn wait_for_peers_as(server: &Broker, (user, password): (&str, &str), want: &[&str]) {
    let mut probe = server.login(user, password);
    let mut n = 0;
    eventually(&format!("peers {want:?} to be linked"), || {
        n += 1;
        let who = probe
            .request(&format!("w{n}"), "bester.whoami", &Value::Null)
            .unwrap();
        (who["data"]["peers"] == serde_json::json!(want)).then_some(())
    });
}

/// The next frame on a peer link that is not one of the other server's directory updates.
pub fn next_non_directory(c: &mut Client) -> Value {
    loop {
        let frame = c.recv().unwrap().expect("a frame");
        if frame["header"]["kind"] != "directory" {
            return frame;
        }
    }
}
