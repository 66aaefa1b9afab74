//! The runtime directory: a private (0700) directory holding one Unix socket per handler type, the
//! control socket, and the example handlers built into the binary (for the embedded default
//! configuration). A directory besterd created itself is removed when the server stops.
//!
//! Nothing in it is trusted unless this process made it: a configured (or `$RUNTIME_DIRECTORY`)
//! directory is checked through [`crate::fsutil::private_dir`] — not a symbolic link, owned by
//! this process's user, not writable by group or others, parents that only root or we can change
//! — and refused otherwise; the examples go into a fresh directory whose `mkdir` fails if the name
//! exists, so nobody can plant a module beside them (Python imports the script's directory first:
//! a `json.py` there would shadow the standard library's for the `bester` package they import).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use log::warn;

use crate::fsutil;

/// Example handlers compiled into the binary: (path in the examples directory, contents). The
/// Python examples import the Python package (clients/python), so its modules go beside them as
/// the `bester/` package directory, as in the repository and the Debian package.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "bester/__init__.py",
        include_str!("../../clients/python/src/bester/__init__.py"),
    ),
    (
        "bester/acks.py",
        include_str!("../../clients/python/src/bester/acks.py"),
    ),
    (
        "bester/aio.py",
        include_str!("../../clients/python/src/bester/aio.py"),
    ),
    (
        "bester/client.py",
        include_str!("../../clients/python/src/bester/client.py"),
    ),
    (
        "bester/errors.py",
        include_str!("../../clients/python/src/bester/errors.py"),
    ),
    (
        "bester/handler.py",
        include_str!("../../clients/python/src/bester/handler.py"),
    ),
    (
        "bester/session.py",
        include_str!("../../clients/python/src/bester/session.py"),
    ),
    (
        "bester/transport.py",
        include_str!("../../clients/python/src/bester/transport.py"),
    ),
    (
        "bester/wire.py",
        include_str!("../../clients/python/src/bester/wire.py"),
    ),
    ("echo.py", include_str!("../../handlers/python/echo.py")),
    ("chat.py", include_str!("../../handlers/python/chat.py")),
    (
        "auth_keys.py",
        include_str!("../../handlers/python/auth_keys.py"),
    ),
    ("upper.jq", include_str!("../../handlers/jq/upper.jq")),
    ("count.sh", include_str!("../../handlers/shell/count.sh")),
];

/// Prefix of the examples directory's name (`examples-<pid>-<16 hex digits>`).
const EXAMPLES_PREFIX: &str = "examples-";

/// The directory for handler sockets.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    owned: bool,
    examples: Option<PathBuf>,
    /// Handler sockets are named `<type>.<tag>.sock` (the new process of an upgrade, beside
    /// the old one's `<type>.sock`).
    tag: Option<u32>,
}

impl RuntimeDir {
    /// Use `configured`, else `$RUNTIME_DIRECTORY` (systemd), else create a private directory under
    /// the system temp dir. The directory is made 0700 in every case (through its descriptor); a
    /// configured one that is a symbolic link, another user's, or writable by group or others is
    /// refused with a [`fsutil::Refused`] error naming it and the reason.
    pub fn create(configured: Option<&Path>) -> io::Result<RuntimeDir> {
        let from_env = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from);
        if let Some(path) = configured.map(Path::to_path_buf).or(from_env) {
            let dir = fsutil::private_dir(&path)?;
            remove_old_examples(&dir.path);
            return Ok(RuntimeDir {
                path: dir.path,
                owned: false,
                examples: None,
                tag: None,
            });
        }
        // A fresh name under the temp dir; its mkdir fails if the name exists.
        let parent = fs::canonicalize(std::env::temp_dir())?;
        let path = fsutil::fresh_dir(&parent, &format!("besterd-{}-", std::process::id()))?;
        Ok(RuntimeDir {
            path,
            owned: true,
            examples: None,
            tag: None,
        })
    }

    /// The directory an upgrade's old process created (checked like a configured one); not
    /// removed when this process stops unless [`RuntimeDir::set_owned`] says so (once the old
    /// process handed over).
    pub fn adopt(path: &Path) -> io::Result<RuntimeDir> {
        let dir = fsutil::private_dir(path)?;
        Ok(RuntimeDir {
            path: dir.path,
            owned: false,
            examples: None,
            tag: None,
        })
    }

    /// Whether the directory is removed when this process stops (an upgrade hands it over).
    pub fn set_owned(&mut self, owned: bool) {
        self.owned = owned;
    }

    /// Name handler sockets `<type>.<pid>.sock`: the new process of an upgrade, whose old
    /// process still serves on `<type>.sock` (or on its own `<type>.<pid>.sock`).
    pub fn tag_sockets(&mut self, pid: u32) {
        self.tag = Some(pid);
    }

    /// Whether besterd created the directory (and removes it when done).
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// The directory (its parents' symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the socket for handler type `kind` goes.
    pub fn socket_for(&self, kind: &str) -> PathBuf {
        match self.tag {
            Some(tag) => self.path.join(format!("{kind}.{tag}.sock")),
            None => self.path.join(format!("{kind}.sock")),
        }
    }

    /// Write the built-in example handlers into a fresh `<dir>/examples-<random>` (created here,
    /// 0700; each file and subdirectory created exclusively) and return that directory. Once per
    /// process: later calls return the same directory. It is removed when the server stops.
    pub fn write_examples(&mut self) -> io::Result<PathBuf> {
        if let Some(dir) = &self.examples {
            return Ok(dir.clone());
        }
        let prefix = format!("{EXAMPLES_PREFIX}{}-", std::process::id());
        let dir = fsutil::fresh_dir(&self.path, &prefix)?;
        self.examples = Some(dir.clone());
        let mut subdirs: Vec<&str> = Vec::new();
        for (name, text) in EXAMPLES {
            if let Some((sub, _)) = name.rsplit_once('/')
                && !subdirs.contains(&sub)
            {
                // In the fresh directory: its mkdir fails if the name exists.
                let path = dir.join(sub);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                subdirs.push(sub);
            }
            let path = dir.join(name);
            let mut file = fsutil::create_new(&path, 0o600)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            io::Write::write_all(&mut file, text.as_bytes())?;
        }
        Ok(dir)
    }
}

/// Examples directories a previous run left behind (it was killed before it could remove them):
/// those whose process no longer exists (another server sharing the directory keeps its own).
/// Only called on a directory that passed the private-directory check.
fn remove_old_examples(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(EXAMPLES_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && let Err(e) = fs::remove_dir_all(entry.path())
        {
            warn!("cannot remove {}: {e}", entry.path().display());
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let gone = if self.owned {
            Some(&self.path)
        } else {
            self.examples.as_ref()
        };
        if let Some(path) = gone
            && let Err(e) = fs::remove_dir_all(path)
        {
            warn!("cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_is_0700_and_removed() {
        let mut dir = RuntimeDir::create(None).unwrap();
        let path = dir.path().to_path_buf();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let examples = dir.write_examples().unwrap();
        assert!(examples.join("echo.py").is_file());
        let package = examples.join("bester");
        assert!(package.join("__init__.py").is_file() && package.join("handler.py").is_file());
        assert_eq!(
            fs::metadata(&package).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(dir);
        assert!(!path.exists());
    }

    /// Every module of the Python package is written beside the examples (a module added to
    /// clients/python without its line in EXAMPLES would break the embedded default's imports).
    #[test]
    fn every_module_of_the_python_package_is_embedded() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/src/bester");
        for entry in fs::read_dir(&src).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".py") {
                let path = format!("bester/{name}");
                assert!(
                    EXAMPLES.iter().any(|(n, _)| *n == path),
                    "{path} is missing"
                );
            }
        }
    }

    #[test]
    fn configured_dir_is_kept() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().canonicalize().unwrap().join("run");
        let mut dir = RuntimeDir::create(Some(&path)).unwrap();
        assert_eq!(dir.socket_for("echo"), path.join("echo.sock"));
        let examples = dir.write_examples().unwrap();
        assert!(examples.starts_with(&path) && examples != path.join("examples"));
        assert_eq!(dir.write_examples().unwrap(), examples);
        drop(dir);
        assert!(path.is_dir());
        assert!(!examples.exists(), "the examples go with the server");

        // Left by a process that is gone: removed at the next start; a live one's is kept.
        let stale = path.join(format!("{EXAMPLES_PREFIX}999999999-0123456789abcdef"));
        let live = path.join(format!("{EXAMPLES_PREFIX}1-0123456789abcdef"));
        fs::create_dir(&stale).unwrap();
        fs::create_dir(&live).unwrap();
        drop(RuntimeDir::create(Some(&path)).unwrap());
        assert!(!stale.exists() && live.exists());
    }
}
