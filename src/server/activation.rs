//! Socket activation: listening sockets handed over by the service manager in `LISTEN_FDS` /
//! `LISTEN_FDNAMES` (systemd's `besterd.socket`, or `systemd-socket-activate`), matched to
//! listeners by name (`FileDescriptorName=`). The client listener is named [`CLIENT`]; further
//! listeners take theirs with [`Activation::take_tcp`] under their own names. Without activation
//! every listener binds the address in the configuration.
//!
//! It must not: take an fd twice, keep an fd nobody asked for (they are closed, with a warning),
//! or accept a socket that is not a listening TCP socket.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

use log::{info, warn};

/// `FileDescriptorName=` of the client listener.
pub const CLIENT: &str = "client";

/// The sockets passed by the service manager and not taken yet.
#[derive(Debug, Default)]
pub struct Activation {
    fds: Vec<(RawFd, String)>,
}

impl Activation {
    /// The sockets passed to this process (none when `LISTEN_PID` is not this process).
    pub fn from_env() -> io::Result<Activation> {
        let fds = sd_notify::listen_fds_with_names().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("socket activation: LISTEN_FDS/LISTEN_FDNAMES: {e}"),
            )
        })?;
        let fds: Vec<(RawFd, String)> = fds.collect();
        if !fds.is_empty() {
            let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
            info!(
                "socket activation: {} socket(s) passed: {}",
                fds.len(),
                names.join(", ")
            );
        }
        Ok(Activation { fds })
    }

    /// Whether any socket was passed.
    pub fn is_active(&self) -> bool {
        !self.fds.is_empty()
    }

    /// The listening TCP socket named `name`, if one was passed (non-blocking, ready for mio).
    pub fn take_tcp(&mut self, name: &str) -> io::Result<Option<TcpListener>> {
        let Some(index) = self.fds.iter().position(|(_, n)| n == name) else {
            return Ok(None);
        };
        let (fd, name) = self.fds.remove(index);
        tcp_listener(fd, &name).map(Some)
    }

    /// The client listener: the socket named [`CLIENT`], or the only socket passed whatever its
    /// name (a unit without `FileDescriptorName=` names it after itself).
    pub fn take_client(&mut self) -> io::Result<Option<TcpListener>> {
        if let Some(listener) = self.take_tcp(CLIENT)? {
            return Ok(Some(listener));
        }
        if self.fds.len() == 1 {
            let (fd, name) = self.fds.remove(0);
            info!("socket activation: taking the only socket ({name:?}) as the client listener");
            return tcp_listener(fd, &name).map(Some);
        }
        Ok(None)
    }

    /// Close the sockets no listener asked for.
    pub fn close_rest(&mut self) {
        for (fd, name) in self.fds.drain(..) {
            warn!(
                "socket activation: fd {fd} named {name:?} matches no listener (expected {CLIENT:?}); closing it"
            );
            // SAFETY: the fd was passed to this process and nothing else took ownership of it.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        self.close_rest();
    }
}

fn sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Own `fd` as a listening TCP socket, or say what it is not.
fn tcp_listener(fd: RawFd, name: &str) -> io::Result<TcpListener> {
    let what = |e: String| io::Error::other(format!("socket activation: fd {fd} ({name}): {e}"));
    // SAFETY: the fd was passed to this process by the service manager and is taken only once
    // (removed from the list above); from here the listener owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let kind = sockopt(fd, libc::SO_TYPE).map_err(|e| what(e.to_string()))?;
    let domain = sockopt(fd, libc::SO_DOMAIN).map_err(|e| what(e.to_string()))?;
    if kind != libc::SOCK_STREAM || (domain != libc::AF_INET && domain != libc::AF_INET6) {
        return Err(what(
            "not a TCP socket (use ListenStream= with an IP address and port)".into(),
        ));
    }
    if sockopt(fd, libc::SO_ACCEPTCONN).map_err(|e| what(e.to_string()))? == 0 {
        return Err(what("not a listening socket".into()));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| what(e.to_string()))?;
    Ok(listener)
}
