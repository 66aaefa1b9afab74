//! Crash consistency of the user store: `besterd user passwd` killed with SIGKILL at many different
//! moments leaves a store that is exactly the old or exactly the new version, never torn.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use besterd::auth::user_store::{self, UserStore};
use common::add_user;

#[test]
fn kill_9_during_passwd_never_tears_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    add_user(&users, "alice", "pw-0");
    add_user(&users, "bob", "bob-pw");
    // Measure one uninterrupted run to spread the kills over its whole length.
    let started = Instant::now();
    passwd(&users, "pw-1").wait().unwrap();
    let full = started.elapsed();
    let mut current = "pw-1".to_string();
    let (mut old_kept, mut new_taken) = (0, 0);
    for i in 2..42u32 {
        let new = format!("pw-{i}");
        let mut child = passwd(&users, &new);
        std::thread::sleep(full * i / 40);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Whatever the moment, the file parses and holds both users.
        let store = UserStore::open(&users).expect("the store is never torn");
        assert!(store.verify("bob", "bob-pw"), "other users are untouched");
        if store.verify("alice", &new) {
            current = new;
            new_taken += 1;
        } else {
            assert!(
                store.verify("alice", &current),
                "alice has either the old or the new password"
            );
            old_kept += 1;
        }
    }
    assert!(old_kept + new_taken == 40);
    // A writer killed between creating its temp file and renaming it leaves the temp file; the
    // next write removes it.
    let hash = user_store::hash_password("bob-pw-2").unwrap();
    user_store::update(&users, |u| u.set_hash("bob", &hash)).unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("kills: {old_kept} kept the old password, {new_taken} took the new one");
}

fn passwd(users: &std::path::Path, password: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_besterd"))
        .args([
            "user",
            "--users",
            users.to_str().unwrap(),
            "passwd",
            "alice",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child
}
