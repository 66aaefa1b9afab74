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

/// (exit code, stdout, stderr) of `besterd ARGS`.
fn run(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let out = besterd_cmd(args, stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn users_and_config_flags_go_before_or_after_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let path = users.to_str().unwrap();
    // Exactly as the README shows them.
    assert_eq!(
        run(
            &["user", "add", "alice", "--users", path, "--password-stdin"],
            Some("pw-a")
        ),
        (Some(0), String::new(), "user alice added\n".into())
    );
    assert_eq!(
        run(
            &[
                "user",
                "passwd",
                "alice",
                "--password-stdin",
                "--users",
                path
            ],
            Some("pw-a2")
        ),
        (
            Some(0),
            String::new(),
            "password of user alice changed\n".into()
        )
    );
    assert_eq!(
        run(&["user", "list", "--users", path], None),
        (Some(0), "alice\n".into(), String::new())
    );
    assert_eq!(
        run(&["user", "--users", path, "list"], None),
        (Some(0), "alice\n".into(), String::new())
    );

    // --config / -c names the store through `[server] users`, in either place too.
    let config = dir.path().join("besterd.toml");
    std::fs::write(&config, format!("[server]\nusers = {path:?}\n")).unwrap();
    let config = config.to_str().unwrap();
    assert_eq!(
        run(
            &["user", "add", "bob", "--password-stdin", "--config", config],
            Some("pw-b")
        ),
        (Some(0), String::new(), "user bob added\n".into())
    );
    assert_eq!(
        run(&["user", "list", "-c", config], None),
        (Some(0), "alice\nbob\n".into(), String::new())
    );
    assert_eq!(
        run(&["user", "--config", config, "del", "bob"], None),
        (Some(0), String::new(), "user bob deleted\n".into())
    );
    assert_eq!(
        run(&["user", "del", "alice", "--users", path], None),
        (Some(0), String::new(), "user alice deleted\n".into())
    );
    assert_eq!(
        run(&["user", "list", "--users", path], None),
        (Some(0), String::new(), String::new()),
        "an existing store with no users lists nothing"
    );
}

#[test]
fn user_list_of_a_missing_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("nope.json");
    let path = users.to_str().unwrap();
    assert_eq!(
        run(&["user", "list", "--users", path], None),
        (
            Some(1),
            String::new(),
            format!("besterd: no user store at {path} (`besterd user add` creates it)\n")
        )
    );
    assert!(!users.exists(), "list creates nothing");
}

#[test]
fn check_config_reports_handler_programs_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let script = script.to_str().unwrap();
    let file = dir.path().join("besterd.toml");
    let config = file.to_str().unwrap();
    std::fs::write(
        &file,
        format!(
            "[handlers.echo]\ncommand = [\"python3\", \"echo.py\"]\n\
             [handlers.missing]\ncommand = [\"no-such-program-besterd\"]\n\
             [handlers.noexec]\ncommand = [{script:?}]\n\
             [handlers.nofile]\ncommand = [\"./nothing.sh\"]\ncwd = {:?}\n",
            dir.path().to_str().unwrap()
        ),
    )
    .unwrap();
    assert_eq!(
        run(&["check-config", "--config", config], None),
        (
            Some(78),
            String::new(),
            format!(
                "invalid configuration {config}:\n  \
                 handlers.missing.command: program \"no-such-program-besterd\" not found on PATH\n  \
                 handlers.noexec.command: program {script:?}: is not executable\n  \
                 handlers.nofile.command: program \"{}/./nothing.sh\": No such file or directory (os error 2)\n",
                dir.path().display()
            )
        )
    );
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &file,
        format!("[handlers.script]\ncommand = [{script:?}]\n[handlers.sh]\ncommand = [\"sh\", \"-c\", \"exit 0\"]\n"),
    )
    .unwrap();
    assert_eq!(
        run(&["check-config", "--config", config], None),
        (
            Some(0),
            format!(
                "{config}: OK (server \"besterd\" on 127.0.0.1:2222, users besterd-users.json, handlers: script, sh)\n"
            ),
            String::new()
        )
    );
}

#[test]
fn check_config_without_a_file_checks_the_embedded_default() {
    // Its handler runs python3 on `{examples}/echo.py`, which besterd writes at startup.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_besterd"))
        .arg("check-config")
        .env_remove("BESTERD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned()
        ),
        (
            Some(0),
            "(embedded default): OK (server \"besterd\" on 127.0.0.1:2222, users besterd-users.json, handlers: echo)\n".into(),
            String::new()
        )
    );
}

#[test]
fn check_config_warns_when_the_monitoring_port_is_not_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let check = |listen: &str| {
        let path = dir.path().join("m.toml");
        std::fs::write(&path, format!("[monitor]\nlisten = {listen:?}\n")).unwrap();
        let out = besterd_cmd(&["check-config", "--config", path.to_str().unwrap()], None);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check("127.0.0.1:8222"), (Some(0), String::new()));
    assert_eq!(
        check("0.0.0.0:8222"),
        (
            Some(0),
            format!(
                "{}: warning: monitor.listen: 0.0.0.0:8222 is not a loopback address; the \
                 monitoring port has no authentication and shows users, addresses and figures to \
                 anyone who can reach it\n",
                dir.path().join("m.toml").display()
            )
        )
    );
    assert_eq!(
        check("nowhere.invalid:1").0,
        Some(78),
        "an address that does not resolve is a configuration error"
    );
}
