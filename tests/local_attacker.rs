//! A local attacker: another user on the same machine (played by `nobody`, through `setpriv`)
//! who can write in a shared directory, plant files, links and sockets, and connect to Unix
//! sockets. Each test sets up what such a user could do before or while the real daemon (or
//! `besterd user`, run as root) works, and checks that nothing of theirs is followed, used, run or
//! answered. These tests need root (as the rest of the suite does in CI).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::{Broker, DEADLINE, add_user, besterd_cmd, code, eventually, handler, signal};
use serde_json::json;

const NOBODY: u32 = 65534;

/// The system's Python, which any user can run (a `python3` on root's `PATH` may not be).
const ATTACKER_PYTHON: &str = "/usr/bin/python3";

/// Run `argv` as the attacker (`nobody`, no groups).
fn as_nobody(argv: &[&str]) -> Output {
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(argv)
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{argv:?} as nobody failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Start `argv` as the attacker in the background.
fn spawn_as_nobody(argv: &[&str]) -> Child {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(argv)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv")
}

/// A base directory others can enter (0755) with `shared/` in it, world-writable with the sticky
/// bit, as `/tmp` is.
fn base_with_shared() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    (base, shared)
}

/// A root-owned file the attacker wants: `(mode, uid, content)` are checked afterwards.
fn victim_file(dir: &Path) -> PathBuf {
    let victim = dir.join("victim");
    fs::write(&victim, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
    victim
}

fn assert_victim_untouched(victim: &Path) {
    let meta = fs::metadata(victim).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "victim's mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "victim's owner");
    assert_eq!(
        fs::read(victim).unwrap(),
        b"root:$6$secret:19000:0:99999:7:::\n",
        "victim's content"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn user_add(store: &Path, name: &str) -> Output {
    besterd_cmd(
        &[
            "user",
            "--users",
            store.to_str().unwrap(),
            "add",
            name,
            "--password-stdin",
        ],
        Some("a-password"),
    )
}

/// `besterd user add`, run as root, in a store directory the service account owns: a lock file
/// the service account replaced by a symbolic or hard link to a root-only file is refused, and
/// the file it points to keeps its mode, owner and content (before: chmod 0600 + chown to the
/// service account, i.e. root's file handed over). A planted temp file is removed, not followed.
#[test]
fn user_add_refuses_a_linked_lock_file() {
    let (base, _) = base_with_shared();
    let victim = victim_file(base.path());
    let state = base.path().join("state");
    fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let store = state.join("users.json");
    let lock = state.join("users.json.lock");

    as_nobody(&["ln", "-s", victim.to_str().unwrap(), lock.to_str().unwrap()]);
    let out = user_add(&store, "alice");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!("besterd: refusing {}: is a symbolic link\n", lock.display())
    );
    assert_victim_untouched(&victim);
    assert!(!store.exists());

    // A hard link (made here by root: the kernel's protected_hardlinks stops `nobody` linking
    // root's files, but not every system sets it).
    fs::remove_file(&lock).unwrap();
    fs::hard_link(&victim, &lock).unwrap();
    let out = user_add(&store, "alice");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "besterd: refusing {}: has 2 hard links (expected 1)\n",
            lock.display()
        )
    );
    assert_victim_untouched(&victim);

    // A lock file of a third user.
    fs::remove_file(&lock).unwrap();
    fs::write(&lock, b"").unwrap();
    std::os::unix::fs::chown(&lock, Some(12345), Some(12345)).unwrap();
    let out = user_add(&store, "alice");
    assert_eq!(
        stderr(&out),
        format!(
            "besterd: refusing {}: is owned by uid 12345, not uid 0 or {NOBODY}\n",
            lock.display()
        )
    );

    // A temp file planted under the store's temp prefix, linked to the victim: removed (the link,
    // not its target) by the next writer, which writes its own.
    fs::remove_file(&lock).unwrap();
    let planted = state.join(".users.json.tmp-0000000000000000");
    as_nobody(&[
        "ln",
        "-s",
        victim.to_str().unwrap(),
        planted.to_str().unwrap(),
    ]);
    let out = user_add(&store, "alice");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs::symlink_metadata(&planted).is_err(),
        "planted temp removed"
    );
    assert_victim_untouched(&victim);
    // What root created is given to the store's owner, 0600.
    for file in [&store, &lock] {
        let meta = fs::symlink_metadata(file).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.uid(), NOBODY, "{}", file.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            file.display()
        );
    }
}

/// A daemon started by hand (for paths the harness does not let a test choose).
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(config: &Path, ready: &Path, log: &Path) -> Daemon {
        let out = fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_besterd"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--ready-file",
            ])
            .arg(ready)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for it to exit by itself; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("besterd kept running:\n{}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > DEADLINE {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A configuration for `dir` with the given runtime directory and handler tables.
fn write_config(dir: &Path, runtime_dir: &Path, tables: &str) -> PathBuf {
    let users = dir.join("users.json");
    if !users.exists() {
        add_user(&users, "alice", "alice-pw");
    }
    let config = dir.join("besterd.toml");
    fs::write(
        &config,
        format!(
            "[server]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\nusers = {:?}\nruntime_dir = {:?}\n{tables}",
            users.display().to_string(),
            runtime_dir.display().to_string(),
        ),
    )
    .unwrap();
    config
}

/// The ready file is written through a temp file: one the attacker planted as a link to a root
/// file is neither followed nor used (before: `ready.tmp` was a fixed name, written through the
/// link, i.e. root's file overwritten with the broker's address).
#[test]
fn the_ready_files_temp_is_not_followed() {
    let (base, shared) = base_with_shared();
    let victim = victim_file(base.path());
    let private = base.path().join("private");
    fs::create_dir(&private).unwrap();
    let ready = shared.join("ready");
    let old_temp = shared.join("ready.tmp");
    as_nobody(&[
        "ln",
        "-s",
        victim.to_str().unwrap(),
        old_temp.to_str().unwrap(),
    ]);
    let config = write_config(&private, &private.join("run"), "");
    let daemon = Daemon::spawn(&config, &ready, &private.join("log"));
    let text = eventually("the ready file", || fs::read_to_string(&ready).ok());
    assert!(text.starts_with("127.0.0.1:"), "{text:?}\n{}", daemon.log());
    assert!(
        !fs::symlink_metadata(&ready)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_victim_untouched(&victim);
    // The planted link is left where it was, unused.
    assert!(
        fs::symlink_metadata(&old_temp)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// `serve` with a handler run from `{examples}`, and a marker the attacker's planted Python
/// package would create (as root) if it were ever imported.
fn examples_config(dir: &Path, runtime_dir: &Path) -> PathBuf {
    write_config(
        dir,
        runtime_dir,
        "[handlers.echo]\ncommand = [\"python3\", \"{examples}/echo.py\"]\n",
    )
}

/// Plant, as the attacker, Python modules where the examples go that create `marker` when
/// imported: `<run>/examples/json.py` (Python puts the script's directory first on `sys.path`, so
/// this shadows the standard library's `json`, which the `bester` package the examples import
/// imports, whatever besterd writes there itself) and `<run>/examples/bester/__init__.py` (the
/// package, should besterd not write its own over it).
fn plant_modules(run: &Path, marker: &Path) {
    let examples = run.join("examples");
    let package = examples.join("bester");
    as_nobody(&["mkdir", "-p", package.to_str().unwrap()]);
    let payload = run.parent().unwrap().join("payload.py");
    fs::write(
        &payload,
        format!(
            "open({:?}, \"w\").write(\"pwned\")\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    fs::set_permissions(&payload, fs::Permissions::from_mode(0o644)).unwrap();
    for module in [examples.join("json.py"), package.join("__init__.py")] {
        as_nobody(&["cp", payload.to_str().unwrap(), module.to_str().unwrap()]);
    }
}

/// A runtime directory another user created first (with a Python package planted where the
/// examples go): `serve` refuses to start, exit 78, naming the directory and its owner, and the
/// planted code never runs (before: besterd chmod-ed it 0700, wrote the examples into it and ran
/// them as root, importing the attacker's modules).
#[test]
fn a_runtime_dir_another_user_created_is_refused() {
    let (base, shared) = base_with_shared();
    let run = shared.join("run");
    let marker = shared.join("marker");
    as_nobody(&["mkdir", "-m", "0777", run.to_str().unwrap()]);
    plant_modules(&run, &marker);
    let private = base.path().join("private");
    fs::create_dir(&private).unwrap();
    let config = examples_config(&private, &run);
    let mut daemon = Daemon::spawn(&config, &private.join("ready"), &private.join("log"));
    assert_eq!(daemon.exit_code(), Some(78), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "cannot start: refusing {}: is owned by uid {NOBODY}, not by this process's uid 0",
            run.display()
        )),
        "{}",
        daemon.log()
    );
    assert!(!marker.exists(), "the attacker's code ran");
    let mode = fs::metadata(&run).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "nothing of theirs is changed either");
}

/// A runtime directory path the attacker made a symbolic link to a directory of their choice:
/// refused, and the target keeps its mode (before: chmod 0700 through the link, and the
/// daemon's sockets went wherever it pointed).
#[test]
fn a_symlinked_runtime_dir_is_refused() {
    let (base, shared) = base_with_shared();
    let target = base.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let run = shared.join("run");
    as_nobody(&["ln", "-s", target.to_str().unwrap(), run.to_str().unwrap()]);
    let private = base.path().join("private");
    fs::create_dir(&private).unwrap();
    let config = examples_config(&private, &run);
    let mut daemon = Daemon::spawn(&config, &private.join("ready"), &private.join("log"));
    assert_eq!(daemon.exit_code(), Some(78), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "cannot start: refusing {}: is a symbolic link",
            run.display()
        )),
        "{}",
        daemon.log()
    );
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written there"
    );
}

/// Our own runtime directory, but writable by others (they may have planted files in it):
/// refused. A runtime directory inside a directory others can write without the sticky bit
/// (they could rename ours away and put theirs in its place): refused, naming that directory.
#[test]
fn a_runtime_dir_others_can_write_is_refused() {
    let (base, shared) = base_with_shared();
    let private = base.path().join("private");
    fs::create_dir(&private).unwrap();

    let run = shared.join("loose");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
    let marker = shared.join("marker");
    plant_modules(&run, &marker);
    let config = examples_config(&private, &run);
    let mut daemon = Daemon::spawn(&config, &private.join("ready"), &private.join("log"));
    assert_eq!(daemon.exit_code(), Some(78), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "cannot start: refusing {}: is writable by group or others (mode 0777)",
            run.display()
        )),
        "{}",
        daemon.log()
    );
    assert!(!marker.exists(), "the attacker's code ran");

    let open = base.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let config = examples_config(&private, &open.join("run"));
    let mut daemon = Daemon::spawn(&config, &private.join("ready"), &private.join("log2"));
    assert_eq!(daemon.exit_code(), Some(78), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "cannot start: refusing {}: is writable by group or others without the sticky bit \
             (mode 0777)",
            open.display()
        )),
        "{}",
        daemon.log()
    );
}

/// A Python client that connects to `socket` and reports what it saw: `closed` if the broker
/// hangs up at once, else the first frame it is sent (a request meant for a real handler).
const SQUATTER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
print("connected", flush=True)
try:
    head = s.recv(4)
except socket.timeout:
    head = None
print("closed" if head == b"" else "got a frame", flush=True)
"#;

/// A process of another user connects to a handler socket (its mode loosened by hand, as a
/// misconfigured `socket =` path or tmpfiles rule could): the broker hangs up on it at once,
/// says so in the log, and the real handler keeps serving every request (before: it became a
/// handler link of the type and was sent other users' requests). The socket itself is 0600.
#[test]
fn a_handler_socket_refuses_other_users() {
    let tables = format!(
        "[handlers.echo]\n{}\n",
        handler("python3", "handlers/python/echo.py")
    );
    let broker = Broker::start_with("", &tables, &[("alice", "alice-pw")]);
    let run = broker.dir.path().join("run");
    let socket = run.join("echo.sock");
    let mode = fs::symlink_metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "handler sockets are created 0600");
    for (path, mode) in [(broker.dir.path(), 0o711), (run.as_path(), 0o711)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();

    let squatters: Vec<Child> = (0..3)
        .map(|_| spawn_as_nobody(&[ATTACKER_PYTHON, "-c", SQUATTER, socket.to_str().unwrap()]))
        .collect();
    eventually("the refusals in the log", || {
        broker
            .log()
            .contains(&format!(
                "handler=echo refused a connection from uid {NOBODY} (pid "
            ))
            .then_some(())
    });
    let mut alice = broker.login("alice", "alice-pw");
    for n in 0..20 {
        let reply = alice
            .request(&n.to_string(), "echo", &json!({ "n": n }))
            .unwrap();
        assert_eq!(reply["data"], json!({ "n": n }), "{reply}");
    }
    for squatter in squatters {
        let out = squatter.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "connected\nclosed\n",
            "the broker hung up on the other user"
        );
    }
    let log = broker.log();
    assert!(
        log.contains(&format!(
            "handler=echo refused a connection from uid {NOBODY} (pid "
        )) && log.contains(
            "): only uid 0 (root, this daemon's) may connect (handlers.echo.uid allows another \
             user); 2 refused so far"
        ),
        "{log}"
    );
    assert!(
        !log.contains("3 refused so far"),
        "only powers of two are logged"
    );
}

/// A Python listener on `socket` that answers any request with a forged reply and says whether
/// it was ever dialled.
const IMPOSTOR: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
s.settimeout(float(sys.argv[2]))
try:
    c, _ = s.accept()
except socket.timeout:
    print("never dialled", flush=True)
    sys.exit(0)
n = struct.unpack("<I", c.recv(4))[0]
body = b""
while len(body) < n:
    body += c.recv(n - len(body))
req = json.loads(body)
reply = json.dumps({"header": {"status": "0", "command": "reply"}, "payload": {"type": "d", "data": "forged"}}).encode()
c.sendall(struct.pack("<I", len(reply)) + reply)
print("dialled", flush=True)
"#;

/// A `connect =` socket that another user created (the real handler was not running): it is not
/// dialled, and the request is answered `handler_unavailable` saying whose socket it is (before:
/// the attacker was sent the request and their forged answer went back to the client). With
/// `handlers.d.uid` naming that user, the same socket is dialled.
#[test]
fn a_connect_socket_of_another_user_is_not_dialled() {
    let (base, shared) = base_with_shared();
    let socket = shared.join("d.sock");
    let impostor = spawn_as_nobody(&[
        ATTACKER_PYTHON,
        "-c",
        IMPOSTOR,
        socket.to_str().unwrap(),
        "3",
    ]);
    eventually("the impostor's socket", || socket.exists().then_some(()));
    let tables = format!(
        "[handlers.d]\nconnect = {:?}\n",
        socket.display().to_string()
    );
    let broker = Broker::start_with("", &tables, &[("alice", "alice-pw")]);
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice.request("1", "d", &json!(null)).unwrap();
    assert_eq!(code(&reply), "handler_unavailable", "{reply}");
    assert_eq!(
        reply["data"]["error"],
        format!(
            "the \"d\" handler could not be reached: cannot connect to {}: the socket is owned by \
             uid {NOBODY}, not uid 0 (root, this daemon's)",
            socket.display()
        ),
        "{reply}"
    );
    let out = impostor.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "listening\nnever dialled\n"
    );
    drop(alice);
    drop(broker);

    // The configured uid may serve the type.
    fs::remove_file(&socket).unwrap();
    let impostor = spawn_as_nobody(&[
        ATTACKER_PYTHON,
        "-c",
        IMPOSTOR,
        socket.to_str().unwrap(),
        "20",
    ]);
    eventually("the handler's socket", || socket.exists().then_some(()));
    let tables = format!(
        "[handlers.d]\nconnect = {:?}\nuid = {NOBODY}\n",
        socket.display().to_string()
    );
    let broker = Broker::start_with("", &tables, &[("alice", "alice-pw")]);
    let mut alice = broker.login("alice", "alice-pw");
    let reply = alice.request("1", "d", &json!(null)).unwrap();
    assert_eq!(reply["data"], "forged", "{reply}");
    let out = impostor.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "listening\ndialled\n");
    drop(base);
}

/// A `static_dir` holding a symbolic link to a file outside it (here the user store): the
/// configuration is refused (check-config and serve exit 78), naming the link (before: the
/// store was served to anyone at `/users.json`).
#[test]
fn static_dir_links_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    add_user(&users, "alice", "alice-pw");
    let web = dir.path().join("web");
    fs::create_dir(&web).unwrap();
    fs::write(web.join("index.html"), "<p>hi</p>").unwrap();
    let link = web.join("users.json");
    symlink(&users, &link).unwrap();
    let config = dir.path().join("besterd.toml");
    fs::write(
        &config,
        format!(
            "[server]\nusers = {:?}\n[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\nstatic_dir = {:?}\n",
            users.display().to_string(),
            web.display().to_string()
        ),
    )
    .unwrap();
    let out = besterd_cmd(
        &["check-config", "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "invalid configuration {}:\n  listeners[0].static_dir: {}: is a symbolic link \
             (static_dir serves only regular files in the directory itself)\n",
            config.display(),
            link.display()
        )
    );
    let out = besterd_cmd(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

/// Peer secrets others can read are warned about by check-config: inline in a configuration
/// file others can read, or in a `secret_file` others can read; nothing when both are 0600.
#[test]
fn readable_peer_secrets_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("besterd.toml");
    let secret = dir.path().join("peer.secret");
    fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    fs::write(
        &config,
        format!(
            "[server]\nname = \"a\"\n[peers.b]\nsecret = \"0123456789abcdef\"\n[peers.c]\nsecret_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let check = || {
        let out = besterd_cmd(
            &["check-config", "--config", config.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr(&out)
    };
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
    let origin = config.display();
    assert_eq!(
        check(),
        format!(
            "{origin}: warning: peers.b.secret: {origin} is readable by group or others (mode \
             0644): they can read the peer secret; make it 0600 (or 0640 for a trusted group), or \
             move the secret to secret_file\n\
             {origin}: warning: peers.c.secret_file: {} is readable by group or others (mode \
             0640): they can read the peer secret; make it 0600 (or 0640 for a trusted group)\n",
            secret.display()
        )
    );
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(check(), "");
}

/// `serve` clears its dumpable flag: no core dump, and processes of its own user (its handlers)
/// cannot ptrace it or read its memory. Seen from outside: the kernel gives a non-dumpable
/// process's `/proc/PID` files to root, so for a daemon run as `nobody` they are root's.
#[test]
fn serve_is_not_dumpable() {
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = base.path().join("d");
    fs::create_dir(&dir).unwrap();
    let config = write_config(&dir, &dir.join("run"), "");
    for entry in fs::read_dir(&dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let ready = dir.join("ready");
    let mut child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_besterd"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--ready-file",
        ])
        .arg(&ready)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the ready file", || ready.exists().then_some(()));
    let status = fs::metadata(format!("/proc/{}/status", child.id())).unwrap();
    signal(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    assert_eq!(
        status.uid(),
        0,
        "/proc/PID of a non-dumpable process is root's"
    );
}
