//! The user store: a JSON file `{"version":1,"users":{"alice":{"hash":"$argon2id$..."}}}`.
//!
//! Reading is cheap and done whenever the file changed (so `besterd user add` takes effect in a
//! running daemon without a signal). Every write goes through [`update`]: an exclusive lock on
//! `<store>.lock`, a fresh read under the lock, the change, then an atomic replace (temp file in the
//! same directory, 0600, fsync, rename, fsync of the directory): after a crash at any instant the file
//! is the old version or the new one, never a mix. Must not be called on the event loop thread.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use log::warn;
use serde::{Deserialize, Serialize};

/// Longest username.
pub const MAX_USERNAME: usize = 64;
/// Longest password.
pub const MAX_PASSWORD: usize = 1024;

/// A hash of a random password nobody knows, verified against for unknown users so that a login
/// takes as long whether or not the user exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$4qywo7JbmpFwvzXzk73oLg$6BgDDGxv7yFdXafyg3zZfoYv7XcuAd05VO244CvvZnc";

/// Everything that can go wrong with the store. Never carries a password.
#[derive(Debug)]
pub enum StoreError {
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: io::Error,
    },
    /// The file is not a user store.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `add` of a user that exists.
    UserExists(String),
    /// A user that does not exist.
    NoSuchUser(String),
    /// A username that is not allowed.
    InvalidUsername {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A password that is not allowed.
    InvalidPassword(&'static str),
    /// argon2 failed.
    Hash(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Corrupt { path, reason } => {
                write!(f, "{} is not a valid user store: {reason}", path.display())
            }
            StoreError::UserExists(name) => write!(f, "user {name:?} already exists"),
            StoreError::NoSuchUser(name) => write!(f, "no user {name:?}"),
            StoreError::InvalidUsername { name, reason } => {
                write!(f, "invalid username {name:?}: {reason}")
            }
            StoreError::InvalidPassword(reason) => write!(f, "invalid password: {reason}"),
            StoreError::Hash(e) => write!(f, "password hashing failed: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One user's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// argon2id PHC string.
    pub hash: String,
}

/// Users by name.
pub type Users = BTreeMap<String, UserRecord>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    users: Users,
}

/// Check a username: 1 to 64 bytes of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_username(name: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidUsername {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_USERNAME {
        return invalid("must be 1 to 64 characters");
    }
    if name.starts_with(['.', '-']) {
        return invalid("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("may only hold A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// Check a password: 1 to 1024 bytes.
pub fn validate_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::InvalidPassword("must not be empty"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(StoreError::InvalidPassword("must be at most 1024 bytes"));
    }
    Ok(())
}

/// Hash a password into an argon2id PHC string with a fresh random salt (default parameters).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    validate_password(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (argon2 compares in constant time).
pub fn verify_hash(hash: &str, password: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(hash).map_err(|e| StoreError::Hash(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// Whether `password` is right for `hash`; `None` (unknown user) still costs one argon2 run.
pub fn verify(user: &str, hash: Option<&str>, password: &str) -> bool {
    match hash {
        Some(hash) => verify_hash(hash, password).unwrap_or_else(|e| {
            warn!("user={user} has an unusable password hash: {e}");
            false
        }),
        None => {
            let _ = verify_hash(DUMMY_HASH, password);
            false
        }
    }
}

/// What identifies a version of the file on disk.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Result<Stamp, StoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Read the users; a file that does not exist is an empty store.
pub fn read(path: &Path) -> Result<Users, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Users::new()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let file: StoreFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.version != 1 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("unsupported version {}", file.version),
        });
    }
    Ok(file.users)
}

/// A read-only view of the store that re-reads the file when it changes.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    stamp: Stamp,
    users: Users,
}

impl UserStore {
    /// Read the store at `path`.
    pub fn open(path: &Path) -> Result<UserStore, StoreError> {
        let stamp = stamp(path)?;
        Ok(UserStore {
            path: path.to_path_buf(),
            stamp,
            users: read(path)?,
        })
    }

    /// Re-read the file if it changed since the last read; true if it was re-read.
    pub fn reload_if_changed(&mut self) -> Result<bool, StoreError> {
        let now = stamp(&self.path)?;
        if now == self.stamp {
            return Ok(false);
        }
        self.users = read(&self.path)?;
        self.stamp = now;
        Ok(true)
    }

    /// The PHC hash of a user.
    pub fn hash_of(&self, name: &str) -> Option<&str> {
        self.users.get(name).map(|r| r.hash.as_str())
    }

    /// Check a password (one argon2 run whether or not the user exists).
    pub fn verify(&self, name: &str, password: &str) -> bool {
        verify(name, self.hash_of(name), password)
    }

    /// Usernames, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// Change the store under its lock and replace the file atomically; `f`'s error leaves it untouched.
pub fn update<R>(
    path: &Path,
    f: impl FnOnce(&mut Users) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let lock_path = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    lock.lock().map_err(io_error(&lock_path))?;
    remove_stale_temps(path);
    let mut users = read(path)?;
    let result = f(&mut users)?;
    write_atomically(path, &users)?;
    Ok(result)
}

/// Temp files left by a writer killed mid-write. Only called under the lock, when no writer can be
/// between creating its temp file and renaming it.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_os_string();
    prefix.push(".tmp-");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn write_atomically(path: &Path, users: &Users) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut body = serde_json::to_vec_pretty(&StoreFile {
        version: 1,
        users: users.clone(),
    })
    .map_err(|e| StoreError::Hash(e.to_string()))?;
    body.push(b'\n');
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| StoreError::Hash(e.to_string()))?;
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{hex}"));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above is filtered by the umask; make sure it is exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(path)(e)
    })
}

/// Create the store holding one user with an already computed hash, unless a store exists.
/// True if it was created.
pub fn bootstrap(path: &Path, username: &str, phc_hash: &str) -> Result<bool, StoreError> {
    validate_username(username)?;
    PasswordHash::new(phc_hash).map_err(|e| StoreError::Hash(e.to_string()))?;
    if path.exists() {
        return Ok(false);
    }
    update(path, |users| {
        if !users.is_empty() {
            return Ok(false);
        }
        users.insert(
            username.to_string(),
            UserRecord {
                hash: phc_hash.to_string(),
            },
        );
        Ok(true)
    })
}

/// Add a user (error if it exists).
pub fn add_user(path: &Path, name: &str, password: &str) -> Result<(), StoreError> {
    validate_username(name)?;
    let hash = hash_password(password)?;
    update(path, |users| {
        if users.contains_key(name) {
            return Err(StoreError::UserExists(name.to_string()));
        }
        users.insert(name.to_string(), UserRecord { hash });
        Ok(())
    })
}

/// Set a user's password (error if the user does not exist).
pub fn set_password(path: &Path, name: &str, password: &str) -> Result<(), StoreError> {
    let hash = hash_password(password)?;
    update(path, |users| match users.get_mut(name) {
        Some(record) => {
            record.hash = hash;
            Ok(())
        }
        None => Err(StoreError::NoSuchUser(name.to_string())),
    })
}

/// Delete a user (error if the user does not exist).
pub fn remove_user(path: &Path, name: &str) -> Result<(), StoreError> {
    update(path, |users| match users.remove(name) {
        Some(_) => Ok(()),
        None => Err(StoreError::NoSuchUser(name.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        (dir, path)
    }

    #[test]
    fn add_then_verify() {
        let (_dir, path) = store();
        add_user(&path, "alice", "s3cret").unwrap();
        let users = UserStore::open(&path).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "S3cret"));
        assert!(!users.verify("bob", "s3cret"));
        assert_eq!(users.names().collect::<Vec<_>>(), ["alice"]);
    }

    #[test]
    fn files_are_private_and_hold_only_hashes() {
        let (_dir, path) = store();
        add_user(&path, "alice", "plain-text-pw").unwrap();
        for p in [&path, &lock_path(&path)] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("plain-text-pw"));
        let file: StoreFile = serde_json::from_str(&text).unwrap();
        assert!(file.users["alice"].hash.starts_with("$argon2id$v=19$"));
    }

    #[test]
    fn failed_update_leaves_the_file_byte_identical() {
        let (_dir, path) = store();
        add_user(&path, "alice", "a").unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(
            add_user(&path, "alice", "b"),
            Err(StoreError::UserExists(_))
        ));
        assert!(matches!(
            remove_user(&path, "bob"),
            Err(StoreError::NoSuchUser(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), before);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let (_dir, path) = store();
        fs::write(&path, b"{\"version\":1,\"users\":{\"a\":{\"hash\":5}}}").unwrap();
        assert!(matches!(
            UserStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
        fs::write(&path, b"\xff").unwrap();
        let err = UserStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("is not a valid user store"), "{err}");
    }

    #[test]
    fn reload_sees_changes_made_elsewhere() {
        let (_dir, path) = store();
        let mut users = UserStore::open(&path).unwrap();
        assert!(!users.reload_if_changed().unwrap());
        add_user(&path, "bob", "pw").unwrap();
        assert!(users.reload_if_changed().unwrap());
        assert!(users.verify("bob", "pw"));
        set_password(&path, "bob", "pw2").unwrap();
        assert!(users.reload_if_changed().unwrap());
        assert!(users.verify("bob", "pw2"));
    }

    #[test]
    fn bootstrap_creates_once() {
        let (_dir, path) = store();
        let hash = hash_password("demo").unwrap();
        assert!(bootstrap(&path, "demo", &hash).unwrap());
        assert!(!bootstrap(&path, "other", &hash).unwrap());
        let users = UserStore::open(&path).unwrap();
        assert!(users.verify("demo", "demo"));
        assert!(users.hash_of("other").is_none());
        assert!(bootstrap(&path, "x", "not-a-phc").is_err());
    }

    #[test]
    fn name_and_password_rules() {
        for ok in ["a", "alice", "a.b_c-d", "A9", &"x".repeat(64)] {
            validate_username(ok).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_password("").is_err());
        assert!(validate_password(&"p".repeat(1025)).is_err());
        validate_password(&"p".repeat(1024)).unwrap();
    }

    #[test]
    fn dummy_hash_is_usable() {
        // Unknown users run argon2 against it; it must parse, or that path would be faster.
        assert!(!verify_hash(DUMMY_HASH, "guess").unwrap());
    }
}
