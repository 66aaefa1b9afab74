//! The user store: one JSON file mapping user names to argon2id password hashes.
//!
//! Owns the file format, the name rules, and the only write path ([`update`] / [`bootstrap`]): an exclusive lock on `<store>.lock`, a re-read under the lock,
//! then a write to a 0600 temp file in the same directory, `fsync`, `rename` over the store and an
//! `fsync` of the directory, so that after a crash the file is either the old or the new version.
//! Hashing and checking passwords is [`super::password`]'s (re-exported here).
//!
//! It must not: store or log a plaintext password (errors and logs name users, never passwords),
//! panic on a bad file, or be called from the event loop (argon2 takes tens of milliseconds; the
//! daemon goes through [`crate::auth::worker`]).
//!
//! File format (`version` 1):
//! ```json
//! {"version":1,"users":{"alice":{"hash":"$argon2id$v=19$m=19456,t=2,p=1$..."}}}
//! ```
//! An entry may also pin a client certificate: `"cert_sha256"`, the SHA-256 of its DER as 64
//! lowercase hex digits; certificate logins as that user then need exactly that certificate.
//! And it may list ed25519 public keys, `"keys"`: base64 of their 32 bytes, at most [`MAX_KEYS`],
//! each logging in as that user by signature (see [`super::keys`]).
//! And it may carry the `gateway` right, `"gateway": true`: that user's sessions may attach other
//! users with their credentials (`bester.attach`, PROTOCOL.md §2 "Several users on one
//! connection").
//! A store file that does not exist is an empty store.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::keys;
use super::password::check_phc;
pub use super::password::{
    hash_password, release_work_area, validate_password, verify_password, work_area_bytes,
};

/// The only file format version this code reads and writes.
pub const STORE_VERSION: u32 = 1;

/// Longest accepted user name, in bytes.
pub const MAX_USERNAME_LEN: usize = 64;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Most ed25519 public keys one user may have.
pub const MAX_KEYS: usize = 16;

/// Largest store file we agree to read (a bigger file is reported as corrupt).
const MAX_STORE_BYTES: u64 = 64 * 1024 * 1024;

/// Everything that can go wrong with the user store.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O operation on `path` failed.
    Io {
        /// What we were doing, e.g. `"read"` or `"rename into"`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The store file exists but cannot be used.
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `add` of a user that already exists.
    UserExists(String),
    /// An operation on a user that does not exist.
    NoSuchUser(String),
    /// A user name breaks the naming rules (see [`validate_username`]).
    InvalidUsername {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A new password breaks the password rules (see [`validate_password`]). Never holds the password.
    InvalidPassword(&'static str),
    /// A PHC hash string given for a user (e.g. to [`bootstrap`]) is not a usable argon2id hash.
    InvalidHash {
        /// The user the hash was meant for.
        name: String,
        /// What is wrong with the hash.
        reason: String,
    },
    /// argon2 failed to hash a password.
    Hash(String),
    /// A user's public key cannot be added or removed (duplicate, unknown, too many).
    Key {
        /// The user.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Displays a user name from an error, escaped and cut short so that a hostile name cannot flood a log.
struct ShortName<'a>(&'a str);

impl fmt::Display for ShortName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 80;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { source, .. } if crate::fsutil::refusal(source).is_some() => {
                source.fmt(f)
            }
            StoreError::Io { op, path, source } => {
                write!(f, "cannot {op} {}: {source}", path.display())
            }
            StoreError::Corrupt { path, reason } => {
                write!(f, "user store {} is unusable: {reason}", path.display())
            }
            StoreError::UserExists(name) => write!(f, "user {} already exists", ShortName(name)),
            StoreError::NoSuchUser(name) => write!(f, "no such user {}", ShortName(name)),
            StoreError::InvalidUsername { name, reason } => {
                write!(f, "invalid user name {}: {reason}", ShortName(name))
            }
            StoreError::InvalidPassword(reason) => write!(f, "invalid password: {reason}"),
            StoreError::InvalidHash { name, reason } => {
                write!(
                    f,
                    "invalid password hash for user {}: {reason}",
                    ShortName(name)
                )
            }
            StoreError::Hash(reason) => write!(f, "password hashing failed: {reason}"),
            StoreError::Key { name, reason } => write!(f, "user {}: {reason}", ShortName(name)),
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

/// Checks a user name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_username(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_USERNAME_LEN {
        "it is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "only ASCII letters, digits, '.', '_' and '-' are allowed"
    } else if name.starts_with(['.', '-']) {
        "it must not start with '.' or '-'"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidUsername {
        name: name.to_owned(),
        reason,
    })
}

/// One user's record in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    hash: String,
    /// The pinned client certificate: SHA-256 of its DER, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert_sha256: Option<String>,
    /// ed25519 public keys that log in as this user: base64 of their 32 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<String>,
    /// The `gateway` right: a session of this user may attach other users (`bester.attach`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gateway: bool,
}

/// Whether `text` is a pinned fingerprint as stored: 64 lowercase hex digits.
fn is_stored_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether a user's stored keys are usable: each an ed25519 key in canonical base64, no
/// duplicates, at most [`MAX_KEYS`].
fn check_keys(stored: &[String]) -> Result<(), String> {
    if stored.len() > MAX_KEYS {
        return Err(format!("more than {MAX_KEYS} keys"));
    }
    for (n, key) in stored.iter().enumerate() {
        match keys::parse_public_key(key) {
            Ok(parsed) if keys::encode_public_key(&parsed) == *key => {}
            Ok(_) => return Err(format!("keys[{n}] is not in canonical base64")),
            Err(e) => return Err(format!("keys[{n}]: {e}")),
        }
        if stored[..n].contains(key) {
            return Err(format!("keys[{n}] appears twice"));
        }
    }
    Ok(())
}

/// A fingerprint as stored (64 lowercase hex digits).
pub fn fingerprint_hex(fingerprint: &[u8; 32]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// The users of a store: name → argon2id PHC hash, kept sorted by name.
///
/// Mutators check names and hashes, so a `Users` only ever gains valid entries. Loading rejects a
/// file with an invalid or duplicate name, but keeps an entry whose hash is unusable (that user
/// simply cannot log in, and [`verify_password`] logs why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Users {
    map: BTreeMap<String, UserEntry>,
}

impl Users {
    /// The stored PHC hash of `name`, if the user exists.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|entry| entry.hash.as_str())
    }

    /// The pinned client certificate of `name` (64 lowercase hex digits of its SHA-256), if the
    /// user exists and has one.
    pub fn cert_pin(&self, name: &str) -> Option<&str> {
        self.map.get(name)?.cert_sha256.as_deref()
    }

    /// Pin (`Some`) or unpin (`None`) the client certificate of an existing user. Fails with
    /// `NoSuchUser`.
    pub fn set_cert_pin(&mut self, name: &str, pin: Option<&[u8; 32]>) -> Result<(), StoreError> {
        match self.map.get_mut(name) {
            Some(entry) => {
                entry.cert_sha256 = pin.map(fingerprint_hex);
                Ok(())
            }
            None => Err(StoreError::NoSuchUser(name.to_owned())),
        }
    }

    /// The public keys of `name` (base64 of their 32 bytes), in the order they were added; none
    /// for a user who does not exist.
    pub fn public_keys(&self, name: &str) -> &[String] {
        self.map
            .get(name)
            .map_or(&[], |entry| entry.keys.as_slice())
    }

    /// Give an existing user one more public key. Fails with `NoSuchUser`, or `Key` when the
    /// user has it already or has [`MAX_KEYS`].
    pub fn add_public_key(&mut self, name: &str, key: &VerifyingKey) -> Result<(), StoreError> {
        let entry = self
            .map
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        let key = keys::encode_public_key(key);
        let refuse = |reason: String| {
            Err(StoreError::Key {
                name: name.to_owned(),
                reason,
            })
        };
        if entry.keys.contains(&key) {
            return refuse(format!("already has the key {key}"));
        }
        if entry.keys.len() >= MAX_KEYS {
            return refuse(format!(
                "already has {MAX_KEYS} keys, the most a user may have"
            ));
        }
        entry.keys.push(key);
        Ok(())
    }

    /// Take a public key (base64, as [`Users::public_keys`] lists it) from an existing user.
    /// Fails with `NoSuchUser`, or `Key` when the user does not have it.
    pub fn remove_public_key(&mut self, name: &str, key: &str) -> Result<(), StoreError> {
        let entry = self
            .map
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        let key = key.trim();
        let before = entry.keys.len();
        entry.keys.retain(|k| k != key);
        if entry.keys.len() == before {
            return Err(StoreError::Key {
                name: name.to_owned(),
                reason: format!("has no key {key}"),
            });
        }
        Ok(())
    }

    /// Whether `name` exists and has the `gateway` right (may attach other users to its
    /// sessions with `bester.attach`).
    pub fn is_gateway(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|entry| entry.gateway)
    }

    /// Give (`true`) or take (`false`) an existing user's `gateway` right. Fails with
    /// `NoSuchUser`.
    pub fn set_gateway(&mut self, name: &str, gateway: bool) -> Result<(), StoreError> {
        match self.map.get_mut(name) {
            Some(entry) => {
                entry.gateway = gateway;
                Ok(())
            }
            None => Err(StoreError::NoSuchUser(name.to_owned())),
        }
    }

    /// Whether `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The user names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.map.keys().map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds a user with an already computed PHC hash (see [`hash_password`]).
    /// Fails with `UserExists`, `InvalidUsername` or `InvalidHash`.
    pub fn add(&mut self, name: &str, phc: &str) -> Result<(), StoreError> {
        validate_username(name)?;
        check_phc(name, phc)?;
        if self.map.contains_key(name) {
            return Err(StoreError::UserExists(name.to_owned()));
        }
        self.map.insert(
            name.to_owned(),
            UserEntry {
                hash: phc.to_owned(),
                cert_sha256: None,
                keys: Vec::new(),
                gateway: false,
            },
        );
        Ok(())
    }

    /// Replaces the PHC hash of an existing user. Fails with `NoSuchUser` or `InvalidHash`.
    pub fn set_hash(&mut self, name: &str, phc: &str) -> Result<(), StoreError> {
        check_phc(name, phc)?;
        match self.map.get_mut(name) {
            Some(entry) => {
                entry.hash = phc.to_owned();
                Ok(())
            }
            None => Err(StoreError::NoSuchUser(name.to_owned())),
        }
    }

    /// Removes a user. Fails with `NoSuchUser`.
    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        match self.map.remove(name) {
            Some(_) => Ok(()),
            None => Err(StoreError::NoSuchUser(name.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for Users {
    /// Like the derived map, but a duplicate or invalid user name is an error instead of being
    /// silently accepted (a JSON object with two "alice" keys would otherwise keep the last one).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsersVisitor;

        impl<'de> Visitor<'de> for UsersVisitor {
            type Value = Users;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping user names to {\"hash\": ...}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Users, A::Error> {
                use serde::de::Error;
                let mut map = BTreeMap::new();
                while let Some((name, entry)) = access.next_entry::<String, UserEntry>()? {
                    if let Err(e) = validate_username(&name) {
                        return Err(A::Error::custom(e));
                    }
                    if map.contains_key(&name) {
                        return Err(A::Error::custom(format_args!(
                            "user {} appears twice",
                            ShortName(&name)
                        )));
                    }
                    if let Some(pin) = &entry.cert_sha256
                        && !is_stored_fingerprint(pin)
                    {
                        return Err(A::Error::custom(format_args!(
                            "user {}: cert_sha256 is not 64 lowercase hex digits",
                            ShortName(&name)
                        )));
                    }
                    if let Err(reason) = check_keys(&entry.keys) {
                        return Err(A::Error::custom(format_args!(
                            "user {}: {reason}",
                            ShortName(&name)
                        )));
                    }
                    map.insert(name, entry);
                }
                Ok(Users { map })
            }
        }

        deserializer.deserialize_map(UsersVisitor)
    }
}

/// The whole file, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    users: Users,
}

/// The whole file, as written.
#[derive(Serialize)]
struct StoreFileRef<'a> {
    version: u32,
    users: &'a Users,
}

/// Just the version, read first so that a newer format is reported as such rather than as an
/// unknown field.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

fn parse_store(path: &Path, bytes: &[u8]) -> Result<Users, StoreError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StoreError::corrupt(
            path,
            "the file is empty (an empty store is {\"version\":1,\"users\":{}} or no file at all)",
        ));
    }
    if let Ok(VersionOnly { version }) = serde_json::from_slice(bytes)
        && version != u64::from(STORE_VERSION)
    {
        return Err(StoreError::corrupt(
            path,
            format!("unsupported version {version} (this besterd reads version {STORE_VERSION})"),
        ));
    }
    let file: StoreFile = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(path, format!("invalid JSON: {e}")))?;
    debug_assert_eq!(file.version, STORE_VERSION);
    Ok(file.users)
}

/// What identifies one version of the store file. Every write replaces the file by `rename`, so a
/// new version normally has a new inode; size and timestamps catch in-place edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The identity of the file at `path` now, `None` if there is none.
fn stat(path: &Path) -> Result<Option<FileId>, StoreError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(FileId::of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("stat", path, e)),
    }
}

/// Reads and parses the store; `Ok(None)` when the file does not exist. The identity comes from the
/// open file itself, so it always matches the bytes that were read.
fn load(path: &Path) -> Result<Option<(Users, FileId)>, StoreError> {
    // Never through a symbolic link: `besterd user` runs as root, and the store's directory
    // belongs to the service account.
    let file = match crate::fsutil::open_read_nofollow(path) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(None),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(StoreError::corrupt(path, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STORE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_STORE_BYTES {
        return Err(StoreError::corrupt(path, "the file is larger than 64 MiB"));
    }
    let users = parse_store(path, &bytes)?;
    Ok(Some((users, FileId::of(&meta))))
}

/// A read-only view of the store file, reloaded on demand. Used by the daemon (through the worker
/// pool) and by `besterd user list`.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    users: Users,
    /// The file version last read, or found broken (`None`: there was no file).
    seen: Option<FileId>,
}

impl UserStore {
    /// Reads the store at `path` (a missing file is an empty store).
    /// A corrupt file is a [`StoreError::Corrupt`] naming the path and the problem.
    pub fn open(path: impl Into<PathBuf>) -> Result<UserStore, StoreError> {
        let path = path.into();
        let (users, seen) = match load(&path)? {
            Some((users, id)) => (users, Some(id)),
            None => (Users::default(), None),
        };
        Ok(UserStore { path, users, seen })
    }

    /// Re-reads the file if it changed (device, inode, size, mtime or ctime differ) since the last
    /// read, so that a running daemon sees `besterd user add` without a signal. Returns whether it
    /// re-read. Cheap when nothing changed (one `stat`).
    ///
    /// On error the users read before stay in effect. A corrupt version is reported once: later
    /// calls return `Ok(false)` until the file changes again. I/O errors are reported every time.
    pub fn reload_if_changed(&mut self) -> Result<bool, StoreError> {
        let now = stat(&self.path)?;
        if now == self.seen {
            return Ok(false);
        }
        match load(&self.path) {
            Ok(Some((users, id))) => {
                self.users = users;
                self.seen = Some(id);
                Ok(true)
            }
            Ok(None) => {
                self.users = Users::default();
                self.seen = None;
                Ok(true)
            }
            Err(e @ StoreError::Corrupt { .. }) => {
                self.seen = now;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users as last read.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Checks `password` for `username` against the users as last read (see [`verify_password`]:
    /// one argon2 run whether or not the user exists). Slow: never call it on the event loop.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        verify_password(username, self.users.get(username), password)
    }
}

/// The lock file that serializes writers of the store at `store`: `<store>.lock`, e.g.
/// `users.json.lock`. It is created on demand (0600) and never removed.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = OsString::from(store.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// The directory holding the store (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The prefix of our temp files for the store at `path`: `.<name>.tmp-`.
fn temp_prefix(path: &Path) -> Result<OsString, StoreError> {
    let name = path.file_name().ok_or_else(|| {
        StoreError::io(
            "use",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file"),
        )
    })?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    Ok(prefix)
}

/// Whose files these should be: the existing store's owner, else the directory's owner.
fn wanted_owner(path: &Path) -> Option<(u32, u32)> {
    let store = fs::symlink_metadata(path).ok().filter(Metadata::is_file);
    store
        .or_else(|| fs::metadata(parent_dir(path)).ok())
        .map(|meta| (meta.uid(), meta.gid()))
}

/// Makes `file`, which this process has just created, exactly mode 0600 (whatever the umask did)
/// and, best effort, owned like the store (so that `besterd user` run as root does not lock the
/// daemon's own user out of its store). Never called on a file someone else created.
fn secure_new_file(file: &File, path: &Path, owner: Option<(u32, u32)>) -> Result<(), StoreError> {
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?;
    if meta.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::io("chmod", path, e))?;
    }
    if let Some((uid, gid)) = owner
        && (meta.uid(), meta.gid()) != (uid, gid)
        && let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid))
    {
        log::debug!("auth: cannot give {} to {uid}:{gid}: {e}", path.display());
    }
    Ok(())
}

/// Holds the exclusive writer lock of a store; released when dropped (the file is closed).
struct WriteLock {
    _file: File,
}

/// Takes the writer lock. The lock file is opened without following a symbolic link; an existing
/// one must be a regular file with one link, owned by this process's user or the store's owner,
/// and is never chmod-ed or chown-ed (a link planted by the store's owner, e.g. to
/// `/etc/shadow`, is refused instead of handed over). A new one is created exclusively (0600)
/// and given to the store's owner.
fn lock_store(path: &Path) -> Result<WriteLock, StoreError> {
    let lock_path = lock_path(path);
    let owner = wanted_owner(path);
    let mut owners = vec![crate::fsutil::euid()];
    owners.extend(owner.map(|(uid, _)| uid));
    let (file, created) = crate::fsutil::open_or_create(&lock_path, &owners)
        .map_err(|e| StoreError::io("open", &lock_path, e))?;
    if created {
        secure_new_file(&file, &lock_path, owner)?;
    }
    loop {
        match file.lock() {
            Ok(()) => return Ok(WriteLock { _file: file }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("lock", &lock_path, e)),
        }
    }
}

/// Removes temp files left by a writer that died before its `rename`. Only called with the lock
/// held, so no live writer owns any of them.
fn remove_stale_temps(path: &Path) {
    let (Ok(prefix), Ok(entries)) = (temp_prefix(path), fs::read_dir(parent_dir(path))) else {
        return;
    };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        if entry.file_name().as_encoded_bytes().starts_with(prefix) {
            let stale = entry.path();
            match fs::remove_file(&stale) {
                Ok(()) => log::info!("auth: removed stale temp file {}", stale.display()),
                Err(e) => log::debug!("auth: cannot remove {}: {e}", stale.display()),
            }
        }
    }
}

/// Creates a fresh temp file next to the store, 0600 from the start (`create_new`).
fn create_temp(path: &Path) -> Result<(PathBuf, File), StoreError> {
    let prefix = temp_prefix(path)?;
    let dir = parent_dir(path);
    let mut last_error = None;
    for _ in 0..16 {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| {
            StoreError::io(
                "name a temp file for",
                path,
                io::Error::other(e.to_string()),
            )
        })?;
        let mut name = prefix.clone();
        name.push(format!("{:016x}", u64::from_ne_bytes(random)));
        let temp = dir.join(name);
        match crate::fsutil::create_new(&temp, 0o600) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(StoreError::io("create", &temp, e)),
        }
    }
    Err(StoreError::io(
        "create a temp file for",
        path,
        last_error.unwrap_or_else(|| io::Error::other("no free temp name")),
    ))
}

/// Replaces the store with `users`: temp file, `fsync`, `rename`, `fsync` of the directory.
/// Readers see the old or the new file, never a torn one. Call with the write lock held.
fn write_atomic(path: &Path, users: &Users) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(&StoreFileRef {
        version: STORE_VERSION,
        users,
    })
    .map_err(|e| StoreError::io("serialize", path, io::Error::other(e)))?;
    bytes.push(b'\n');

    let owner = wanted_owner(path);
    let (temp, mut file) = create_temp(path)?;
    let written = secure_new_file(&file, &temp, owner)
        .and_then(|()| {
            file.write_all(&bytes)
                .map_err(|e| StoreError::io("write", &temp, e))
        })
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| StoreError::io("fsync", &temp, e))
        })
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path).map_err(|e| StoreError::io("rename into", path, e))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename itself durable.
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// The one way to change the store. Takes the exclusive lock on [`lock_path`], re-reads the current
/// file under it (a missing file is empty), applies `f`, and, if `f` succeeded and changed
/// something, writes the result atomically (0600). If `f` fails nothing is written and its error is
/// returned. Blocks while another writer (the daemon or `besterd user`) holds the lock.
///
/// `f` runs with the lock held: do the slow work (hashing) before calling this.
pub fn update<R>(
    path: &Path,
    f: impl FnOnce(&mut Users) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let _lock = lock_store(path)?;
    remove_stale_temps(path);
    let current = load(path)?.map(|(users, _)| users).unwrap_or_default();
    let mut users = current.clone();
    let result = f(&mut users)?;
    if users != current {
        write_atomic(path, &users)?;
    }
    Ok(result)
}

/// Creates the store with one user whose PHC hash was computed beforehand (e.g. by
/// [`hash_password`] or given in the configuration), unless a store file already exists.
/// Returns `true` if it created the file, `false` if one existed (which is left untouched).
/// The name and hash are checked first (`InvalidUsername`, `InvalidHash`).
pub fn bootstrap(path: &Path, username: &str, phc_hash: &str) -> Result<bool, StoreError> {
    validate_username(username)?;
    check_phc(username, phc_hash)?;
    let _lock = lock_store(path)?;
    if stat(path)?.is_some() {
        return Ok(false);
    }
    remove_stale_temps(path);
    let mut users = Users::default();
    users.add(username, phc_hash)?;
    write_atomic(path, &users)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::{DUMMY_PHC, parse_phc};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn store_with(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
        let path = dir.join("users.json");
        for (name, password) in users {
            let phc = hash_password(password).unwrap();
            update(&path, |u| u.add(name, &phc)).unwrap();
        }
        path
    }

    #[test]
    fn add_then_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(
            dir.path(),
            &[("alice", "correct horse"), ("bob", "hunter2")],
        );
        let store = UserStore::open(&path).unwrap();
        assert!(store.verify("alice", "correct horse"));
        assert!(store.verify("bob", "hunter2"));
        assert!(!store.verify("alice", "hunter2"));
        assert!(!store.verify("alice", ""));
        assert!(!store.verify("carol", "correct horse"));
        assert!(!store.verify("", "x"));
        assert_eq!(store.users().names().collect::<Vec<_>>(), ["alice", "bob"]);
    }

    #[test]
    fn the_gateway_right_is_stored_only_when_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("gw", "gw-password"), ("bob", "bob-pw")]);
        assert!(!UserStore::open(&path).unwrap().users().is_gateway("gw"));
        assert!(!fs::read_to_string(&path).unwrap().contains("gateway"));
        update(&path, |u| u.set_gateway("gw", true)).unwrap();
        let store = UserStore::open(&path).unwrap();
        assert!(store.users().is_gateway("gw"));
        assert!(!store.users().is_gateway("bob"));
        assert!(!store.users().is_gateway("nobody"));
        let file: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file["users"]["gw"]["gateway"], true);
        assert!(file["users"]["bob"].get("gateway").is_none());
        update(&path, |u| u.set_gateway("gw", false)).unwrap();
        assert!(!UserStore::open(&path).unwrap().users().is_gateway("gw"));
        assert!(!fs::read_to_string(&path).unwrap().contains("gateway"));
        let missing = update(&path, |u| u.set_gateway("carol", true));
        assert!(matches!(missing, Err(StoreError::NoSuchUser(_))));
        // Not a boolean: the file is refused, never read as "no right".
        let phc = hash_password("x-password").unwrap();
        let text = format!(
            "{{\"version\":1,\"users\":{{\"gw\":{{\"hash\":{phc:?},\"gateway\":\"yes\"}}}}}}"
        );
        fs::write(&path, text).unwrap();
        assert!(matches!(
            UserStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path().join("nope.json")).unwrap();
        assert!(store.users().is_empty());
        assert!(!store.verify("alice", "x"));
    }

    #[test]
    fn files_are_0600_and_hold_only_phc_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(
            dir.path(),
            &[("alice", "plaintext-secret-1"), ("bob", "pw-2")],
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&lock_path(&path)), 0o600);

        let bytes = fs::read(&path).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("plaintext-secret-1"));
        assert!(!text.contains("pw-2"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], 1);
        let users = value["users"].as_object().unwrap();
        assert_eq!(users.len(), 2);
        for entry in users.values() {
            let entry = entry.as_object().unwrap();
            assert_eq!(entry.len(), 1);
            let hash = entry["hash"].as_str().unwrap();
            assert!(
                hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{hash}"
            );
            parse_phc(hash).unwrap();
        }
        // Nothing else was left in the directory (temp files are renamed or removed).
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["users.json", "users.json.lock"]);
    }

    #[test]
    fn mode_is_0600_even_after_a_loose_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(lock_path(&path), fs::Permissions::from_mode(0o640)).unwrap();
        update(&path, |u| u.remove("alice")).unwrap();
        assert_eq!(mode(&path), 0o600);
        // An existing lock file is used as it is: never chmod-ed (it holds nothing).
        assert_eq!(mode(&lock_path(&path)), 0o640);
    }

    #[test]
    fn a_linked_lock_file_is_refused_and_its_target_left_alone() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"root:secret\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        let path = dir.path().join("users.json");
        symlink(&victim, lock_path(&path)).unwrap();
        let err = update(&path, |u| u.add("bob", DUMMY_PHC)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing {}: is a symbolic link",
                lock_path(&path).display()
            )
        );
        fs::remove_file(lock_path(&path)).unwrap();
        fs::hard_link(&victim, lock_path(&path)).unwrap();
        let err = update(&path, |u| u.add("bob", DUMMY_PHC)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing {}: has 2 hard links (expected 1)",
                lock_path(&path).display()
            )
        );
        assert_eq!(mode(&victim), 0o640);
        assert_eq!(fs::read(&victim).unwrap(), b"root:secret\n");
        assert!(!path.exists());
    }

    #[test]
    fn a_store_that_is_a_symbolic_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let real = store_with(dir.path(), &[("alice", "pw")]);
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = UserStore::open(&link).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("refusing {}: is a symbolic link", link.display())
        );
    }

    #[test]
    fn failed_update_leaves_the_file_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        let before = fs::read(&path).unwrap();
        let ino_before = fs::metadata(&path).unwrap().ino();
        let phc = hash_password("other").unwrap();
        let err = update(&path, |u| {
            u.add("bob", &phc)?;
            u.remove("alice")?;
            u.add("alice", &phc)?;
            u.add("alice", &phc) // fails: exists
        })
        .unwrap_err();
        assert!(
            matches!(err, StoreError::UserExists(ref n) if n == "alice"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino_before);
    }

    #[test]
    fn update_without_change_does_not_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        let ino_before = fs::metadata(&path).unwrap().ino();
        let n = update(&path, |u| Ok(u.len())).unwrap();
        assert_eq!(n, 1);
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino_before);
    }

    #[test]
    fn mutations_report_missing_and_existing_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        let phc = hash_password("pw").unwrap();
        let err = update(&path, |u| u.add("alice", &phc)).unwrap_err();
        assert_eq!(err.to_string(), "user \"alice\" already exists");
        let err = update(&path, |u| u.set_hash("bob", &phc)).unwrap_err();
        assert_eq!(err.to_string(), "no such user \"bob\"");
        let err = update(&path, |u| u.remove("bob")).unwrap_err();
        assert!(matches!(err, StoreError::NoSuchUser(ref n) if n == "bob"));
        let err = update(&path, |u| u.add("bob", "not a hash")).unwrap_err();
        assert!(matches!(err, StoreError::InvalidHash { .. }), "{err}");
        let err = update(&path, |u| u.add("-bob", &phc)).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUsername { .. }), "{err}");
    }

    #[test]
    fn stale_temp_files_are_removed_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        let stale = dir.path().join(".users.json.tmp-0123456789abcdef");
        fs::write(&stale, b"{\"half\":").unwrap();
        let unrelated = dir.path().join(".other.json.tmp-0123456789abcdef");
        fs::write(&unrelated, b"keep").unwrap();
        update(&path, |u| u.remove("alice")).unwrap();
        assert!(!stale.exists());
        assert!(unrelated.exists());
    }

    fn corrupt_reason(content: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        fs::write(&path, content).unwrap();
        match UserStore::open(&path) {
            Err(StoreError::Corrupt { path: p, reason }) => {
                assert_eq!(p, path);
                // Writers refuse to go on from a corrupt file too, and leave it alone.
                let err = update(&path, |u| u.remove("alice")).unwrap_err();
                assert!(matches!(err, StoreError::Corrupt { .. }));
                assert_eq!(fs::read(&path).unwrap(), content);
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let phc = DUMMY_PHC;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty"),
            (b"  \n".to_vec(), "empty"),
            (b"{\"version\":1,\"users\":{".to_vec(), "invalid JSON"),
            (b"\xff\xfe".to_vec(), "invalid JSON"),
            (b"[]".to_vec(), "invalid JSON"),
            (b"{\"users\":{}}".to_vec(), "missing field `version`"),
            (b"{\"version\":2,\"users\":{},\"x\":1}".to_vec(), "unsupported version 2"),
            (b"{\"version\":1}".to_vec(), "missing field `users`"),
            (b"{\"version\":1,\"users\":{},\"extra\":0}".to_vec(), "unknown field `extra`"),
            (
                format!(r#"{{"version":1,"users":{{"alice":{{"hash":"{phc}","pw":"x"}}}}}}"#)
                    .into_bytes(),
                "unknown field `pw`",
            ),
            (
                br#"{"version":1,"users":{"alice":{"hash":1}}}"#.to_vec(),
                "invalid type",
            ),
            (
                format!(
                    r#"{{"version":1,"users":{{"alice":{{"hash":"{phc}"}},"alice":{{"hash":"{phc}"}}}}}}"#
                )
                .into_bytes(),
                "appears twice",
            ),
            (
                format!(r#"{{"version":1,"users":{{"a b":{{"hash":"{phc}"}}}}}}"#).into_bytes(),
                "invalid user name",
            ),
        ];
        for (content, expected) in cases {
            let reason = corrupt_reason(&content);
            assert!(
                reason.contains(expected),
                "{:?}: {reason:?} lacks {expected:?}",
                String::from_utf8_lossy(&content)
            );
        }
    }

    #[test]
    fn corrupt_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        fs::write(&path, b"garbage").unwrap();
        let err = UserStore::open(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        assert!(text.contains("invalid JSON"), "{text}");
    }

    #[test]
    fn unusable_stored_hash_rejects_only_that_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let good = hash_password("pw").unwrap();
        let content = format!(
            r#"{{"version":1,"users":{{"alice":{{"hash":"garbage"}},"bob":{{"hash":"{good}"}},"carol":{{"hash":"$argon2id$v=19$m=4194304,t=2,p=1$NZzRBEWn3/y+xWAOvyX5Lw$vdHY8gp7TKpnjYQavnvXbxo7iSDTaIwpPBwK4ZQI7D0"}}}}}}"#
        );
        fs::write(&path, content).unwrap();
        let store = UserStore::open(&path).unwrap();
        assert!(!store.verify("alice", "pw"));
        assert!(!store.verify("alice", "garbage"));
        assert!(!store.verify("carol", "pw"));
        assert!(store.verify("bob", "pw"));
    }

    #[test]
    fn reload_sees_updates_from_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let mut store = UserStore::open(&path).unwrap();
        assert!(!store.reload_if_changed().unwrap());

        let phc = hash_password("pw").unwrap();
        update(&path, |u| u.add("alice", &phc)).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.users().contains("alice"));
        assert!(store.verify("alice", "pw"));
        assert!(!store.reload_if_changed().unwrap());

        // Another UserStore (e.g. the admin command) and a password change.
        let other = UserStore::open(&path).unwrap();
        assert!(other.verify("alice", "pw"));
        let phc2 = hash_password("pw2").unwrap();
        update(other.path(), |u| u.set_hash("alice", &phc2)).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.verify("alice", "pw2"));
        assert!(!store.verify("alice", "pw"));

        // A broken version is reported once and the last good users stay in effect.
        fs::write(&path, b"{broken").unwrap();
        assert!(matches!(
            store.reload_if_changed(),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(!store.reload_if_changed().unwrap());
        assert!(store.users().contains("alice"));

        // Deleting the file empties the store.
        fs::remove_file(&path).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.users().is_empty());
    }

    #[test]
    fn bootstrap_creates_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let phc = hash_password("first").unwrap();
        assert!(bootstrap(&path, "admin", &phc).unwrap());
        assert_eq!(mode(&path), 0o600);
        let created = fs::read(&path).unwrap();
        assert!(UserStore::open(&path).unwrap().verify("admin", "first"));

        let phc2 = hash_password("second").unwrap();
        assert!(!bootstrap(&path, "admin", &phc2).unwrap());
        assert!(!bootstrap(&path, "other", &phc2).unwrap());
        assert_eq!(fs::read(&path).unwrap(), created);

        // An existing store, even an empty or corrupt one, is left alone.
        let path2 = dir.path().join("empty.json");
        fs::write(&path2, b"").unwrap();
        assert!(!bootstrap(&path2, "admin", &phc).unwrap());
        assert_eq!(fs::read(&path2).unwrap(), b"");

        let path3 = dir.path().join("bad.json");
        let err = bootstrap(&path3, "admin", "$argon2id$nonsense").unwrap_err();
        assert!(matches!(err, StoreError::InvalidHash { .. }), "{err}");
        let err = bootstrap(&path3, "bad name", &phc).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUsername { .. }), "{err}");
        assert!(!path3.exists());
    }

    #[test]
    fn username_rules() {
        for ok in [
            "a",
            "A",
            "0",
            "alice",
            "a.b",
            "a_b",
            "a-b",
            "_x",
            "x.",
            &"a".repeat(64),
        ] {
            validate_username(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            "",
            &"a".repeat(65),
            ".alice",
            "-alice",
            "a b",
            "a/b",
            "a:b",
            "a@b",
            "é",
            "a\0",
            "a\n",
            "..",
        ] {
            let err = validate_username(bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidUsername { ref name, .. } if name == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_rules() {
        validate_password("x").unwrap();
        validate_password(&"é".repeat(512)).unwrap(); // 1024 bytes
        validate_password(" leading and trailing spaces ").unwrap();
        assert!(validate_password("").is_err());
        assert!(validate_password(&"a".repeat(1025)).is_err());
        assert!(validate_password(&"é".repeat(513)).is_err());
        assert!(hash_password("").is_err());
    }

    #[test]
    fn errors_never_contain_the_password() {
        let err = hash_password(&"s3cr3t".repeat(200)).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let name = "x".repeat(10_000);
        let text = validate_username(&name).unwrap_err().to_string();
        assert!(text.len() < 200, "{}", text.len());
    }

    #[test]
    fn lock_path_appends_lock() {
        assert_eq!(
            lock_path(Path::new("/var/lib/besterd/users.json")),
            Path::new("/var/lib/besterd/users.json.lock")
        );
        assert_eq!(parent_dir(Path::new("users.json")), Path::new("."));
    }

    #[test]
    fn public_keys_are_added_bounded_removed_and_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with(dir.path(), &[("alice", "pw")]);
        let key = |n: u8| ed25519_dalek::SigningKey::from_bytes(&[n; 32]).verifying_key();
        update(&path, |u| u.add_public_key("alice", &key(1))).unwrap();
        let users = UserStore::open(&path).unwrap().users().clone();
        let first = keys::encode_public_key(&key(1));
        assert_eq!(users.public_keys("alice"), std::slice::from_ref(&first));
        assert!(users.public_keys("bob").is_empty());
        let mut users = users;
        assert_eq!(
            users
                .add_public_key("alice", &key(1))
                .unwrap_err()
                .to_string(),
            format!("user \"alice\": already has the key {first}")
        );
        for n in 2..=16 {
            users.add_public_key("alice", &key(n)).unwrap();
        }
        assert_eq!(
            users
                .add_public_key("alice", &key(17))
                .unwrap_err()
                .to_string(),
            "user \"alice\": already has 16 keys, the most a user may have"
        );
        assert_eq!(
            users
                .add_public_key("bob", &key(1))
                .unwrap_err()
                .to_string(),
            "no such user \"bob\""
        );
        users.remove_public_key("alice", &first).unwrap();
        assert_eq!(users.public_keys("alice").len(), 15);
        assert_eq!(
            users
                .remove_public_key("alice", &first)
                .unwrap_err()
                .to_string(),
            format!("user \"alice\": has no key {first}")
        );
        // A hand-edited file with a bad, a non-canonical or a repeated key is refused.
        let phc = hash_password("pw").unwrap();
        for (keys, reason) in [
            (
                format!("[\"{first}\",\"{first}\"]"),
                "keys[1] appears twice",
            ),
            (
                "[\"AAAA\"]".to_string(),
                "keys[0]: an ed25519 public key is 32 bytes",
            ),
            (
                format!("[\"{}\"]", first.replace('=', "")),
                "keys[0]: a public key must be base64",
            ),
        ] {
            let text = format!(
                "{{\"version\":1,\"users\":{{\"alice\":{{\"hash\":\"{phc}\",\"keys\":{keys}}}}}}}"
            );
            std::fs::write(&path, text).unwrap();
            let err = UserStore::open(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("user \"alice\": {reason}")), "{err}");
        }
    }
}
