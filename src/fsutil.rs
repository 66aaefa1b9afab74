//! Files and directories besterd creates or writes by path, opened so that a local user who can
//! write in the same directory cannot redirect them (a symbolic or hard link to a file of their
//! choice, a file or directory they planted first).
//!
//! The rules, for every such path: never follow a symbolic link at the last component
//! (`O_NOFOLLOW`); create files exclusively (`O_EXCL`, 0600) and directories with a `mkdir` that
//! fails if the name exists; check an existing file or directory through its open descriptor
//! (`fstat`) before trusting it — a regular file with one link owned by an expected user, a
//! directory owned by this process's user and not writable by group or others (as OpenSSH
//! `StrictModes`, tmux and PostgreSQL do); change modes only through a descriptor (`fchmod`), and
//! never change the mode or owner of a file this process did not create.
//!
//! A refusal is an [`io::Error`] of kind `PermissionDenied` wrapping a [`Refused`] that names the
//! path and the reason; [`refusal`] finds it again (`serve` exits with the configuration error
//! code for it). This module only knows files: it must not log, and it must not know what the
//! files are for.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A path besterd will not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The file or directory.
    pub path: PathBuf,
    /// Why, e.g. "is a symbolic link".
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Refused {}

/// The error for refusing `path` because of `reason`.
pub fn refused(path: &Path, reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        Refused {
            path: path.to_owned(),
            reason: reason.into(),
        },
    )
}

/// The [`Refused`] inside `e`, if `e` is a refusal from this module.
pub fn refusal(e: &io::Error) -> Option<&Refused> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn owners_text(owners: &[u32]) -> String {
    let names: Vec<String> = owners.iter().map(u32::to_string).collect();
    names.join(" or ")
}

/// Checks an open file: a regular file, one link, owned by one of `owners`.
pub fn check_regular(file: &File, path: &Path, owners: &[u32]) -> io::Result<fs::Metadata> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refused(
            path,
            format!("has {} hard links (expected 1)", meta.nlink()),
        ));
    }
    if !owners.contains(&meta.uid()) {
        return Err(refused(
            path,
            format!(
                "is owned by uid {}, not uid {}",
                meta.uid(),
                owners_text(owners)
            ),
        ));
    }
    Ok(meta)
}

fn nofollow_error(path: &Path, e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => refused(path, "is a symbolic link"),
        Some(libc::ENXIO | libc::EOPNOTSUPP) => refused(path, "is not a regular file"),
        _ => e,
    }
}

/// Creates `path` as a new file with `mode` (less the umask), failing if anything (a file, a
/// symbolic link, a socket) already has that name.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens the regular file at `path` for reading and writing, or creates it (0600, exclusively) if
/// there is none. An existing file must pass [`check_regular`] with `owners`; a symbolic link is
/// refused and never followed. Returns the file and whether this call created it (only then may
/// the caller change its mode or owner).
pub fn open_or_create(path: &Path, owners: &[u32]) -> io::Result<(File, bool)> {
    for _ in 0..8 {
        let existing = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path);
        match existing {
            Ok(file) => {
                check_regular(&file, path, owners)?;
                return Ok((file, false));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(nofollow_error(path, e)),
        }
        match create_new(path, 0o600) {
            Ok(file) => return Ok((file, true)),
            // Someone created it in between: look at what it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(refused(path, "keeps appearing and disappearing"))
}

/// Opens the regular file at `path` for reading without following a symbolic link. `Ok(None)` if
/// there is no file.
pub fn open_read_nofollow(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(nofollow_error(path, e)),
    }
}

/// 16 random hex digits, for names nobody can guess.
pub fn random_suffix() -> io::Result<String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!("{:016x}", u64::from_ne_bytes(random)))
}

/// Replaces the file at `path` with `bytes` (mode `mode` less the umask): a fresh temp file with
/// an unguessable name in the same directory (created exclusively), then `rename` over `path`.
/// The bytes are on disk (fsync) before the rename. A symbolic link at `path` is replaced,
/// never followed. The temp file is removed on failure.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "does not name a file"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", random_suffix()?));
    let temp = path.with_file_name(temp_name);
    let mut file = create_new(&temp, mode)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path)
        });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Checks that the directory `dir` cannot be changed by anyone but root and this process's user
/// (as for the parents of a private directory): for files besterd keeps in a directory it did
/// not make itself, such as the delivery store.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    check_ancestor(dir)
}

/// Checks that `dir` (a directory that exists, given by a path without symbolic links) cannot be
/// changed by anyone but root and this process's user: owned by one of them, and not writable by
/// group or others unless the sticky bit is set (as on `/tmp`, where others cannot rename or
/// remove what is ours).
fn check_ancestor(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refused(dir, "is a symbolic link"));
    }
    let uid = meta.uid();
    if uid != 0 && uid != euid() {
        return Err(refused(
            dir,
            format!(
                "is owned by uid {uid}, who could replace what is inside (expected root or uid {})",
                euid()
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(refused(
            dir,
            format!(
                "is writable by group or others without the sticky bit (mode {:04o})",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A private directory this process may put sockets and files in.
#[derive(Debug)]
pub struct PrivateDir {
    /// The directory, with every symbolic link of its parents resolved.
    pub path: PathBuf,
    /// Whether this call created it.
    pub created: bool,
}

/// Makes `path` a private directory (0700, owned by this process's user) and returns it by its
/// resolved path, which callers use from then on (a parent that is a symbolic link cannot be
/// swapped later). Missing parents are created one by one (0700); the parents must pass the
/// ancestor check (owned by root or us, not writable by others without the sticky bit). The
/// directory itself is created with a `mkdir` that fails if it exists; an existing one is opened
/// without following a symbolic link and refused if it is another user's or writable by group or
/// others. Its mode is then set to 0700 through the open descriptor.
pub fn private_dir(path: &Path) -> io::Result<PrivateDir> {
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "does not name a directory"))?
        .to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if fs::symlink_metadata(&parent).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        create_parents(&parent)?;
    }
    let parent = fs::canonicalize(&parent)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
    for ancestor in parent.ancestors() {
        check_ancestor(ancestor)?;
    }
    let path = parent.join(name);
    let created = match DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            // O_DIRECTORY gives ENOTDIR for a symbolic link, even one to a directory.
            Some(libc::ELOOP | libc::ENOTDIR)
                if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                refused(&path, "is a symbolic link")
            }
            Some(libc::ENOTDIR) => refused(&path, "is not a directory"),
            _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
    let meta = dir.metadata()?;
    if meta.uid() != euid() {
        return Err(refused(
            &path,
            format!(
                "is owned by uid {}, not by this process's uid {}",
                meta.uid(),
                euid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(
            &path,
            format!("is writable by group or others (mode {mode:04o})"),
        ));
    }
    if mode != 0o700 {
        dir.set_permissions(fs::Permissions::from_mode(0o700))?;
    }
    Ok(PrivateDir { path, created })
}

/// Creates the missing directories of `path`, each 0700, each with a `mkdir` of its own; one that
/// appears meanwhile is left to the ancestor check.
fn create_parents(path: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| {
            !p.as_os_str().is_empty()
                && fs::symlink_metadata(p).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        })
        .collect();
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
    Ok(())
}

/// Creates a fresh directory `<parent>/<prefix><random>` (0700) that nobody else can have
/// prepared: its `mkdir` fails if the name exists.
pub fn fresh_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    for _ in 0..8 {
        let path = parent.join(format!("{prefix}{}", random_suffix()?));
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(refused(parent, "no free name for a new directory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_or_create_refuses_links_and_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link");
        symlink(&victim, &link).unwrap();
        let e = open_or_create(&link, &[euid()]).unwrap_err();
        assert_eq!(
            refusal(&e).unwrap().to_string(),
            format!("refusing {}: is a symbolic link", link.display())
        );
        let hard = dir.path().join("hard");
        fs::hard_link(&victim, &hard).unwrap();
        let e = open_or_create(&hard, &[euid()]).unwrap_err();
        assert_eq!(refusal(&e).unwrap().reason, "has 2 hard links (expected 1)");
        fs::remove_file(&hard).unwrap();
        let e = open_or_create(&victim, &[euid() + 1]).unwrap_err();
        assert!(refusal(&e).unwrap().reason.starts_with("is owned by uid"));
        let (_, created) = open_or_create(&victim, &[euid()]).unwrap();
        assert!(!created);
        let (_, created) = open_or_create(&dir.path().join("new"), &[euid()]).unwrap();
        assert!(created);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn replace_file_replaces_a_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("ready");
        symlink(&victim, &path).unwrap();
        replace_file(&path, b"new", 0o644).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temp file left");
    }

    #[test]
    fn private_dir_refuses_links_and_loose_modes() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = base.path().join("link");
        symlink(&target, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert_eq!(refusal(&e).unwrap().reason, "is a symbolic link");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open).unwrap_err();
        assert_eq!(
            refusal(&e).unwrap().reason,
            "is writable by group or others (mode 0777)"
        );
        // Inside a world-writable directory without the sticky bit: refused.
        let e = private_dir(&open.join("run")).unwrap_err();
        assert!(
            refusal(&e)
                .unwrap()
                .reason
                .contains("without the sticky bit")
        );
        // A loose but not writable mode of our own directory is tightened.
        let made = private_dir(&target).unwrap();
        assert!(!made.created);
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let nested = private_dir(&base.path().join("a/b/run")).unwrap();
        assert!(nested.created && nested.path.is_dir());
    }
}
