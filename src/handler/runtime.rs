//! The runtime directory: a private (0700) directory holding one Unix socket per handler type, and
//! the example handlers built into the binary (for the embedded default configuration). A directory
//! besterd created itself is removed when the server stops.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::warn;

/// Example handlers compiled into the binary: (file name, contents).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "besterlib.py",
        include_str!("../../handlers/python/besterlib.py"),
    ),
    ("echo.py", include_str!("../../handlers/python/echo.py")),
    ("chat.py", include_str!("../../handlers/python/chat.py")),
];

/// The directory for handler sockets.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    owned: bool,
}

impl RuntimeDir {
    /// Use `configured`, else `$RUNTIME_DIRECTORY` (systemd), else create a private directory under
    /// the system temp dir. The directory is made 0700 in every case.
    pub fn create(configured: Option<&Path>) -> io::Result<RuntimeDir> {
        let from_env = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from);
        if let Some(path) = configured.map(Path::to_path_buf).or(from_env) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
            return Ok(RuntimeDir { path, owned: false });
        }
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("besterd-{}-{hex}", std::process::id()));
        // Fails if it exists: a directory someone else prepared is never trusted.
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(RuntimeDir { path, owned: true })
    }

    /// Whether besterd created the directory (and removes it when done).
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the socket for handler type `kind` goes.
    pub fn socket_for(&self, kind: &str) -> PathBuf {
        self.path.join(format!("{kind}.sock"))
    }

    /// Write the built-in example handlers into `<dir>/examples` and return that directory.
    pub fn write_examples(&self) -> io::Result<PathBuf> {
        let dir = self.path.join("examples");
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        for (name, text) in EXAMPLES {
            fs::write(dir.join(name), text)?;
        }
        Ok(dir)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = fs::remove_dir_all(&self.path)
        {
            warn!(
                "cannot remove runtime directory {}: {e}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_0700_and_removed() {
        let dir = RuntimeDir::create(None).unwrap();
        let path = dir.path().to_path_buf();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let examples = dir.write_examples().unwrap();
        assert!(examples.join("echo.py").is_file());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn configured_dir_is_kept() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("run");
        let dir = RuntimeDir::create(Some(&path)).unwrap();
        assert_eq!(dir.socket_for("echo"), path.join("echo.sock"));
        drop(dir);
        assert!(path.is_dir());
    }
}
