//! The verifier pool: a few named threads that run argon2 and user-store writes off the event loop.
//!
//! Owns the job queue (bounded: a full queue is the caller's "busy"), the result channel, and the
//! daemon's shared, lazily reloaded [`UserStore`]. Each finished job goes back over an `mpsc`
//! channel and wakes the loop through a [`mio::Waker`]; results carry an opaque tag chosen by the
//! caller (e.g. a `ConnId`) so the server can route them.
//!
//! Each thread keeps its argon2 work area (19 MiB at the default parameters) from one check to
//! the next while logins keep coming, and gives it back to the system once it has had no job for
//! a quiet period ([`RELEASE_AFTER`]; every thread waits on the queue's condition variable with
//! its own timeout): a server at rest holds no work area at all.
//!
//! It must not: block the caller (`submit` and `try_recv` never wait), hold the store mutex during
//! an argon2 computation, log a password, or die silently (a panic in a job becomes a
//! [`AuthOutcome::StoreError`] answer and the thread goes on).

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::jwt::JwtKeys;
use super::resume::TokenKey;
use ed25519_dalek::VerifyingKey;

use super::jobs::{
    ABSENT, AuthJob, AuthOutcome, AuthResult, Credential, EntryDigests, Resumed, Stamp, TokenCheck,
    TokenGrant, TokenRefusal, UserSnapshot, hash_digest, key_digest, pin_digest,
};
use super::keys;
use super::user_store::{self, StoreError, UserStore};

/// How many times deeper than `auth_queue` token jobs may queue (see [`AuthPool::submit`]).
pub const TOKEN_QUEUE_FACTOR: usize = 8;

/// How long a verifier thread keeps its argon2 work area without a job.
pub const RELEASE_AFTER: Duration = Duration::from_secs(5);

/// A pool of verifier threads with a bounded job queue. Dropping it stops the threads: jobs still
/// queued are discarded unanswered, and the drop waits for the jobs in progress (one argon2 run,
/// plus possibly a store write, per thread).
pub struct AuthPool<T> {
    shared: Arc<Shared<T>>,
    results: Receiver<AuthResult<T>>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    held: Arc<[AtomicUsize]>,
}

/// What every worker thread shares.
struct Shared<T> {
    store_path: PathBuf,
    store: Mutex<UserStore>,
    /// Bumped (under the store mutex) each time a reload saw a change.
    generation: AtomicU64,
    jobs: Mutex<Queue<T>>,
    /// Signalled when a job is queued or the pool closes.
    job_ready: Condvar,
    stopping: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    /// How long a thread keeps its work area without a job.
    quiet: Duration,
    /// Bytes of work area each thread holds.
    held: Arc<[AtomicUsize]>,
    /// The key of resume tokens and fingerprints.
    token_key: Mutex<Arc<TokenKey>>,
    /// Password checks (argon2 runs) so far.
    password_checks: AtomicU64,
}

/// The bounded job queue.
struct Queue<T> {
    jobs: VecDeque<AuthJob<T>>,
    max: usize,
    closed: bool,
}

fn lock<U>(mutex: &Mutex<U>) -> MutexGuard<'_, U> {
    // A poisoned mutex only means a job panicked; the store and the receiver are still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Send + 'static> AuthPool<T> {
    /// Start `threads` verifier threads reading the store at `store` and a bounded job queue of
    /// `queue` entries; each finished job is sent back over an mpsc channel and `waker.wake()` is called.
    ///
    /// The store is read once here, so a corrupt store fails the start (`InvalidData`, the message
    /// names the file); later it is reloaded whenever the file changes. `threads` and `queue` must
    /// be at least 1 (`InvalidInput`).
    pub fn start(
        store: PathBuf,
        threads: usize,
        queue: usize,
        waker: Arc<mio::Waker>,
    ) -> io::Result<Self> {
        Self::start_with_quiet(store, threads, queue, waker, RELEASE_AFTER)
    }

    /// [`AuthPool::start`] with threads that give their work area back after `quiet` without a job.
    pub fn start_with_quiet(
        store: PathBuf,
        threads: usize,
        queue: usize,
        waker: Arc<mio::Waker>,
        quiet: Duration,
    ) -> io::Result<Self> {
        if threads == 0 || queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the auth pool needs at least one thread and one queue slot",
            ));
        }
        let opened = UserStore::open(&store).map_err(|e| match e {
            StoreError::Io { ref source, .. } => io::Error::new(source.kind(), e.to_string()),
            _ => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        let (result_tx, result_rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let held: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        let shared = Arc::new(Shared {
            store_path: store,
            store: Mutex::new(opened),
            generation: AtomicU64::new(1),
            jobs: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(queue.min(64)),
                max: queue,
                closed: false,
            }),
            job_ready: Condvar::new(),
            stopping: Arc::clone(&stopping),
            waker,
            quiet,
            held: Arc::clone(&held),
            token_key: Mutex::new(Arc::new(TokenKey::random())),
            password_checks: AtomicU64::new(0),
        });
        let mut pool = AuthPool {
            shared: Arc::clone(&shared),
            results: result_rx,
            stopping,
            threads: Vec::with_capacity(threads),
            held,
        };
        for n in 0..threads {
            let shared = Arc::clone(&shared);
            let results = result_tx.clone();
            let handle = thread::Builder::new()
                .name(format!("besterd-auth-{n}"))
                .spawn(move || worker_loop(&shared, &results, n))?; // `pool` drops: started threads stop
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Queue a job without blocking. Err(job) gives it back when the queue is full (caller answers "busy").
    ///
    /// A token job takes microseconds, not an argon2 run: it may queue up to
    /// [`TOKEN_QUEUE_FACTOR`] times as deep, so a reconnect storm of resume logins is not turned
    /// away while the same queue still bounds password checks.
    pub fn submit(&self, job: AuthJob<T>) -> Result<(), AuthJob<T>> {
        let mut queue = lock(&self.shared.jobs);
        let max = match job {
            AuthJob::Token { .. } => queue.max.saturating_mul(TOKEN_QUEUE_FACTOR),
            _ => queue.max,
        };
        if queue.closed || queue.jobs.len() >= max {
            return Err(job);
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.shared.job_ready.notify_one();
        Ok(())
    }

    /// Next finished job, without blocking.
    pub fn try_recv(&self) -> Option<AuthResult<T>> {
        self.results.try_recv().ok()
    }

    /// Sign and check resume tokens (and fingerprints) with `key` from now on.
    pub fn set_token_key(&self, key: TokenKey) {
        *lock(&self.shared.token_key) = Arc::new(key);
    }

    /// The key resume tokens are signed with now.
    pub fn token_key(&self) -> Arc<TokenKey> {
        Arc::clone(&lock(&self.shared.token_key))
    }

    /// How many password checks (argon2 runs) the pool has made.
    pub fn password_checks(&self) -> u64 {
        self.shared.password_checks.load(Ordering::Relaxed)
    }

    /// Bytes of argon2 work area the threads hold right now (0 once they have been quiet).
    pub fn work_area_bytes(&self) -> usize {
        self.held.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }
}

impl<T> Drop for AuthPool<T> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.shared.jobs).closed = true; // workers stop once the queue is drained
        self.shared.job_ready.notify_all();
        for handle in self.threads.drain(..) {
            let name = handle.thread().name().unwrap_or("besterd-auth").to_owned();
            if handle.join().is_err() {
                log::error!("auth: thread {name} panicked");
            }
        }
    }
}

fn worker_loop<T>(shared: &Shared<T>, results: &Sender<AuthResult<T>>, n: usize) {
    // The quiet period counts from the last password hash: the store checks that come every
    // second (session revocation) need no work area and do not keep it.
    let mut last_hash = Instant::now();
    loop {
        // Hold the queue's lock only to take a job; the job runs after the guard is dropped.
        let mut queue = lock(&shared.jobs);
        let job = loop {
            if let Some(job) = queue.jobs.pop_front() {
                break job;
            }
            if queue.closed {
                return;
            }
            let quiet_for = last_hash.elapsed();
            if quiet_for >= shared.quiet {
                // Quiet: give the work area back before waiting without a timeout. Unmapping
                // 19 MiB takes a moment: not while the event loop may want the lock.
                if user_store::work_area_bytes() > 0 {
                    drop(queue);
                    user_store::release_work_area();
                    shared.held[n].store(0, Ordering::Relaxed);
                    log::debug!("auth: thread {n} quiet; argon2 work area released");
                    queue = lock(&shared.jobs);
                    continue;
                }
                // Nothing to wake up for but a job. A timed wait here woke every thread every
                // millisecond at rest.
                queue = shared
                    .job_ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let (guard, _) = shared
                .job_ready
                .wait_timeout(queue, shared.quiet - quiet_for)
                .unwrap_or_else(PoisonError::into_inner);
            // Back to the top: a job first, else (quiet now) the release above.
            queue = guard;
        };
        drop(queue);
        if shared.stopping.load(Ordering::SeqCst) {
            continue; // discard what is left in the queue
        }
        let (tag, username, work) = match job {
            AuthJob::Verify {
                tag,
                username,
                password,
            } => (tag, username, Work::Verify { password }),
            AuthJob::ChangePassword {
                tag,
                username,
                old,
                new,
            } => (tag, username, Work::ChangePassword { old, new }),
            AuthJob::Lookup {
                tag,
                username,
                fingerprint,
            } => (tag, username, Work::Lookup { fingerprint }),
            AuthJob::Token {
                tag,
                token,
                check,
                now,
            } => (tag, String::new(), Work::Token { token, check, now }),
            AuthJob::KeyLogin {
                tag,
                username,
                key,
                server,
                nonce,
                signature,
            } => {
                let work = Work::Key(Box::new(KeyWork {
                    key,
                    server,
                    nonce,
                    signature,
                }));
                (tag, username, work)
            }
            AuthJob::Snapshot { tag, since } => (tag, String::new(), Work::Snapshot { since }),
        };
        let hashes = !matches!(
            work,
            Work::Snapshot { .. } | Work::Lookup { .. } | Work::Token { .. } | Work::Key(_)
        );
        let mut username = username;
        let ran = catch_unwind(AssertUnwindSafe(|| work.run(shared, &mut username)));
        let (outcome, stamp) = ran.unwrap_or_else(|_| {
            // Not validated yet: quote it and cut it short.
            let shown: String = username.chars().take(64).collect();
            log::error!("auth user={shown:?}: the password check panicked");
            let e = "internal error while checking the password".to_owned();
            (AuthOutcome::StoreError(e), None)
        });
        if hashes {
            last_hash = Instant::now();
            shared.password_checks.fetch_add(1, Ordering::Relaxed);
        }
        let logged_in = matches!(outcome, AuthOutcome::Ok | AuthOutcome::Token(Ok(_)));
        let fingerprint = logged_in.then(|| entry_fingerprint(shared, &username));
        let gateway = logged_in && lock(&shared.store).users().is_gateway(&username);
        shared.held[n].store(user_store::work_area_bytes(), Ordering::Relaxed);
        if results
            .send(AuthResult {
                tag,
                username,
                outcome,
                stamp,
                fingerprint,
                gateway,
            })
            .is_err()
        {
            return; // the pool is gone
        }
        if let Err(e) = shared.waker.wake() {
            log::error!("auth: cannot wake the event loop: {e}");
        }
    }
}

/// A job without its tag and user name (kept outside `catch_unwind` to answer even after a panic).
enum Work {
    Verify {
        password: String,
    },
    ChangePassword {
        old: String,
        new: String,
    },
    Lookup {
        fingerprint: [u8; 32],
    },
    Token {
        token: String,
        check: TokenCheck,
        now: u64,
    },
    Key(Box<KeyWork>),
    Snapshot {
        since: u64,
    },
}

/// What a public-key login checks.
struct KeyWork {
    key: Box<VerifyingKey>,
    server: String,
    nonce: String,
    signature: String,
}

impl Work {
    /// Run the job; a token job sets `username` to the token's user.
    fn run<T>(self, shared: &Shared<T>, username: &mut String) -> (AuthOutcome, Option<Stamp>) {
        #[cfg(test)]
        if username == tests::PANIC_USER {
            panic!("injected panic");
        }
        match self {
            Work::Verify { password } => {
                // Wiped from memory when this arm ends, whatever the outcome.
                let password = zeroize::Zeroizing::new(password);
                let (stored, generation) = current_hash(shared, username);
                if user_store::verify_password(username, stored.as_deref(), &password) {
                    let stamp = stored.as_deref().map(|phc| Stamp {
                        generation,
                        digest: hash_digest(phc),
                        credential: Credential::Password,
                    });
                    (AuthOutcome::Ok, stamp)
                } else {
                    (AuthOutcome::BadCredentials, None)
                }
            }
            Work::ChangePassword { old, new } => {
                let (old, new) = (zeroize::Zeroizing::new(old), zeroize::Zeroizing::new(new));
                change_password(shared, username, &old, &new)
            }
            Work::Lookup { fingerprint } => lookup(shared, username, &fingerprint),
            Work::Token { token, check, now } => {
                let token = zeroize::Zeroizing::new(token);
                let (outcome, stamp) = match check {
                    TokenCheck::Jwt { keys, require_user } => {
                        jwt_login(shared, &keys, require_user, &token, now, username)
                    }
                    TokenCheck::Resume => resume_login(shared, &token, now, username),
                    TokenCheck::Granted { user, info } => {
                        granted_login(shared, user, info, username)
                    }
                };
                (AuthOutcome::Token(outcome), stamp)
            }
            Work::Key(work) => key_login(shared, username, &work),
            Work::Snapshot { since } => (AuthOutcome::Users(snapshot(shared, since)), None),
        }
    }
}

/// Reloads the store if the file changed; the mutex must be held (`store` is its guard).
fn reload<T>(shared: &Shared<T>, store: &mut UserStore) {
    match store.reload_if_changed() {
        Ok(true) => {
            let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
            log::info!(
                "auth: reloaded {} ({} users, generation {generation})",
                store.path().display(),
                store.users().len()
            );
        }
        Ok(false) => {}
        Err(e) => log::warn!("auth: keeping the users read before: {e}"),
    }
}

/// Reloads the store if the file changed and returns a copy of the user's hash, with the
/// generation it was read in. The mutex is held only for this (a `stat`, sometimes a read), never
/// during argon2.
fn current_hash<T>(shared: &Shared<T>, username: &str) -> (Option<String>, u64) {
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    (store.users().get(username).map(str::to_owned), generation)
}

/// A certificate login: the user exists and their pinned certificate, if any, is this one.
fn lookup<T>(
    shared: &Shared<T>,
    username: &str,
    fingerprint: &[u8; 32],
) -> (AuthOutcome, Option<Stamp>) {
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    let users = store.users();
    if !users.contains(username) {
        return (AuthOutcome::BadCredentials, None);
    }
    let pin = users.cert_pin(username);
    // Not secret: a fingerprint is public, so a plain comparison is fine.
    if pin.is_some_and(|pin| pin != user_store::fingerprint_hex(fingerprint)) {
        log::info!("auth user={username}: not the certificate pinned for this user");
        return (AuthOutcome::BadCredentials, None);
    }
    let stamp = Stamp {
        generation,
        digest: pin_digest(pin),
        credential: Credential::Certificate,
    };
    (AuthOutcome::Ok, Some(stamp))
}

/// The key's fingerprint of `username`'s stored entry (its hash; `""` without one; a marker when
/// the store does not hold the user).
fn entry_fingerprint<T>(shared: &Shared<T>, username: &str) -> String {
    let key = Arc::clone(&lock(&shared.token_key));
    let store = lock(&shared.store);
    let users = store.users();
    let entry = match users.get(username) {
        Some(hash) => hash,
        None if users.contains(username) => "",
        None => ABSENT,
    };
    key.fingerprint(entry)
}

/// What a token session of `username` stands on: its password hash if it has one, else its
/// existence (revoked when the user is deleted); nothing when the store does not hold it.
fn token_stamp(users: &user_store::Users, username: &str, generation: u64) -> Option<Stamp> {
    match users.get(username) {
        Some(phc) => Some(Stamp {
            generation,
            digest: hash_digest(phc),
            credential: Credential::Password,
        }),
        None if users.contains(username) => Some(Stamp {
            generation,
            digest: 0,
            credential: Credential::Presence,
        }),
        None => None,
    }
}

/// A JWT login: the token verifies, and with `require_user` its `sub` is in the store (which the
/// session then stands on: it is revoked when the user is deleted).
fn jwt_login<T>(
    shared: &Shared<T>,
    keys: &JwtKeys,
    require_user: bool,
    token: &str,
    now: u64,
    username: &mut String,
) -> (Result<TokenGrant, TokenRefusal>, Option<Stamp>) {
    let verified = match keys.verify(token, now) {
        Ok(verified) => verified,
        Err(e) => return (Err(TokenRefusal::Jwt(e)), None),
    };
    *username = verified.user;
    let grant = TokenGrant {
        expires: Some(verified.expires),
        info: verified.info.map(|i| i.get().to_owned()),
        resumed: None,
    };
    if !require_user {
        return (Ok(grant), None);
    }
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    if !store.users().contains(username) {
        return (Err(TokenRefusal::UnknownUser), None);
    }
    let stamp = Stamp {
        generation,
        digest: 0,
        credential: Credential::Presence,
    };
    (Ok(grant), Some(stamp))
}

/// A login the auth handler granted: what it stands on in the store, if anything.
fn granted_login<T>(
    shared: &Shared<T>,
    user: String,
    info: Option<String>,
    username: &mut String,
) -> (Result<TokenGrant, TokenRefusal>, Option<Stamp>) {
    *username = user;
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    let grant = TokenGrant {
        expires: None,
        info,
        resumed: None,
    };
    (Ok(grant), token_stamp(store.users(), username, generation))
}

/// A resume login: the token is this key's, unexpired, and the user's stored entry is the one it
/// was issued against. The session stands on that entry again.
fn resume_login<T>(
    shared: &Shared<T>,
    token: &str,
    now: u64,
    username: &mut String,
) -> (Result<TokenGrant, TokenRefusal>, Option<Stamp>) {
    let key = Arc::clone(&lock(&shared.token_key));
    let resume = match key.verify(token, now) {
        Ok(resume) => resume,
        Err(e) => return (Err(TokenRefusal::Resume(e)), None),
    };
    *username = resume.user;
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    let users = store.users();
    let entry = match users.get(username) {
        Some(hash) => hash,
        None if users.contains(username) => "",
        None => ABSENT,
    };
    // Constant time is not needed: the fingerprint is inside a token that already verified.
    if key.fingerprint(entry) != resume.fingerprint {
        return (Err(TokenRefusal::Changed), None);
    }
    let grant = TokenGrant {
        expires: resume.session_expires,
        info: resume.info,
        resumed: Some(Resumed {
            session: resume.session,
            token_expires: resume.expires,
        }),
    };
    (Ok(grant), token_stamp(users, username, generation))
}

/// A public-key login: the signature is the key's over this server, user and nonce, and the key
/// is one of the user's. The signature is checked first, whoever the user is, so the time taken
/// does not tell whether the user exists or has the key.
fn key_login<T>(
    shared: &Shared<T>,
    username: &str,
    work: &KeyWork,
) -> (AuthOutcome, Option<Stamp>) {
    let signed = keys::verify(
        &work.key,
        &work.server,
        username,
        &work.nonce,
        &work.signature,
    );
    let key = keys::encode_public_key(&work.key);
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    let users = store.users();
    let known = users.public_keys(username).contains(&key);
    if !(signed && known) {
        if users.contains(username) {
            let why = if known {
                "the signature does not verify"
            } else {
                "not one of the user's keys"
            };
            log::info!("auth user={username}: public-key login refused: {why}");
        }
        return (AuthOutcome::BadCredentials, None);
    }
    let stamp = Stamp {
        generation,
        digest: key_digest(&key),
        credential: Credential::Key,
    };
    (AuthOutcome::Ok, Some(stamp))
}

/// Every user's digest, if the store is at a newer generation than `since`.
fn snapshot<T>(shared: &Shared<T>, since: u64) -> Option<UserSnapshot> {
    let mut store = lock(&shared.store);
    reload(shared, &mut store);
    let generation = shared.generation.load(Ordering::SeqCst);
    if generation <= since {
        return None;
    }
    let users = store.users();
    let users = users
        .names()
        .filter_map(|name| {
            let digests = EntryDigests {
                password: hash_digest(users.get(name)?),
                certificate: pin_digest(users.cert_pin(name)),
                keys: users
                    .public_keys(name)
                    .iter()
                    .map(|k| key_digest(k))
                    .collect(),
                gateway: users.is_gateway(name),
            };
            Some((name.to_owned(), digests))
        })
        .collect();
    Some(UserSnapshot { generation, users })
}

fn change_password<T>(
    shared: &Shared<T>,
    username: &str,
    old: &str,
    new: &str,
) -> (AuthOutcome, Option<Stamp>) {
    let (stored, generation) = current_hash(shared, username);
    if !user_store::verify_password(username, stored.as_deref(), old) {
        return (AuthOutcome::BadCredentials, None);
    }
    let Some(verified) = stored else {
        return (AuthOutcome::BadCredentials, None); // unreachable: an unknown user never verifies
    };
    let new_hash = match user_store::hash_password(new) {
        Ok(hash) => hash,
        Err(StoreError::InvalidPassword(reason)) => {
            return (AuthOutcome::InvalidPassword(reason.to_owned()), None);
        }
        Err(e) => {
            log::error!("auth user={username}: cannot hash the new password: {e}");
            return (AuthOutcome::StoreError(e.to_string()), None);
        }
    };
    let written = user_store::update(&shared.store_path, |users| {
        match users.get(username) {
            // The hash we checked `old` against is still the current one: safe to replace.
            Some(current) if current == verified => {
                users.set_hash(username, &new_hash).map(|()| true)
            }
            // Deleted, or its password changed meanwhile (`besterd user passwd`): don't clobber it.
            _ => Ok(false),
        }
    });
    match written {
        Ok(true) => {
            log::info!("auth user={username}: password changed");
            let stamp = Stamp {
                generation,
                digest: hash_digest(&new_hash),
                credential: Credential::Password,
            };
            (AuthOutcome::Ok, Some(stamp))
        }
        Ok(false) => {
            log::info!("auth user={username}: password change lost a race with another change");
            (AuthOutcome::BadCredentials, None)
        }
        Err(e) => {
            log::error!("auth user={username}: cannot store the new password: {e}");
            (AuthOutcome::StoreError(e.to_string()), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use mio::{Events, Poll, Token};

    use super::*;
    use crate::auth::user_store::{hash_password, lock_path, update};

    /// A pool plus the `Poll` its waker belongs to.
    struct Harness {
        poll: Poll,
        events: Events,
        pool: AuthPool<u32>,
    }

    impl Harness {
        fn start(store: &Path, threads: usize, queue: usize) -> Harness {
            let poll = Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
            let pool = AuthPool::start(store.to_owned(), threads, queue, waker).unwrap();
            Harness {
                poll,
                events: Events::with_capacity(8),
                pool,
            }
        }

        /// Waits (on the waker, with a deadline) for `n` results, sorted by tag.
        fn results(&mut self, n: usize) -> Vec<AuthResult<u32>> {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut out = Vec::new();
            loop {
                while let Some(result) = self.pool.try_recv() {
                    out.push(result);
                }
                if out.len() >= n {
                    break;
                }
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .expect("timed out waiting for auth results");
                // A signal (e.g. SIGCHLD from another test's child) may interrupt the wait.
                match self.poll.poll(&mut self.events, Some(left)) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => other.unwrap(),
                }
            }
            assert_eq!(out.len(), n, "more results than jobs");
            out.sort_by_key(|r| r.tag);
            out
        }

        fn outcome(&mut self, job: AuthJob<u32>) -> AuthOutcome {
            let tag = *job.tag();
            self.pool.submit(job).unwrap();
            let result = self.results(1).pop().unwrap();
            assert_eq!(result.tag, tag);
            result.outcome
        }
    }

    fn verify(tag: u32, username: &str, password: &str) -> AuthJob<u32> {
        AuthJob::Verify {
            tag,
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    fn change(tag: u32, username: &str, old: &str, new: &str) -> AuthJob<u32> {
        AuthJob::ChangePassword {
            tag,
            username: username.to_owned(),
            old: old.to_owned(),
            new: new.to_owned(),
        }
    }

    fn store_with_alice(dir: &Path) -> PathBuf {
        let path = dir.join("users.json");
        let phc = hash_password("old-pw").unwrap();
        update(&path, |u| u.add("alice", &phc)).unwrap();
        path
    }

    #[test]
    fn verify_ok_and_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 2, 8);
        h.pool.submit(verify(1, "alice", "old-pw")).unwrap();
        h.pool.submit(verify(2, "alice", "wrong")).unwrap();
        h.pool.submit(verify(3, "mallory", "old-pw")).unwrap();
        let results = h.results(3);
        let outcomes: Vec<_> = results
            .iter()
            .map(|r| (r.tag, r.username.as_str(), r.outcome.clone()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "alice", AuthOutcome::Ok),
                (2, "alice", AuthOutcome::BadCredentials),
                (3, "mallory", AuthOutcome::BadCredentials),
            ]
        );
    }

    #[test]
    fn change_password_then_old_fails_and_new_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 4);

        assert_eq!(
            h.outcome(change(1, "alice", "wrong", "new-pw")),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            h.outcome(change(2, "nobody", "old-pw", "new-pw")),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            h.outcome(change(3, "alice", "old-pw", "")),
            AuthOutcome::InvalidPassword("it is empty".to_owned())
        );
        assert_eq!(h.outcome(verify(4, "alice", "old-pw")), AuthOutcome::Ok);

        assert_eq!(
            h.outcome(change(5, "alice", "old-pw", "new-pw")),
            AuthOutcome::Ok
        );
        assert_eq!(
            h.outcome(verify(6, "alice", "old-pw")),
            AuthOutcome::BadCredentials
        );
        assert_eq!(h.outcome(verify(7, "alice", "new-pw")), AuthOutcome::Ok);

        // Written through the store file: another reader sees it, with 0600 and no plaintext.
        let store = UserStore::open(&path).unwrap();
        assert!(store.verify("alice", "new-pw"));
        let bytes = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("new-pw"));
    }

    #[test]
    fn stamps_and_snapshots_follow_the_store_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let phc = crate::auth::user_store::UserStore::open(&path)
            .unwrap()
            .users()
            .get("alice")
            .unwrap()
            .to_owned();
        let mut h = Harness::start(&path, 1, 4);
        h.pool.submit(verify(1, "alice", "old-pw")).unwrap();
        let login = h.results(1).pop().unwrap();
        let stamp = login.stamp.expect("a stamp for a good login");
        assert_eq!(stamp.digest, hash_digest(&phc));
        let snapshot = |h: &mut Harness, since| {
            h.pool.submit(AuthJob::Snapshot { tag: 9, since }).unwrap();
            match h.results(1).pop().unwrap().outcome {
                AuthOutcome::Users(snapshot) => snapshot,
                other => panic!("{other:?}"),
            }
        };
        let first = snapshot(&mut h, 0).expect("newer than generation 0");
        assert_eq!(first.generation, stamp.generation);
        assert_eq!(first.users["alice"].password, stamp.digest);
        assert_eq!(snapshot(&mut h, first.generation), None, "unchanged");
        // A password change stamps the session with the new hash; the next snapshot has it.
        h.pool
            .submit(change(2, "alice", "old-pw", "new-pw"))
            .unwrap();
        let changed = h.results(1).pop().unwrap();
        assert_eq!(changed.outcome, AuthOutcome::Ok);
        let new_stamp = changed.stamp.expect("a stamp for the changer");
        let second = snapshot(&mut h, first.generation).expect("the store changed");
        assert!(second.generation > first.generation);
        assert_eq!(second.users["alice"].password, new_stamp.digest);
        assert_ne!(new_stamp.digest, stamp.digest);
        h.pool.submit(verify(3, "alice", "wrong")).unwrap();
        assert_eq!(
            h.results(1).pop().unwrap().stamp,
            None,
            "no stamp on failure"
        );
    }

    #[test]
    fn certificate_lookups_check_existence_and_the_pin_without_argon2() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 4);
        let lookup = |tag, username: &str, fingerprint| AuthJob::Lookup {
            tag,
            username: username.to_owned(),
            fingerprint,
        };
        h.pool.submit(lookup(1, "alice", [1; 32])).unwrap();
        let result = h.results(1).pop().unwrap();
        assert_eq!(result.outcome, AuthOutcome::Ok);
        let stamp = result.stamp.expect("a stamp");
        assert_eq!(stamp.credential, Credential::Certificate);
        assert_eq!(stamp.digest, pin_digest(None));
        assert_eq!(
            h.outcome(lookup(2, "Alice", [1; 32])),
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            h.outcome(lookup(3, "mallory", [1; 32])),
            AuthOutcome::BadCredentials
        );
        update(&path, |u| u.set_cert_pin("alice", Some(&[2; 32]))).unwrap();
        assert_eq!(
            h.outcome(lookup(4, "alice", [1; 32])),
            AuthOutcome::BadCredentials
        );
        h.pool.submit(lookup(5, "alice", [2; 32])).unwrap();
        let stamp = h.results(1).pop().unwrap().stamp.expect("a stamp");
        assert_eq!(stamp.digest, pin_digest(Some(&"02".repeat(32))));
        assert_eq!(h.pool.work_area_bytes(), 0, "no password was hashed");
    }

    #[test]
    fn key_logins_check_the_signature_and_the_users_keys_without_argon2() {
        use base64::Engine;
        use ed25519_dalek::{Signer, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let alice = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        update(&path, |u| u.add_public_key("alice", &alice.verifying_key())).unwrap();
        let mut h = Harness::start(&path, 1, 4);
        let sign = |key: &SigningKey, server: &str, user: &str| {
            let message = keys::login_message(server, user, "n0nce");
            base64::engine::general_purpose::STANDARD.encode(key.sign(&message).to_bytes())
        };
        let job = |tag, user: &str, key: &SigningKey, signature: String| AuthJob::KeyLogin {
            tag,
            username: user.to_owned(),
            key: Box::new(key.verifying_key()),
            server: "alpha".into(),
            nonce: "n0nce".into(),
            signature,
        };
        h.pool
            .submit(job(1, "alice", &alice, sign(&alice, "alpha", "alice")))
            .unwrap();
        let result = h.results(1).pop().unwrap();
        assert_eq!(result.outcome, AuthOutcome::Ok);
        let stamp = result.stamp.expect("a stamp");
        assert_eq!(stamp.credential, Credential::Key);
        assert_eq!(
            stamp.digest,
            key_digest(&keys::encode_public_key(&alice.verifying_key()))
        );
        for (tag, user, key, signature) in [
            (2, "alice", &alice, sign(&alice, "beta", "alice")),
            (3, "alice", &other, sign(&other, "alpha", "alice")),
            (4, "mallory", &alice, sign(&alice, "alpha", "mallory")),
            (5, "alice", &alice, "garbage".to_string()),
        ] {
            assert_eq!(
                h.outcome(job(tag, user, key, signature)),
                AuthOutcome::BadCredentials,
                "{tag}"
            );
        }
        assert_eq!(h.pool.work_area_bytes(), 0, "no password was hashed");
    }

    #[test]
    fn pool_sees_users_added_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json"); // does not exist yet
        let mut h = Harness::start(&path, 1, 4);
        assert_eq!(
            h.outcome(verify(1, "bob", "pw")),
            AuthOutcome::BadCredentials
        );
        let phc = hash_password("pw").unwrap();
        update(&path, |u| u.add("bob", &phc)).unwrap();
        assert_eq!(h.outcome(verify(2, "bob", "pw")), AuthOutcome::Ok);
        update(&path, |u| u.remove("bob")).unwrap();
        assert_eq!(
            h.outcome(verify(3, "bob", "pw")),
            AuthOutcome::BadCredentials
        );
    }

    #[test]
    fn change_password_does_not_clobber_a_concurrent_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 4);

        // Hold the writer lock so the worker stops right before its write...
        let lock = File::create(lock_path(&path)).unwrap();
        lock.lock().unwrap();
        h.pool
            .submit(change(1, "alice", "old-pw", "from-client"))
            .unwrap();
        // ...and meanwhile the admin sets another password (bypassing the lock we hold).
        let admin_phc = hash_password("from-admin").unwrap();
        let mut users = UserStore::open(&path).unwrap().users().clone();
        users.set_hash("alice", &admin_phc).unwrap();
        std::fs::write(
            &path,
            serde_json::to_vec(&serde_json::json!({"version": 1, "users": users})).unwrap(),
        )
        .unwrap();
        drop(lock);

        // If the worker checked `old` before the admin's write, the compare-and-swap refuses;
        // if after, `old` is simply wrong. Either way the admin's password stays.
        assert_eq!(h.results(1)[0].outcome, AuthOutcome::BadCredentials);
        assert!(
            UserStore::open(&path)
                .unwrap()
                .verify("alice", "from-admin")
        );
    }

    #[test]
    fn full_queue_gives_the_job_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 1);

        // The only worker takes this job and then blocks on the writer lock we hold.
        let lock = File::create(lock_path(&path)).unwrap();
        lock.lock().unwrap();
        h.pool
            .submit(change(1, "alice", "old-pw", "new-pw"))
            .unwrap();
        // At most one more job fits (the queue slot), whether or not the worker took job 1 yet.
        let mut accepted = vec![1];
        let mut refused = Vec::new();
        for tag in 2..=4 {
            match h.pool.submit(verify(tag, "alice", "old-pw")) {
                Ok(()) => accepted.push(tag),
                Err(job) => refused.push(*job.tag()),
            }
        }
        assert!(accepted.len() <= 2, "accepted {accepted:?}");
        assert!(!refused.is_empty());
        assert_eq!(accepted.len() + refused.len(), 4);

        drop(lock);
        let results = h.results(accepted.len());
        assert_eq!(results.iter().map(|r| r.tag).collect::<Vec<_>>(), accepted);
        assert_eq!(results[0].outcome, AuthOutcome::Ok);
    }

    #[test]
    fn corrupt_store_fails_the_start_and_later_corruption_keeps_old_users() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{").unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
        let err = AuthPool::<u32>::start(bad, 1, 1, Arc::clone(&waker))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("bad.json"), "{err}");
        let err = AuthPool::<u32>::start(dir.path().join("x"), 0, 1, waker)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 4);
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(h.outcome(verify(1, "alice", "old-pw")), AuthOutcome::Ok);
        // Writes refuse to build on a corrupt file.
        assert!(matches!(
            h.outcome(change(2, "alice", "old-pw", "x")),
            AuthOutcome::StoreError(_)
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not json");
    }

    #[test]
    fn threads_are_named_and_stop_when_the_pool_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let h = Harness::start(&path, 3, 2);
        let names: Vec<_> = h
            .pool
            .threads
            .iter()
            .map(|t| t.thread().name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["besterd-auth-0", "besterd-auth-1", "besterd-auth-2"]
        );
        h.pool.submit(verify(1, "alice", "old-pw")).unwrap();
        drop(h); // joins; would hang if a thread did not stop
    }

    /// Jobs for this user panic inside the worker (see `Work::run`).
    pub(super) const PANIC_USER: &str = "panic.test";

    #[test]
    fn a_panicking_job_is_answered_and_the_pool_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_with_alice(dir.path());
        let mut h = Harness::start(&path, 1, 4);
        assert!(matches!(
            h.outcome(verify(1, PANIC_USER, "x")),
            AuthOutcome::StoreError(_)
        ));
        assert!(matches!(
            h.outcome(change(2, PANIC_USER, "x", "y")),
            AuthOutcome::StoreError(_)
        ));
        assert_eq!(h.outcome(verify(3, "alice", "old-pw")), AuthOutcome::Ok);
    }

    #[test]
    fn work_areas_are_released_after_a_quiet_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(dir.path());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
        let quiet = Duration::from_millis(300);
        let pool = AuthPool::start_with_quiet(store, 2, 8, waker, quiet).unwrap();
        let mut h = Harness {
            poll,
            events: Events::with_capacity(8),
            pool,
        };
        assert_eq!(h.pool.work_area_bytes(), 0, "nothing held before any login");
        for tag in 0..4 {
            h.pool.submit(verify(tag, "alice", "old-pw")).unwrap();
        }
        let outcomes: Vec<AuthOutcome> = h.results(4).into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, vec![AuthOutcome::Ok; 4]);
        // Kept between checks: at least one 19 MiB area (m=19456 KiB) right after the logins.
        let held = h.pool.work_area_bytes();
        assert!(held >= 19456 * 1024, "held {held} bytes");
        // Let go once quiet (each of the 2 threads within 2 quiet periods; deadline far beyond),
        // even while store checks (the server's revocation check, every second) keep coming
        // faster than the quiet period: they hash nothing.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tag = 100;
        while h.pool.work_area_bytes() > 0 {
            assert!(Instant::now() < deadline, "work areas still held");
            h.pool.submit(AuthJob::Snapshot { tag, since: 0 }).unwrap();
            h.results(1);
            tag += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        // And a later login still works (a new area is allocated).
        assert_eq!(h.outcome(verify(9, "alice", "old-pw")), AuthOutcome::Ok);
        assert!(h.pool.work_area_bytes() >= 19456 * 1024);
    }

    /// Voluntary context switches of each of this process's threads named `besterd-auth-*`, by
    /// thread id.
    fn auth_thread_switches() -> std::collections::HashMap<String, u64> {
        let mut each = std::collections::HashMap::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !name.starts_with("besterd-auth") {
                continue;
            }
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            each.insert(task.file_name().to_string_lossy().into_owned(), switches);
        }
        each
    }

    #[test]
    fn idle_threads_sleep_until_a_job_comes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(dir.path());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
        let quiet = Duration::from_millis(100);
        let pool = AuthPool::start_with_quiet(store, 2, 8, waker, quiet).unwrap();
        let mut h = Harness {
            poll,
            events: Events::with_capacity(8),
            pool,
        };
        assert_eq!(h.outcome(verify(1, "alice", "old-pw")), AuthOutcome::Ok);
        // Past the quiet period (areas given back), then count wake-ups over half a second.
        let deadline = Instant::now() + Duration::from_secs(20);
        while h.pool.work_area_bytes() > 0 {
            assert!(Instant::now() < deadline, "work areas still held");
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = auth_thread_switches();
        std::thread::sleep(Duration::from_millis(500));
        // Threads of other tests' pools may start or end meanwhile: only those seen both times.
        let woke: u64 = auth_thread_switches()
            .iter()
            .filter_map(|(tid, after)| Some(after.saturating_sub(*before.get(tid)?)))
            .sum();
        // Other tests' pools in this process may wake now and then; a timed wait of 1 ms would
        // be about a thousand.
        assert!(
            woke < 50,
            "{woke} wake-ups of idle verifier threads in 500 ms"
        );
        assert_eq!(h.outcome(verify(2, "alice", "old-pw")), AuthOutcome::Ok);
    }

    #[test]
    fn job_debug_hides_passwords() {
        let text = format!("{:?}", change(1, "alice", "old-secret", "new-secret"));
        assert!(text.contains("alice"));
        assert!(!text.contains("secret"), "{text}");
        let text = format!("{:?}", verify(1, "alice", "the-secret"));
        assert!(!text.contains("secret"), "{text}");
    }
}
