//! The delivery store on disk: one SQLite database (WAL journal) holding every user's queue of
//! stored pushes. Only the writer thread (`delivery/writer.rs`) calls this module; nothing here
//! runs on the event loop.
//!
//! Schema: `messages(id, user, time, kind, sender, data, bytes)` with `id` the durable message id
//! (`boot << 32 | seq`, so ids only grow, across restarts too) and an index on `(user, id)` for a
//! user's queue in order; `meta(key, value)` keeps the boot count. Expiry needs no index of its
//! own: ids are given in the order the messages are stored, so it reads the table from its first
//! row up to the first one that is not too old ([`Store::expire`]), and every commit writes two
//! trees, not three.
//!
//! Store-and-forward (PROTOCOL.md §7): `outbound(id, server, time, kind, sender, data, users,
//! bytes)` holds, per peer server, the deliveries waiting for that server's end-to-end ack (`id`
//! is the durable id of the origin, `users` their names there as a JSON array); `origins(key,
//! time)` remembers which forwarded deliveries this server has taken (`<server>/<id>/<user>`),
//! for `max_age`, so a peer's redelivery is not stored or pushed twice.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// How the store makes a commit durable (`[delivery] fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit is on the disk (fsync) before anything is reported `stored`: a power loss
    /// loses nothing reported.
    Always,
    /// Commits reach the operating system, which writes them when it likes: a crash of besterd
    /// loses nothing, a power loss may lose the last commits.
    Never,
}

/// A stored push, as it goes in and comes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The durable message id.
    pub id: u64,
    /// The user whose queue it is in.
    pub user: String,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The payload type.
    pub kind: String,
    /// The push's `from`, as JSON text.
    pub sender: String,
    /// The payload data, as JSON text.
    pub data: String,
    /// For a delivery forwarded by a peer: `<server>/<its id>/<user>`, so that a redelivery is
    /// recognised and kept once.
    pub origin: Option<String>,
}

/// A delivery waiting in a peer server's outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// The durable id (this server's): the peer keeps one copy per id and user.
    pub id: u64,
    /// The peer server.
    pub server: String,
    /// When it was queued, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The payload type.
    pub kind: String,
    /// The push's `from`, as JSON text.
    pub sender: String,
    /// The payload data, as JSON text.
    pub data: String,
    /// The users, by their names on the peer.
    pub users: Vec<String>,
}

impl OutRecord {
    /// What the record counts for against the byte limits.
    pub fn bytes(&self) -> u64 {
        let users: usize = self.users.iter().map(|u| u.len() + 3).sum();
        (self.server.len() + self.kind.len() + self.sender.len() + self.data.len() + users + 32)
            as u64
    }
}

impl Record {
    /// What the record counts for against the byte limits.
    pub fn bytes(&self) -> u64 {
        (self.user.len() + self.kind.len() + self.sender.len() + self.data.len() + 32) as u64
    }
}

/// Why the store cannot be used.
#[derive(Debug)]
pub enum StoreError {
    /// The path is refused ([`crate::fsutil::refused`]: a symbolic link, another user's, …).
    Refused(std::io::Error),
    /// The database failed, or is not one.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Refused(e) => write!(f, "{e}"),
            StoreError::Other(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Other(e.to_string())
    }
}

/// One user's queue in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Messages.
    pub count: u64,
    /// Their bytes (as [`Record::bytes`] counts them).
    pub bytes: u64,
    /// When the oldest was stored (ms since the epoch), if any.
    pub oldest_ms: Option<u64>,
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    boot: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    data TEXT NOT NULL,
    bytes INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_user ON messages(user, id);
DROP INDEX IF EXISTS messages_time;
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    data TEXT NOT NULL,
    users TEXT NOT NULL,
    bytes INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS outbound_server ON outbound(server, id);
CREATE INDEX IF NOT EXISTS outbound_time ON outbound(time);
CREATE TABLE IF NOT EXISTS origins (key TEXT PRIMARY KEY, time INTEGER NOT NULL) WITHOUT ROWID, STRICT;
CREATE INDEX IF NOT EXISTS origins_time ON origins(time);
";

/// Refuse a path besterd did not make or cannot trust: a symbolic link, not a regular file,
/// another user's, or in a directory others can change.
fn check_path(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::fsutil::check_dir(&parent)?;
    let owners = [crate::fsutil::euid()];
    let (file, _created) = crate::fsutil::open_or_create(path, &owners)?;
    drop(file);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if let Some(file) = crate::fsutil::open_read_nofollow(&side)? {
            crate::fsutil::check_regular(&file, &side, &owners)?;
        }
    }
    Ok(())
}

impl Store {
    /// Open (or create) the database at `path`, check it, and count this start in its boot
    /// number. A file that is not a sound database is an error, never replaced.
    pub fn open(path: &Path, fsync: Fsync) -> Result<Store, StoreError> {
        check_path(path).map_err(StoreError::Refused)?;
        let what = |e: rusqlite::Error| {
            StoreError::Other(format!(
                "{} is not a usable delivery store ({e}); move it away to start with an empty one, or restore a backup",
                path.display()
            ))
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(what)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(what)?;
        // Room for every statement this module prepares (about 20), so none is parsed again.
        conn.set_prepared_statement_cache_capacity(64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(what)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "{}: cannot use a write-ahead log (journal mode {mode})",
                path.display()
            )));
        }
        let sync = match fsync {
            Fsync::Always => "FULL",
            Fsync::Never => "NORMAL",
        };
        // The log is copied into the database every 4 MiB (1024 pages: fewer checkpoints, each
        // with its fsyncs, than every 1 MiB) and kept at most 4 MiB long, so it never holds
        // much more disk than the messages themselves.
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA wal_autocheckpoint=1024; PRAGMA journal_size_limit=4194304"
        ))
        .map_err(what)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(what)?;
        if check != "ok" {
            return Err(StoreError::Other(format!(
                "{} is damaged ({check}); move it away to start with an empty one, or restore a backup",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA).map_err(what)?;
        let boot: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'boot'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(what)?
            .unwrap_or(0);
        let boot = boot + 1;
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('boot', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![boot],
        )
        .map_err(what)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            boot: boot as u64,
        })
    }

    /// The first message id of this run: every id given out from here on is larger than any
    /// the store has seen.
    pub fn first_id(&self) -> u64 {
        (self.boot << 32) | 1
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn disk_bytes(&self) -> u64 {
        let size = |suffix: &str| {
            let mut p = self.path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
        };
        size("") + size("-wal")
    }

    /// Bytes free for new messages: on the file system holding the database, and the pages
    /// inside it that deleted messages left free (reused before the file grows), less the
    /// write-ahead log's size (what copying it into the database may still take: a checkpoint
    /// on a full disk fails, and the log then never shrinks); with the file system's free bytes
    /// alone.
    pub fn free_bytes(&self) -> Option<super::budget::Figures> {
        let pages = |pragma: &str| {
            self.conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                .map_or(0, |v| v.max(0) as u64)
        };
        let inside = pages("freelist_count") * pages("page_size");
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len());
        let fs_free = self.fs_free_bytes()?;
        Some(super::budget::Figures {
            fs_free,
            free: (fs_free + inside).saturating_sub(wal),
        })
    }

    /// Bytes free for us on the file system holding the database, if it can be told.
    pub fn fs_free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Copy the write-ahead log into the database and empty it (gives its disk space back).
    pub fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    /// The largest message id and outbound delivery id in the store now (0 for none): what
    /// another process writes from here on has larger ids.
    pub fn last_ids(&self) -> Result<(u64, u64), StoreError> {
        let max = |sql: &str| -> Result<u64, StoreError> {
            let id: Option<i64> = self.conn.query_row(sql, [], |r| r.get(0))?;
            Ok(id.map_or(0, |id| id as u64))
        };
        Ok((
            max("SELECT max(id) FROM messages")?,
            max("SELECT max(id) FROM outbound")?,
        ))
    }

    /// The users with messages, and the servers with outbound deliveries, whose ids lie after
    /// `after` (messages, outbound) and below `below`: what another process holding the same
    /// file (the one a hot upgrade replaces) stored since [`Store::last_ids`] was taken. Two
    /// range reads of the id keys.
    pub fn written_between(
        &self,
        after: (u64, u64),
        below: u64,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let names = |sql: &str, after: u64| -> Result<Vec<String>, StoreError> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map(params![after as i64, below as i64], |r| r.get(0))?;
            rows.map(|r| r.map_err(StoreError::from)).collect()
        };
        Ok((
            names(
                "SELECT DISTINCT user FROM messages WHERE id > ?1 AND id < ?2 ORDER BY user",
                after.0,
            )?,
            names(
                "SELECT DISTINCT server FROM outbound WHERE id > ?1 AND id < ?2 ORDER BY server",
                after.1,
            )?,
        ))
    }

    /// Every user's queue in figures.
    pub fn depths(&self) -> Result<HashMap<String, Depth>, StoreError> {
        self.grouped_depths(
            "SELECT user, count(*), sum(bytes), min(time) FROM messages GROUP BY user",
        )
    }

    /// When the first message still in `user`'s queue was stored, if it holds one (one step
    /// down the `(user, id)` index, whatever the store holds).
    pub fn first_time(&self, user: &str) -> Result<Option<u64>, StoreError> {
        self.first_in(
            "SELECT time FROM messages WHERE user = ?1 ORDER BY id LIMIT 1",
            user,
        )
    }

    /// When the first delivery still in `server`'s outbound queue was stored, if any.
    pub fn first_out_time(&self, server: &str) -> Result<Option<u64>, StoreError> {
        self.first_in(
            "SELECT time FROM outbound WHERE server = ?1 ORDER BY id LIMIT 1",
            server,
        )
    }

    fn first_in(&self, sql: &str, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params![name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|t| t as u64))
    }

    /// Start a transaction (a group commit).
    pub fn begin(&mut self) -> Result<(), StoreError> {
        // Prepared once and kept, as every statement of a commit is.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(())
    }

    /// Commit the transaction: durable as the fsync policy says once this returns.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }

    /// Undo the transaction (after a failure inside it).
    pub fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Add a record to its user's queue.
    pub fn insert(&mut self, record: &Record) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO messages(id, user, time, kind, sender, data, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        stmt.execute(params![
            record.id as i64,
            record.user,
            record.time_ms as i64,
            record.kind,
            record.sender,
            record.data,
            record.bytes() as i64
        ])?;
        if let Some(key) = &record.origin {
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO origins(key, time) VALUES (?1, ?2)")?
                .execute(params![key, record.time_ms as i64])?;
        }
        Ok(())
    }

    /// Remove these of `user`'s messages; returns the bytes each removed one counted for.
    pub fn delete_ids(&mut self, user: &str, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE id = ?1 AND user = ?2 RETURNING bytes")?;
        let mut removed = Vec::new();
        for id in ids {
            let Ok(id) = i64::try_from(*id) else { continue };
            if let Some(bytes) = stmt
                .query_row(params![id, user], |r| r.get::<_, i64>(0))
                .optional()?
            {
                removed.push(bytes as u64);
            }
        }
        Ok(removed)
    }

    /// Remove `user`'s messages with ids up to `upto`; returns the bytes each counted for.
    pub fn delete_upto(&mut self, user: &str, upto: u64) -> Result<Vec<u64>, StoreError> {
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE user = ?1 AND id <= ?2 RETURNING bytes")?;
        let rows = stmt.query_map(params![user, upto], |r| r.get::<_, i64>(0))?;
        rows.map(|r| r.map(|b| b as u64).map_err(StoreError::from))
            .collect()
    }

    /// `user`'s oldest messages, at most `count` of them: (id, bytes).
    pub fn oldest(&mut self, user: &str, count: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, bytes FROM messages WHERE user = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![user, count as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// `user`'s messages with `after < id <= upto` stored at or after `since_ms`, in order: at
    /// most `max` of them and about `max_bytes` (at least one). Returns them and whether more
    /// are left.
    pub fn load(
        &mut self,
        user: &str,
        (after, upto): (u64, u64),
        since_ms: u64,
        (max, max_bytes): (usize, u64),
    ) -> Result<(Vec<Record>, bool), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, time, kind, sender, data, bytes FROM messages
             WHERE user = ?1 AND id > ?2 AND id <= ?3 AND time >= ?4 ORDER BY id LIMIT ?5",
        )?;
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![
            user,
            after as i64,
            upto,
            since_ms as i64,
            max as i64 + 1
        ])?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while let Some(row) = rows.next()? {
            if out.len() == max || (bytes >= max_bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            bytes += row.get::<_, i64>(5)? as u64;
            out.push(Record {
                id: row.get::<_, i64>(0)? as u64,
                user: user.to_string(),
                time_ms: row.get::<_, i64>(1)? as u64,
                kind: row.get(2)?,
                sender: row.get(3)?,
                data: row.get(4)?,
                origin: None,
            });
        }
        Ok((out, false))
    }

    /// Remove the messages stored before `cutoff_ms`, oldest id first, up to the first one that
    /// is not (the table is read in id order, which is the order of storing, so the reading
    /// stops where expiry does); returns (user, bytes) per message removed. After the wall clock
    /// was set back, a message stored after that is removed once those stored before it are (at
    /// most that step late); [`Store::load`] never returns it once it is too old.
    pub fn expire(&mut self, cutoff_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let first_kept: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM messages WHERE time >= ?1 ORDER BY id LIMIT 1")?
            .query_row(params![cutoff_ms as i64], |r| r.get(0))
            .optional()?;
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE id < ?1 RETURNING user, bytes")?;
        let rows = stmt.query_map(params![first_kept.unwrap_or(i64::MAX)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// A `SELECT name, count, bytes, oldest … GROUP BY name` as figures per name.
    fn grouped_depths(&self, sql: &str) -> Result<HashMap<String, Depth>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Depth {
                    count: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    oldest_ms: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                },
            ))
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// Every peer server's outbound queue in figures.
    pub fn out_depths(&self) -> Result<HashMap<String, Depth>, StoreError> {
        self.grouped_depths(
            "SELECT server, count(*), sum(bytes), min(time) FROM outbound GROUP BY server",
        )
    }

    /// Whether a forwarded delivery with this origin key was taken already.
    pub fn origin_known(&mut self, key: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM origins WHERE key = ?1")?;
        Ok(stmt
            .query_row(params![key], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Add a delivery to its server's outbound queue.
    pub fn insert_out(&mut self, record: &OutRecord) -> Result<(), StoreError> {
        let users = serde_json::to_string(&record.users).expect("names serialise");
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO outbound(id, server, time, kind, sender, data, users, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        stmt.execute(params![
            record.id as i64,
            record.server,
            record.time_ms as i64,
            record.kind,
            record.sender,
            record.data,
            users,
            record.bytes() as i64
        ])?;
        Ok(())
    }

    /// Remove these deliveries of `server`'s queue; returns the bytes each removed one counted
    /// for.
    pub fn delete_out(&mut self, server: &str, ids: &[u64]) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM outbound WHERE id = ?1 AND server = ?2 RETURNING bytes")?;
        let mut removed = Vec::new();
        for id in ids {
            let Ok(id) = i64::try_from(*id) else { continue };
            if let Some(bytes) = stmt
                .query_row(params![id, server], |r| r.get::<_, i64>(0))
                .optional()?
            {
                removed.push(bytes as u64);
            }
        }
        Ok(removed)
    }

    /// `server`'s oldest deliveries, at most `count` of them: (id, bytes).
    pub fn oldest_out(
        &mut self,
        server: &str,
        count: usize,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, bytes FROM outbound WHERE server = ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![server, count as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// `server`'s deliveries with `id > after` stored at or after `since_ms`, in order: at most
    /// `max`. Returns them and whether more are left.
    pub fn load_out(
        &mut self,
        server: &str,
        after: u64,
        since_ms: u64,
        max: usize,
    ) -> Result<(Vec<OutRecord>, bool), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, time, kind, sender, data, users FROM outbound
             WHERE server = ?1 AND id > ?2 AND time >= ?3 ORDER BY id LIMIT ?4",
        )?;
        let mut rows = stmt.query(params![
            server,
            after as i64,
            since_ms as i64,
            max as i64 + 1
        ])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if out.len() == max {
                return Ok((out, true));
            }
            let users: String = row.get(5)?;
            out.push(OutRecord {
                id: row.get::<_, i64>(0)? as u64,
                server: server.to_string(),
                time_ms: row.get::<_, i64>(1)? as u64,
                kind: row.get(2)?,
                sender: row.get(3)?,
                data: row.get(4)?,
                users: serde_json::from_str(&users)
                    .map_err(|e| StoreError::Other(format!("outbound users: {e}")))?,
            });
        }
        Ok((out, false))
    }

    /// Remove every outbound delivery queued before `cutoff_ms`, and the origin keys older than
    /// that; returns (server, bytes) per delivery removed.
    pub fn expire_out(&mut self, cutoff_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM origins WHERE time < ?1")?
            .execute(params![cutoff_ms as i64])?;
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM outbound WHERE time < ?1 RETURNING server, bytes")?;
        let rows = stmt.query_map(params![cutoff_ms as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    /// Copy the whole database, consistent, to `to` (a new file), while it is in use.
    pub fn backup_to(&self, to: &Path) -> Result<(), StoreError> {
        self.conn
            .execute("VACUUM INTO ?1", params![to.to_string_lossy()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, user: &str, time_ms: u64) -> Record {
        Record {
            id,
            user: user.into(),
            time_ms,
            kind: "chat".into(),
            sender: r#"{"user":"alice","server":"s"}"#.into(),
            data: format!("{{\"n\":{id}}}"),
            origin: None,
        }
    }

    #[test]
    fn ids_grow_across_opens_and_queues_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let first = {
            let mut s = Store::open(&path, Fsync::Always).unwrap();
            s.begin().unwrap();
            for i in 0..5 {
                s.insert(&record(s.first_id() + i, "bob", 10)).unwrap();
            }
            s.commit().unwrap();
            s.first_id()
        };
        let mut s = Store::open(&path, Fsync::Always).unwrap();
        assert!(s.first_id() > first + 5);
        let (got, more) = s.load("bob", (0, u64::MAX), 0, (3, 1 << 20)).unwrap();
        assert!(more);
        assert_eq!(
            got.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first, first + 1, first + 2]
        );
        let (rest, more) = s
            .load("bob", (got[2].id, u64::MAX), 0, (10, 1 << 20))
            .unwrap();
        assert!(!more);
        assert_eq!(rest.len(), 2);
        assert_eq!(s.delete_upto("bob", first + 1).unwrap().len(), 2);
        assert_eq!(s.delete_ids("bob", &[first + 3, 77]).unwrap().len(), 1);
        assert_eq!(s.delete_ids("carol", &[first + 2]).unwrap().len(), 0);
        assert_eq!(s.depths().unwrap()["bob"].count, 2);
        assert_eq!(s.expire(11).unwrap().len(), 2);
        assert!(s.depths().unwrap().is_empty());
    }

    #[test]
    fn expiry_reads_in_id_order_and_stops_at_the_first_message_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        {
            // A store of an earlier build, with its index on `time`: dropped at the next open.
            let s = Store::open(&path, Fsync::Never).unwrap();
            s.conn
                .execute_batch("CREATE INDEX messages_time ON messages(time)")
                .unwrap();
        }
        let mut s = Store::open(&path, Fsync::Never).unwrap();
        let indexes: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'messages_time'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        let id = s.first_id();
        s.begin().unwrap();
        // The clock went back between the third and the fourth.
        for (i, time) in [10, 10, 20, 5, 30].into_iter().enumerate() {
            s.insert(&record(id + i as u64, "bob", time)).unwrap();
        }
        s.commit().unwrap();
        assert_eq!(s.expire(15).unwrap().len(), 2);
        // The fourth is kept until the third goes, but never read once too old.
        let (got, _) = s.load("bob", (0, u64::MAX), 15, (10, 1 << 20)).unwrap();
        assert_eq!(
            got.iter().map(|r| r.id).collect::<Vec<_>>(),
            [id + 2, id + 4]
        );
        assert_eq!(s.expire(25).unwrap().len(), 2);
        assert_eq!(s.expire(31).unwrap().len(), 1);
        assert!(s.depths().unwrap().is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Store::open(&path, Fsync::Always).err().unwrap().to_string();
        assert!(e.contains("is not a usable delivery store"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
    }

    #[test]
    fn a_symbolic_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        let e = Store::open(&path, Fsync::Always).err().unwrap().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(!dir.path().join("elsewhere").exists());
    }
}
