//! `besterd user add|passwd|del|cert|gateway|list|keys|add-key|del-key`: the administrator's commands on
//! the user store.
//!
//! Owns reading a new password (a terminal prompt asked twice, or the first line of standard input
//! with `--password-stdin` or when stdin is not a terminal) and the command's output: `list` prints
//! names on stdout and `keys` a user's public keys (both fail if there is no store file: a wrong path is not an empty store), the
//! other actions print nothing on stdout and one confirmation line on stderr.
//!
//! It must not: take a password from the command line or the environment, echo or log a password,
//! or write the store other than through [`user_store::update`] (which serializes with the running
//! daemon). Hashing happens before the store lock is taken. Passwords are wiped from memory
//! (`zeroize`) once hashed; the copy standard input's own buffer keeps cannot be reached.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use ed25519_dalek::VerifyingKey;

use super::keys;
use super::user_store::{self, MAX_PASSWORD_LEN, StoreError, UserStore};
use crate::cli::{CertPin, UserAction};

/// Why a `besterd user` command failed.
#[derive(Debug)]
pub enum AdminError {
    /// The store refused or failed (unknown user, existing user, bad name, I/O, corrupt file...).
    Store(StoreError),
    /// The password could not be read, or the output could not be written.
    Io {
        /// What we were doing.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Standard input had no password on its first line.
    NoPassword,
    /// The password read from standard input is not UTF-8.
    PasswordNotUtf8,
    /// The two passwords typed at the prompt differ.
    PasswordMismatch,
    /// `list` of a store file that does not exist.
    NoStore(PathBuf),
    /// The certificate to pin could not be read or its fingerprint parsed.
    Cert(String),
    /// The public key file could not be read or parsed.
    Key(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Store(e) => e.fmt(f),
            AdminError::Io { what, source } => write!(f, "cannot {what}: {source}"),
            AdminError::NoPassword => {
                f.write_str("no password on standard input (expected on the first line)")
            }
            AdminError::PasswordNotUtf8 => f.write_str("the password is not valid UTF-8"),
            AdminError::PasswordMismatch => f.write_str("the passwords do not match"),
            AdminError::NoStore(path) => write!(
                f,
                "no user store at {} (`besterd user add` creates it)",
                path.display()
            ),
            AdminError::Cert(e) | AdminError::Key(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Store(e) => Some(e),
            AdminError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

/// Runs one `besterd user` action on the store at `store`, talking to the real stdin/stdout/stderr.
///
/// Passwords come from the first line of stdin with `--password-stdin` or when stdin is not a
/// terminal, else from a terminal prompt asked twice. `list` prints the names, sorted, one per line
/// on stdout; the other actions print a confirmation on stderr. `add` of an existing user and
/// `passwd`/`del` of a missing one fail with an error naming the user (checked before prompting,
/// and again under the store lock).
pub fn run(store: &Path, action: &UserAction) -> Result<(), AdminError> {
    let stdin_is_terminal = io::stdin().is_terminal();
    let mut read_password = |name: &str, password_stdin: bool| {
        if password_stdin || !stdin_is_terminal {
            read_password_line(&mut io::stdin().lock())
        } else {
            prompt_twice(name)
        }
    };
    run_with(
        store,
        action,
        &mut read_password,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// [`run`] with the password source and the output streams given, for tests.
/// `read_password(name, password_stdin)` returns the new password.
fn run_with(
    store: &Path,
    action: &UserAction,
    read_password: &mut dyn FnMut(&str, bool) -> Result<String, AdminError>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), AdminError> {
    let confirmation = match action {
        UserAction::Add {
            name,
            password_stdin,
            no_password,
            pin,
            public_key,
        } => {
            user_store::validate_username(name)?;
            let pin = cert_pin(pin)?;
            let key = public_key.as_deref().map(read_key).transpose()?;
            if UserStore::open(store)?.users().contains(name) {
                return Err(StoreError::UserExists(name.clone()).into());
            }
            let password = if *no_password {
                Zeroizing::new(unknown_password())
            } else {
                Zeroizing::new(read_password(name, *password_stdin)?)
            };
            let hash = user_store::hash_password(&password)?;
            drop(password);
            user_store::update(store, |users| {
                users.add(name, &hash)?;
                if let Some(key) = &key {
                    users.add_public_key(name, key)?;
                }
                users.set_cert_pin(name, pin.as_ref())
            })?;
            if let Some(key) = &key {
                let _ = writeln!(err, "public key {} added", keys::encode_public_key(key));
            }
            match pin {
                Some(pin) => format!(
                    "user {name} added, certificate pinned: {}",
                    user_store::fingerprint_hex(&pin)
                ),
                None => format!("user {name} added"),
            }
        }
        UserAction::Cert { name, pin, clear } => {
            let pin = if *clear { None } else { cert_pin(pin)? };
            user_store::update(store, |users| users.set_cert_pin(name, pin.as_ref()))?;
            match pin {
                Some(pin) => format!(
                    "certificate of user {name} pinned: {}",
                    user_store::fingerprint_hex(&pin)
                ),
                None => format!("certificate pin of user {name} removed"),
            }
        }
        UserAction::Gateway { name, clear } => {
            user_store::update(store, |users| users.set_gateway(name, !*clear))?;
            if *clear {
                format!("user {name} is no longer a gateway")
            } else {
                format!("user {name} is a gateway: its sessions may attach other users")
            }
        }
        UserAction::Passwd {
            name,
            password_stdin,
        } => {
            if !UserStore::open(store)?.users().contains(name) {
                return Err(StoreError::NoSuchUser(name.clone()).into());
            }
            let password = Zeroizing::new(read_password(name, *password_stdin)?);
            let hash = user_store::hash_password(&password)?;
            drop(password);
            user_store::update(store, |users| users.set_hash(name, &hash))?;
            format!("password of user {name} changed")
        }
        UserAction::Keys { name } => {
            if let Err(e) = std::fs::metadata(store)
                && e.kind() == io::ErrorKind::NotFound
            {
                return Err(AdminError::NoStore(store.to_path_buf()));
            }
            let store = UserStore::open(store)?;
            if !store.users().contains(name) {
                return Err(StoreError::NoSuchUser(name.clone()).into());
            }
            let mut listing = String::new();
            for key in store.users().public_keys(name) {
                listing.push_str(key);
                listing.push('\n');
            }
            return write_listing(out, &listing, "write the key list");
        }
        UserAction::AddKey { name, file } => {
            let key = read_key(file)?;
            user_store::update(store, |users| users.add_public_key(name, &key))?;
            format!(
                "public key {} added to user {name}",
                keys::encode_public_key(&key)
            )
        }
        UserAction::DelKey { name, key } => {
            user_store::update(store, |users| users.remove_public_key(name, key))?;
            format!("public key {} removed from user {name}", key.trim())
        }
        UserAction::Del { name } => {
            user_store::update(store, |users| users.remove(name))?;
            format!("user {name} deleted")
        }
        UserAction::List => {
            if let Err(e) = std::fs::metadata(store)
                && e.kind() == io::ErrorKind::NotFound
            {
                return Err(AdminError::NoStore(store.to_path_buf()));
            }
            let store = UserStore::open(store)?;
            let mut listing = String::new();
            for name in store.users().names() {
                listing.push_str(name);
                listing.push('\n');
            }
            return write_listing(out, &listing, "write the user list");
        }
    };
    // The change is made; a failure to say so is not worth an error.
    let _ = writeln!(err, "{confirmation}");
    Ok(())
}

/// Print a listing on stdout; `besterd user list | head -1` is not an error.
fn write_listing(out: &mut dyn Write, listing: &str, what: &'static str) -> Result<(), AdminError> {
    match out.write_all(listing.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(AdminError::Io { what, source: e }),
        _ => Ok(()),
    }
}

/// A public key file (SPKI PEM, or one line of base64).
fn read_key(file: &Path) -> Result<VerifyingKey, AdminError> {
    keys::read_public_key_file(file).map_err(AdminError::Key)
}

/// A password nobody knows (32 random bytes in hex, thrown away once hashed).
fn unknown_password() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint to pin, from `--cert-fingerprint HEX` or `--cert FILE`, if either is given.
fn cert_pin(pin: &CertPin) -> Result<Option<[u8; 32]>, AdminError> {
    use crate::net::tls;
    match (&pin.cert_fingerprint, &pin.cert) {
        (Some(hex), _) => tls::parse_fingerprint(hex)
            .map(Some)
            .map_err(AdminError::Cert),
        (None, Some(file)) => {
            let certs = tls::load_certs(file).map_err(AdminError::Cert)?;
            Ok(Some(tls::fingerprint(&certs[0])))
        }
        (None, None) => Ok(None),
    }
}

/// Reads a password from the first line of `input`, without its `\n` or `\r\n`.
/// Reads at most one line (and no more than a too-long password needs to be recognized).
fn read_password_line(input: &mut dyn BufRead) -> Result<String, AdminError> {
    let mut line = Vec::new();
    input
        .take(MAX_PASSWORD_LEN as u64 + 3)
        .read_until(b'\n', &mut line)
        .map_err(|source| AdminError::Io {
            what: "read the password from standard input",
            source,
        })?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err(AdminError::NoPassword);
    }
    String::from_utf8(line).map_err(|e| {
        e.into_bytes().zeroize();
        AdminError::PasswordNotUtf8
    })
}

/// Asks for the new password twice on the terminal (no echo).
fn prompt_twice(name: &str) -> Result<String, AdminError> {
    let prompt = |text: String| {
        rpassword::prompt_password(text).map_err(|source| AdminError::Io {
            what: "read the password from the terminal",
            source,
        })
    };
    let mut first = Zeroizing::new(prompt(format!("New password for {name}: "))?);
    user_store::validate_password(&first)?;
    let second = Zeroizing::new(prompt(format!("Retype the password for {name}: "))?);
    if first != second {
        return Err(AdminError::PasswordMismatch);
    }
    Ok(std::mem::take(&mut *first))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    /// Runs `action` with `password` as the typed/piped password; returns (result, stdout, stderr).
    fn admin(
        store: &Path,
        action: UserAction,
        password: &str,
    ) -> (Result<(), AdminError>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut asked = false;
        let mut read_password = |_: &str, _: bool| {
            assert!(!asked, "password asked twice");
            asked = true;
            read_password_line(&mut password.as_bytes())
        };
        let result = run_with(store, &action, &mut read_password, &mut out, &mut err);
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn add(name: &str) -> UserAction {
        UserAction::Add {
            name: name.to_owned(),
            password_stdin: true,
            no_password: false,
            pin: CertPin::default(),
            public_key: None,
        }
    }

    #[test]
    fn certificates_are_pinned_and_unpinned() {
        let (_dir, path) = store_path();
        let fp = "AB".repeat(32);
        let action = UserAction::Add {
            name: "alice".into(),
            password_stdin: true,
            no_password: false,
            pin: CertPin {
                cert_fingerprint: Some(fp.clone()),
                cert: None,
            },
            public_key: None,
        };
        let (r, _, err) = admin(&path, action, "pw\n");
        r.unwrap();
        assert_eq!(
            err,
            format!(
                "user alice added, certificate pinned: {}\n",
                "ab".repeat(32)
            )
        );
        let store = UserStore::open(&path).unwrap();
        assert_eq!(
            store.users().cert_pin("alice"),
            Some("ab".repeat(32).as_str())
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("\"cert_sha256\": \"{}\"", "ab".repeat(32))),
            "{text}"
        );
        // A user without a password: nothing asked, a hash nothing known verifies.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut never = |_: &str, _: bool| -> Result<String, AdminError> { panic!("asked") };
        let action = UserAction::Add {
            name: "robot".into(),
            password_stdin: false,
            no_password: true,
            pin: CertPin::default(),
            public_key: None,
        };
        run_with(&path, &action, &mut never, &mut out, &mut err).unwrap();
        let store = UserStore::open(&path).unwrap();
        assert!(store.users().contains("robot"));
        assert!(!store.verify("robot", ""));
        // A password change keeps the pin; --clear removes it.
        admin(&path, passwd("alice"), "pw2\n").0.unwrap();
        assert!(
            UserStore::open(&path)
                .unwrap()
                .users()
                .cert_pin("alice")
                .is_some()
        );
        let clear = UserAction::Cert {
            name: "alice".into(),
            pin: CertPin::default(),
            clear: true,
        };
        let (r, _, err) = admin(&path, clear, "");
        r.unwrap();
        assert_eq!(err, "certificate pin of user alice removed\n");
        assert_eq!(
            UserStore::open(&path).unwrap().users().cert_pin("alice"),
            None
        );
        let bad = UserAction::Cert {
            name: "alice".into(),
            pin: CertPin {
                cert_fingerprint: Some("xyz".into()),
                cert: None,
            },
            clear: false,
        };
        assert_eq!(
            admin(&path, bad, "").0.unwrap_err().to_string(),
            "\"xyz\" is not a SHA-256 fingerprint (64 hex digits)"
        );
        let missing = UserAction::Cert {
            name: "bob".into(),
            pin: CertPin {
                cert_fingerprint: Some(fp),
                cert: None,
            },
            clear: false,
        };
        assert_eq!(
            admin(&path, missing, "").0.unwrap_err().to_string(),
            "no such user \"bob\""
        );
    }

    fn passwd(name: &str) -> UserAction {
        UserAction::Passwd {
            name: name.to_owned(),
            password_stdin: true,
        }
    }

    fn del(name: &str) -> UserAction {
        UserAction::Del {
            name: name.to_owned(),
        }
    }

    fn store_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        (dir, path)
    }

    #[test]
    fn add_passwd_del_list() {
        let (_dir, path) = store_path();
        let (r, out, err) = admin(&path, add("bob"), "bob-pw\n");
        r.unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("", "user bob added\n"));
        admin(&path, add("alice"), "alice-pw\r\n").0.unwrap();

        let (r, out, _) = admin(&path, UserAction::List, "");
        r.unwrap();
        assert_eq!(out, "alice\nbob\n");

        let store = UserStore::open(&path).unwrap();
        assert!(store.verify("alice", "alice-pw"));
        assert!(store.verify("bob", "bob-pw"));

        let (r, out, err) = admin(&path, passwd("alice"), "new-pw");
        r.unwrap();
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("", "password of user alice changed\n")
        );
        let store = UserStore::open(&path).unwrap();
        assert!(store.verify("alice", "new-pw"));
        assert!(!store.verify("alice", "alice-pw"));

        let (r, out, err) = admin(&path, del("bob"), "");
        r.unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("", "user bob deleted\n"));
        assert_eq!(admin(&path, UserAction::List, "").1, "alice\n");
    }

    #[test]
    fn the_gateway_right_is_given_and_taken() {
        let (_dir, path) = store_path();
        admin(&path, add("gw"), "gw-pw\n").0.unwrap();
        let gateway = |clear| UserAction::Gateway {
            name: "gw".to_owned(),
            clear,
        };
        let (r, out, err) = admin(&path, gateway(false), "");
        r.unwrap();
        assert_eq!(
            (out.as_str(), err.as_str()),
            (
                "",
                "user gw is a gateway: its sessions may attach other users\n"
            )
        );
        assert!(UserStore::open(&path).unwrap().users().is_gateway("gw"));
        let (r, _, err) = admin(&path, gateway(true), "");
        r.unwrap();
        assert_eq!(err, "user gw is no longer a gateway\n");
        let store = UserStore::open(&path).unwrap();
        assert!(!store.users().is_gateway("gw"));
        assert!(store.verify("gw", "gw-pw"), "the password is kept");
        let nobody = UserAction::Gateway {
            name: "bob".to_owned(),
            clear: false,
        };
        let r = admin(&path, nobody, "").0;
        assert_eq!(r.unwrap_err().to_string(), "no such user \"bob\"");
    }

    #[test]
    fn errors_name_the_user() {
        let (_dir, path) = store_path();
        admin(&path, add("alice"), "pw\n").0.unwrap();
        let before = fs::read(&path).unwrap();

        let (r, out, err) = admin(&path, add("alice"), "other\n");
        assert_eq!(r.unwrap_err().to_string(), "user \"alice\" already exists");
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
        let r = admin(&path, passwd("bob"), "pw\n").0;
        assert_eq!(r.unwrap_err().to_string(), "no such user \"bob\"");
        let r = admin(&path, del("bob"), "").0;
        assert_eq!(r.unwrap_err().to_string(), "no such user \"bob\"");
        let r = admin(&path, add("-bob"), "pw\n").0;
        assert!(matches!(
            r,
            Err(AdminError::Store(StoreError::InvalidUsername { .. }))
        ));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn bad_passwords_are_refused() {
        let (_dir, path) = store_path();
        for input in ["", "\n", "\r\n"] {
            let r = admin(&path, add("alice"), input).0;
            assert!(matches!(r, Err(AdminError::NoPassword)), "{input:?}: {r:?}");
        }
        let long = "x".repeat(MAX_PASSWORD_LEN + 1) + "\n";
        let r = admin(&path, add("alice"), &long).0;
        assert!(matches!(
            r,
            Err(AdminError::Store(StoreError::InvalidPassword(_)))
        ));
        assert!(!path.exists(), "nothing may be written");
    }

    #[test]
    fn list_of_a_missing_store_is_an_error() {
        let (_dir, path) = store_path();
        let (r, out, err) = admin(&path, UserAction::List, "");
        assert_eq!(
            r.unwrap_err().to_string(),
            format!(
                "no user store at {} (`besterd user add` creates it)",
                path.display()
            )
        );
        assert_eq!((out.as_str(), err.as_str()), ("", ""));
        assert!(!path.exists(), "list creates nothing");
    }

    #[test]
    fn password_line_reading() {
        let read = |s: &[u8]| read_password_line(&mut &s[..]);
        assert_eq!(read(b"pw\nsecond line\n").unwrap(), "pw");
        assert_eq!(read(b"pw\r\n").unwrap(), "pw");
        assert_eq!(read(b"pw").unwrap(), "pw");
        assert_eq!(read(b" spaced pw \n").unwrap(), " spaced pw ");
        assert_eq!(read(b"a\rb\n").unwrap(), "a\rb");
        assert!(matches!(read(b""), Err(AdminError::NoPassword)));
        assert!(matches!(read(b"\n"), Err(AdminError::NoPassword)));
        assert!(matches!(read(b"\xff\n"), Err(AdminError::PasswordNotUtf8)));
        let max = "y".repeat(MAX_PASSWORD_LEN);
        assert_eq!(read(format!("{max}\r\n").as_bytes()).unwrap(), max);
    }
}
