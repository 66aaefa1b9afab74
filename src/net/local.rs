//! The small request/answer connections the loop serves beside the broker's own (the HTTP
//! monitor, the control socket): a bounded read of a request, the write of its answer, and the
//! credentials of the process at the other end of a Unix socket. Also the one way the broker binds
//! a Unix listening socket ([`bind_private`]: 0600 from the start, whatever the umask) and the
//! rule for which local users may be at the other end ([`uid_allowed`]).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Read what the stream has into `input`, stopping once it holds more than `max` bytes (the
/// caller refuses the request then). `Ok(true)` at end of stream.
pub fn read_bounded<R: Read>(
    stream: &mut R,
    input: &mut Vec<u8>,
    max: usize,
    scratch: &mut [u8],
) -> io::Result<bool> {
    loop {
        let room = (max + 1).saturating_sub(input.len());
        if room == 0 {
            return Ok(false);
        }
        let cap = room.min(scratch.len());
        match stream.read(&mut scratch[..cap]) {
            Ok(0) => return Ok(true),
            Ok(n) => input.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Write `output[*written..]`; true once all of it is written or the connection failed (either
/// way there is nothing more to do for it).
pub fn write_pending<W: Write>(stream: &mut W, output: &[u8], written: &mut usize) -> bool {
    while *written < output.len() {
        match stream.write(&output[*written..]) {
            Ok(0) => return true,
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

/// The process id and user id at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_cred(fd: RawFd) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a local `ucred` of exactly that
    // size, and `len` outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok((cred.pid as u32, cred.uid))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process running as `uid` may be the other end of a handler socket: root, this
/// process's own user, or the `uid` configured for the handler type (`handlers.T.uid`).
pub fn uid_allowed(uid: u32, configured: Option<u32>) -> bool {
    uid == 0 || uid == crate::fsutil::euid() || configured == Some(uid)
}

/// The users [`uid_allowed`] lets in, for error messages: `uid 0 (root) or 1000 (this daemon's)`.
pub fn allowed_text(configured: Option<u32>) -> String {
    let me = crate::fsutil::euid();
    let mut text = if me == 0 {
        "uid 0 (root, this daemon's)".to_string()
    } else {
        format!("uid 0 (root) or {me} (this daemon's)")
    };
    if let Some(uid) = configured.filter(|u| *u != 0 && *u != me) {
        text.push_str(&format!(" or {uid} (the configured uid)"));
    }
    text
}

/// Bind a non-blocking Unix listening socket at `path` that only its owner (and root) can connect
/// to: the socket's mode is set to 0600 with `fchmod` before `bind` (Linux gives the new socket
/// file that mode less the umask), so it is never open to others, not even for a moment.
pub fn bind_private(path: &Path) -> io::Result<mio::net::UnixListener> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just opened and own from here on.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscalls on our own descriptor; `addr` is a zeroed `sockaddr_un` whose path
    // is filled below within its bounds, and the length passed is its size.
    unsafe {
        if libc::fchmod(socket.as_raw_fd(), 0o600) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not fit a Unix socket address",
            ));
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(socket.as_raw_fd(), 1024) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(mio::net::UnixListener::from_std(
        std::os::unix::net::UnixListener::from(socket),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_past_the_bound_and_at_the_end() {
        let mut scratch = [0u8; 4];
        let mut input = Vec::new();
        let mut src: &[u8] = b"0123456789";
        assert!(!read_bounded(&mut src, &mut input, 5, &mut scratch).unwrap());
        assert_eq!(input, b"012345");
        let mut input = Vec::new();
        let mut src: &[u8] = b"abc";
        assert!(read_bounded(&mut src, &mut input, 5, &mut scratch).unwrap());
        assert_eq!(input, b"abc");
    }

    #[test]
    fn writes_resume_where_they_stopped() {
        let mut out = Vec::new();
        let mut written = 2;
        assert!(write_pending(&mut out, b"hello", &mut written));
        assert_eq!(out, b"llo");
        assert_eq!(written, 5);
    }

    #[test]
    fn peer_credentials_of_a_socket_pair_are_our_own() {
        use std::os::fd::AsRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (pid, uid) = peer_cred(a.as_raw_fd()).unwrap();
        assert_eq!(pid, std::process::id());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, unsafe { libc::geteuid() });
    }

    #[test]
    fn private_sockets_are_0600_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let listener = bind_private(&path).unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        let e = bind_private(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn only_root_us_and_the_configured_uid_are_allowed() {
        let me = crate::fsutil::euid();
        assert!(uid_allowed(0, None) && uid_allowed(me, None));
        assert!(!uid_allowed(65534, None) || me == 65534);
        assert!(uid_allowed(65534, Some(65534)));
    }
}
