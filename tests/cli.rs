//! The command line: `besterd user ...`, `check-config`, exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{add_user, besterd_cmd};

#[test]
fn user_add_list_passwd_del() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let path = users.to_str().unwrap();
    add_user(&users, "bob", "pw-b");
    add_user(&users, "alice", "pw-a");
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the user store is private");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains("$argon2id$"),
        "passwords are stored as argon2id PHC strings"
    );
    assert!(!text.contains("pw-a") && !text.contains("pw-b"));

    let list = besterd_cmd(&["user", "--users", path, "list"], None);
    assert!(list.status.success());
    assert_eq!(String::from_utf8(list.stdout).unwrap(), "alice\nbob\n");

    let again = besterd_cmd(
        &["user", "--users", path, "add", "alice", "--password-stdin"],
        Some("x"),
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("alice"),
        "the error names the user"
    );

    let passwd = besterd_cmd(
        &[
            "user",
            "--users",
            path,
            "passwd",
            "alice",
            "--password-stdin",
        ],
        Some("new"),
    );
    assert!(
        passwd.status.success(),
        "{}",
        String::from_utf8_lossy(&passwd.stderr)
    );
    assert_ne!(
        std::fs::read_to_string(&users).unwrap(),
        text,
        "the hash changed"
    );

    let del = besterd_cmd(&["user", "--users", path, "del", "bob"], None);
    assert!(del.status.success());
    let list = besterd_cmd(&["user", "--users", path, "list"], None);
    assert_eq!(String::from_utf8(list.stdout).unwrap(), "alice\n");

    let missing = besterd_cmd(&["user", "--users", path, "del", "bob"], None);
    assert!(!missing.status.success());
}

#[test]
fn check_config_reports_each_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nname = \"a\"\n[handlers.echo]\ncommand = [\"python3\", \"echo.py\"]\n",
    )
    .unwrap();
    let out = besterd_cmd(&["check-config", "--config", good.to_str().unwrap()], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nidentify_timeout_ms = 0\n[handlers.echo]\n").unwrap();
    let out = besterd_cmd(&["check-config", "--config", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.identify_timeout_ms: must be greater than 0"),
        "{err}"
    );
    assert!(err.contains("handlers.echo: needs command"), "{err}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[server]\nlisten_on = \"x\"\n").unwrap();
    let out = besterd_cmd(&["check-config", "--config", typo.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `listen_on`"));
}

#[test]
fn usage_errors_exit_64() {
    let out = besterd_cmd(&["serve", "--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(64));
    let out = besterd_cmd(&["--version"], None);
    assert!(out.status.success());
}
