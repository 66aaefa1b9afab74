//! `besterd ctl`: send one request to a running daemon's control socket (`server/admin.rs`) and
//! print the answer — tables for people, or the daemon's JSON with `--json`. Blocking, with a
//! timeout; this runs in the command-line process, never in the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{CtlAction, CtlArgs};

/// The control socket's file name in the runtime directory.
pub const CTL_SOCKET: &str = "besterd.ctl";
/// How long to wait for the daemon.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the outcome of an upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

/// The runtime directory the packaged unit gives the daemon (`RuntimeDirectory=besterd`).
pub const PACKAGED_RUNTIME_DIR: &str = "/run/besterd";

/// Where the control socket is: `--socket`, else the configured runtime directory, else
/// `$RUNTIME_DIRECTORY`, else the packaged daemon's (`/run/besterd`) when its socket is there.
pub fn socket_path(args: &CtlArgs, runtime_dir: Option<&Path>) -> Result<PathBuf, String> {
    socket_path_in(args, runtime_dir, Path::new(PACKAGED_RUNTIME_DIR))
}

/// [`socket_path`] with the packaged runtime directory given.
fn socket_path_in(
    args: &CtlArgs,
    runtime_dir: Option<&Path>,
    packaged: &Path,
) -> Result<PathBuf, String> {
    if let Some(path) = &args.socket {
        return Ok(path.clone());
    }
    let dir = runtime_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from))
        .or_else(|| {
            // The unit sets RUNTIME_DIRECTORY for the daemon, not for an operator's shell.
            let socket = packaged.join(CTL_SOCKET);
            std::fs::symlink_metadata(&socket)
                .is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                })
                .then(|| packaged.to_path_buf())
        })
        .ok_or(format!(
            "cannot tell where the control socket is: give --socket (the daemon logs it at \
             start: \"control socket …\"), or --config with [server] runtime_dir, or set \
             RUNTIME_DIRECTORY; {}/{CTL_SOCKET} is not there",
            packaged.display()
        ))?;
    Ok(dir.join(CTL_SOCKET))
}

/// The request for an action.
pub fn request_for(action: &CtlAction) -> Value {
    match action {
        CtlAction::Status => json!({"command": "status"}),
        CtlAction::Kick { conn, user } => match (conn, user) {
            (Some(conn), _) => json!({"command": "kick", "conn": conn}),
            (None, user) => json!({"command": "kick", "user": user}),
        },
        CtlAction::Queues { user, limit } => match user {
            Some(user) => json!({"command": "queues", "user": user, "limit": limit}),
            None => json!({"command": "queues", "limit": limit}),
        },
        CtlAction::Reload => json!({"command": "reload"}),
        CtlAction::Drain => json!({"command": "drain"}),
        CtlAction::Upgrade => json!({"command": "upgrade"}),
    }
}

/// Send one request and read the one-line answer.
pub fn ask(socket: &Path, request: &Value) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    // An upgrade is answered once the new process serves; the daemon bounds that wait.
    let wait = if request["command"] == "upgrade" {
        UPGRADE_TIMEOUT
    } else {
        TIMEOUT
    };
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut text = request.to_string();
    text.push('\n');
    // A refused connection is answered and closed before the request is read: the answer is
    // still there to read when sending fails.
    let sent = stream.write_all(text.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if answer.is_empty() {
        return Err(match (sent, read) {
            (Err(e), _) => format!("cannot send to {}: {e}", socket.display()),
            (_, Err(e)) => format!("no answer from {}: {e}", socket.display()),
            _ => format!("{} closed without answering", socket.display()),
        });
    }
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// Run `besterd ctl`; the text to print, or why it failed.
pub fn run(args: &CtlArgs, runtime_dir: Option<&Path>) -> Result<String, String> {
    let socket = socket_path(args, runtime_dir)?;
    let answer = ask(&socket, &request_for(&args.action))?;
    if answer["ok"] != true {
        return Err(answer["error"]
            .as_str()
            .unwrap_or("the daemon refused")
            .to_string());
    }
    if args.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        ));
    }
    Ok(match &args.action {
        CtlAction::Status => status_text(&answer),
        CtlAction::Kick { .. } => {
            let kicked: Vec<&str> = answer["kicked"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("kicked {}\n", kicked.join(", "))
        }
        CtlAction::Queues { .. } => queues_text(&answer),
        CtlAction::Reload => "reloaded\n".to_string(),
        CtlAction::Drain => {
            "draining: no new clients; exiting once in-flight work is answered\n".to_string()
        }
        CtlAction::Upgrade => format!(
            "upgraded: pid {} serves; pid {} drains and exits\n",
            cell(&answer["pid"]),
            cell(&answer["old_pid"])
        ),
    })
}

/// `besterd ctl queues` as text: the store's totals, then one row per user shown (the deepest
/// queues, with a line saying so when more users hold one), then one per peer server.
pub fn queues_text(answer: &Value) -> String {
    let s = &answer["store"];
    let mut out = format!(
        "delivery store {}: {} messages, {} bytes ({} on disk)\n",
        cell(&s["path"]),
        cell(&s["messages"]),
        cell(&s["bytes"]),
        cell(&s["disk_bytes"])
    );
    let now = answer["now_ms"].as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = answer["queues"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    let age = q["oldest_ms"]
                        .as_u64()
                        .map_or("-".into(), |t| format!("{}s", now.saturating_sub(t) / 1000));
                    vec![
                        cell(&q["user"]),
                        cell(&q["messages"]),
                        cell(&q["bytes"]),
                        age,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        out.push_str(&table(&["user", "messages", "bytes", "oldest"], &rows));
    }
    if let Some(users) = answer["users"].as_u64().filter(|&n| n > rows.len() as u64) {
        out.push_str(&format!(
            "(the {} deepest of {users} users' queues: --limit N for more, --user NAME for one)\n",
            rows.len()
        ));
    }
    let servers: Vec<Vec<String>> = answer["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    let age = q["oldest_ms"]
                        .as_u64()
                        .map_or("-".into(), |t| format!("{}s", now.saturating_sub(t) / 1000));
                    let linked = match q["linked"].as_bool() {
                        Some(true) => "yes",
                        _ => "no",
                    };
                    vec![
                        cell(&q["server"]),
                        cell(&q["messages"]),
                        cell(&q["bytes"]),
                        age,
                        linked.to_string(),
                        q["in_flight"].as_u64().unwrap_or(0).to_string(),
                        q["refused"].as_u64().unwrap_or(0).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !servers.is_empty() {
        out.push_str(&table(
            &[
                "server",
                "messages",
                "bytes",
                "oldest",
                "linked",
                "in_flight",
                "refused",
            ],
            &servers,
        ));
    }
    out
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `status` as tables.
pub fn status_text(answer: &Value) -> String {
    let s = &answer["status"];
    let mut out = format!(
        "server {} (besterd {}) on {}, up {} s, health: {}\n\n",
        cell(&s["server"]),
        cell(&s["version"]),
        cell(&s["listen"]),
        cell(&s["uptime_s"]),
        cell(&s["health"]),
    );
    let roles: Vec<Vec<String>> = ["client", "handler", "peer"]
        .iter()
        .map(|r| {
            vec![
                r.to_string(),
                cell(&s["connections"][r]["now"]),
                cell(&s["connections"][r]["total"]),
            ]
        })
        .collect();
    out.push_str(&table(&["connections", "now", "total"], &roles));
    let t = &s["traffic"];
    out.push_str(&format!(
        "\nlogins: ok {}, failed {}, rate limited {}\nframes in {} out {}; bytes in {} out {}\n\
         messages: ok {}, error {}; slow consumers cut off: {}\n",
        cell(&s["logins"]["ok"]),
        cell(&s["logins"]["failed"]),
        cell(&s["logins"]["rate_limited"]),
        cell(&t["frames_in"]),
        cell(&t["frames_out"]),
        cell(&t["bytes_in"]),
        cell(&t["bytes_out"]),
        cell(&s["messages"]["ok"]),
        cell(&s["messages"]["error"]),
        cell(&s["slow_consumers"]),
    ));
    let errors: Vec<String> = s["errors"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(code, n)| format!("{code} {n}"))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "errors: {}\n\n",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    ));
    let empty = Vec::new();
    let handlers: Vec<Vec<String>> = s["handlers"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|h| {
            let r = &h["requests"];
            vec![
                cell(&h["type"]),
                format!(
                    "{}/{}",
                    cell(&h["processes_connected"]),
                    cell(&h["processes_configured"])
                ),
                cell(&h["restarts"]),
                cell(&h["in_flight"]),
                cell(&r["ok"]),
                cell(&r["error"]),
                cell(&r["timeout"]),
                cell(&r["unavailable"]),
                cell(&r["busy"]),
                cell(&h["latency_us"]["p50"]),
                cell(&h["latency_us"]["p99"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "handler",
            "processes",
            "restarts",
            "in flight",
            "ok",
            "error",
            "timeout",
            "unavailable",
            "busy",
            "p50 µs",
            "p99 µs",
        ],
        &handlers,
    ));
    let peers: Vec<Vec<String>> = s["peers"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| {
            vec![
                cell(&p["name"]),
                cell(&p["state"]),
                format!("{} s", cell(&p["for_s"])),
                cell(&p["sent"]),
                cell(&p["acked"]),
                cell(&p["failed"]),
                cell(&p["ack_latency_us"]["p50"]),
            ]
        })
        .collect();
    if !peers.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["peer", "state", "for", "sent", "acked", "failed", "p50 µs"],
            &peers,
        ));
    }
    let conns: Vec<Vec<String>> = answer["connections"]["connections"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| {
            vec![
                cell(&c["id"]),
                cell(&c["user"]),
                cell(&c["address"]),
                format!("{} s", cell(&c["idle_s"])),
                cell(&c["in_flight"]),
                format!("{}/{}", cell(&c["frames_in"]), cell(&c["frames_out"])),
                format!("{}/{}", cell(&c["bytes_in"]), cell(&c["bytes_out"])),
                cell(&c["queued_output_bytes"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "conn",
            "user",
            "address",
            "idle",
            "in flight",
            "frames in/out",
            "bytes in/out",
            "queued",
        ],
        &conns,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_daemons_socket_is_found_without_flags() {
        let args = |socket: Option<&str>| CtlArgs {
            socket: socket.map(PathBuf::from),
            config: None,
            json: false,
            action: CtlAction::Status,
        };
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: this test alone reads or writes RUNTIME_DIRECTORY in this process.
        unsafe { std::env::remove_var("RUNTIME_DIRECTORY") };
        let nothing = socket_path_in(&args(None), None, dir.path()).unwrap_err();
        assert!(
            nothing.starts_with("cannot tell where the control socket is"),
            "{nothing}"
        );
        // A plain file is not the daemon's socket.
        std::fs::write(dir.path().join(CTL_SOCKET), "").unwrap();
        assert!(socket_path_in(&args(None), None, dir.path()).is_err());
        std::fs::remove_file(dir.path().join(CTL_SOCKET)).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(dir.path().join(CTL_SOCKET)).unwrap();
        assert_eq!(
            socket_path_in(&args(None), None, dir.path()).unwrap(),
            dir.path().join(CTL_SOCKET)
        );
        // What is configured or given comes first.
        assert_eq!(
            socket_path_in(&args(None), Some(Path::new("/x")), dir.path()).unwrap(),
            Path::new("/x").join(CTL_SOCKET)
        );
        assert_eq!(
            socket_path_in(&args(Some("/y.ctl")), None, dir.path()).unwrap(),
            Path::new("/y.ctl")
        );
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["a", "bb"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "a    bb\nxxx  y\nz\n");
    }

    #[test]
    fn kick_requests_name_conn_or_user() {
        let by_conn = CtlAction::Kick {
            conn: Some("3.7".into()),
            user: None,
        };
        assert_eq!(
            request_for(&by_conn),
            json!({"command": "kick", "conn": "3.7"})
        );
        let by_user = CtlAction::Kick {
            conn: None,
            user: Some("alice".into()),
        };
        assert_eq!(
            request_for(&by_user),
            json!({"command": "kick", "user": "alice"})
        );
    }
}
