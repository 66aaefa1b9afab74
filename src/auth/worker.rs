//! The verifier pool: a few threads that run argon2 (≈ 20 ms a check, release build) so the event
//! loop never does. Jobs go in over a bounded queue (a full queue is answered "busy" by the caller,
//! never waited on); results come back over a channel and the loop is woken through its
//! `mio::Waker`. Each job carries an opaque tag the loop uses to route its result.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use log::{error, warn};

use super::user_store::{self, StoreError, UserStore};

/// Work for the pool.
pub enum AuthJob<T> {
    /// identify / `bester.authenticate`: check a password.
    Verify {
        /// Routes the result.
        tag: T,
        /// Who.
        username: String,
        /// The password to check.
        password: String,
    },
    /// `bester.passwd`: check `old`, then store `new`.
    ChangePassword {
        /// Routes the result.
        tag: T,
        /// Whose password.
        username: String,
        /// The current password.
        old: String,
        /// The new password.
        new: String,
    },
}

/// A finished job.
#[derive(Debug)]
pub struct AuthResult<T> {
    /// The job's tag.
    pub tag: T,
    /// The user the job was about.
    pub username: String,
    /// What happened.
    pub outcome: AuthOutcome,
}

/// What a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Password right (and, for a change, the new one stored).
    Ok,
    /// Unknown user or wrong password (deliberately not told apart).
    BadCredentials,
    /// The new password is not acceptable.
    InvalidPassword(String),
    /// The store could not be read or written.
    StoreError(String),
}

/// The verifier threads.
pub struct AuthPool<T> {
    jobs: Option<SyncSender<AuthJob<T>>>,
    results: Receiver<AuthResult<T>>,
    threads: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> AuthPool<T> {
    /// Start `threads` verifier threads on the store at `store`, with room for `queue` waiting jobs.
    pub fn start(
        store: PathBuf,
        threads: usize,
        queue: usize,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<AuthJob<T>>(queue);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (results_tx, results) = mpsc::channel();
        let shared = Arc::new(Mutex::new(None::<UserStore>));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let worker = Worker {
                store: store.clone(),
                cache: Arc::clone(&shared),
            };
            let jobs = Arc::clone(&jobs_rx);
            let results = results_tx.clone();
            let waker = Arc::clone(&waker);
            let handle = std::thread::Builder::new()
                .name(format!("besterd-auth-{n}"))
                .spawn(move || worker.run(&jobs, &results, &waker))?;
            handles.push(handle);
        }
        Ok(AuthPool {
            jobs: Some(jobs_tx),
            results,
            threads: handles,
        })
    }

    /// Queue a job without blocking; gives it back when the queue is full.
    pub fn submit(&self, job: AuthJob<T>) -> Result<(), AuthJob<T>> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// A finished job, if any, without blocking.
    pub fn try_recv(&self) -> Option<AuthResult<T>> {
        self.results.try_recv().ok()
    }
}

impl<T> Drop for AuthPool<T> {
    fn drop(&mut self) {
        // Closing the queue ends each thread after its current job.
        self.jobs = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

struct Worker {
    store: PathBuf,
    cache: Arc<Mutex<Option<UserStore>>>,
}

impl Worker {
    fn run<T>(
        &self,
        jobs: &Mutex<Receiver<AuthJob<T>>>,
        results: &Sender<AuthResult<T>>,
        waker: &mio::Waker,
    ) {
        loop {
            let job = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else {
                return; // the pool was dropped
            };
            let (tag, username, outcome) = match job {
                AuthJob::Verify {
                    tag,
                    username,
                    password,
                } => {
                    let outcome = self.guarded(|| self.verify(&username, &password));
                    (tag, username, outcome)
                }
                AuthJob::ChangePassword {
                    tag,
                    username,
                    old,
                    new,
                } => {
                    let outcome = self.guarded(|| self.change(&username, &old, &new));
                    (tag, username, outcome)
                }
            };
            if results
                .send(AuthResult {
                    tag,
                    username,
                    outcome,
                })
                .is_err()
            {
                return;
            }
            if let Err(e) = waker.wake() {
                error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// A panic in one job is reported as a store error, and the thread goes on.
    fn guarded(&self, f: impl FnOnce() -> AuthOutcome) -> AuthOutcome {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
            error!("password check panicked");
            AuthOutcome::StoreError("internal error during the password check".into())
        })
    }

    /// The current hash of a user, re-reading the store if it changed. The lock is held only for
    /// that, never during argon2.
    fn current_hash(&self, username: &str) -> Result<Option<String>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_mut() {
            Some(store) => {
                store.reload_if_changed()?;
            }
            None => *cache = Some(UserStore::open(&self.store)?),
        }
        Ok(cache
            .as_ref()
            .and_then(|s| s.hash_of(username))
            .map(str::to_string))
    }

    fn verify(&self, username: &str, password: &str) -> AuthOutcome {
        match self.current_hash(username) {
            Ok(hash) => {
                if user_store::verify(username, hash.as_deref(), password) {
                    AuthOutcome::Ok
                } else {
                    AuthOutcome::BadCredentials
                }
            }
            Err(e) => {
                warn!("user store: {e}");
                AuthOutcome::StoreError(e.to_string())
            }
        }
    }

    fn change(&self, username: &str, old: &str, new: &str) -> AuthOutcome {
        match self.verify(username, old) {
            AuthOutcome::Ok => {}
            other => return other,
        }
        if let Err(e) = user_store::validate_password(new) {
            return AuthOutcome::InvalidPassword(e.to_string());
        }
        match user_store::set_password(&self.store, username, new) {
            Ok(()) => AuthOutcome::Ok,
            Err(StoreError::NoSuchUser(_)) => AuthOutcome::BadCredentials,
            Err(e) => AuthOutcome::StoreError(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mio::{Events, Poll, Token, Waker};

    use super::*;

    fn wait<T: Send + 'static>(pool: &AuthPool<T>, poll: &mut Poll) -> AuthResult<T> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut events = Events::with_capacity(4);
        loop {
            if let Some(r) = pool.try_recv() {
                return r;
            }
            assert!(Instant::now() < deadline, "no result in time");
            match poll.poll(&mut events, Some(Duration::from_millis(200))) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => other.unwrap(),
            }
        }
    }

    #[test]
    fn verify_and_change_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        user_store::add_user(&path, "alice", "old").unwrap();
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let pool = AuthPool::start(path.clone(), 2, 8, waker).unwrap();
        let job = |tag: u32, password: &str| AuthJob::Verify {
            tag,
            username: "alice".into(),
            password: password.into(),
        };
        assert!(pool.submit(job(1, "old")).is_ok());
        let r = wait(&pool, &mut poll);
        assert_eq!((r.tag, r.outcome), (1, AuthOutcome::Ok));
        assert!(pool.submit(job(2, "bad")).is_ok());
        assert_eq!(wait(&pool, &mut poll).outcome, AuthOutcome::BadCredentials);

        let change = |tag, old: &str, new: &str| AuthJob::ChangePassword {
            tag,
            username: "alice".into(),
            old: old.into(),
            new: new.into(),
        };
        assert!(pool.submit(change(3, "wrong", "x")).is_ok());
        assert_eq!(wait(&pool, &mut poll).outcome, AuthOutcome::BadCredentials);
        assert!(pool.submit(change(4, "old", "")).is_ok());
        assert!(matches!(
            wait(&pool, &mut poll).outcome,
            AuthOutcome::InvalidPassword(_)
        ));
        assert!(pool.submit(change(5, "old", "new")).is_ok());
        assert_eq!(wait(&pool, &mut poll).outcome, AuthOutcome::Ok);
        assert!(pool.submit(job(6, "old")).is_ok());
        assert_eq!(wait(&pool, &mut poll).outcome, AuthOutcome::BadCredentials);
        assert!(pool.submit(job(7, "new")).is_ok());
        assert_eq!(wait(&pool, &mut poll).outcome, AuthOutcome::Ok);
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        user_store::add_user(&path, "alice", "pw").unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let pool = AuthPool::start(path, 1, 1, waker).unwrap();
        let mut refused = 0;
        for tag in 0..50 {
            let job = AuthJob::Verify {
                tag,
                username: "alice".into(),
                password: "pw".into(),
            };
            if pool.submit(job).is_err() {
                refused += 1;
            }
        }
        // One thread busy with a ~20-300 ms hash and one slot of queue: most of 50 are refused.
        assert!(refused >= 40, "only {refused} refused");
    }
}
