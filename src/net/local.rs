//! The small request/answer connections the loop serves beside the broker's own (the HTTP
//! monitor, the control socket): a bounded read of a request, the write of its answer, and the
//! credentials of the process at the other end of a Unix socket.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;

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
}
