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

pub(super) fn sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
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
pub(super) fn tcp_listener(fd: RawFd, name: &str) -> io::Result<TcpListener> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn only_listening_tcp_sockets_are_taken() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let e = tcp_listener(udp, "client").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "socket activation: fd {udp} (client): not a TCP socket (use ListenStream= with an IP address and port)"
            )
        );
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(server.local_addr().unwrap())
            .unwrap()
            .into_raw_fd();
        let e = tcp_listener(stream, "client").unwrap_err().to_string();
        assert_eq!(
            e,
            format!("socket activation: fd {stream} (client): not a listening socket")
        );
        let listening = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listening.local_addr().unwrap();
        let taken = tcp_listener(listening.into_raw_fd(), "client").unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
    }

    #[test]
    fn the_client_socket_is_taken_by_name_or_as_the_only_one() {
        let fd = |l: TcpListener| l.into_raw_fd();
        let bind = || TcpListener::bind("127.0.0.1:0").unwrap();
        let mut two = Activation {
            fds: vec![(fd(bind()), "other".into()), (fd(bind()), CLIENT.into())],
        };
        assert!(two.take_client().unwrap().is_some());
        assert!(two.take_tcp(CLIENT).unwrap().is_none(), "taken once");
        assert!(two.take_tcp("other").unwrap().is_some());
        let mut only = Activation {
            fds: vec![(fd(bind()), "besterd.socket".into())],
        };
        assert!(only.take_client().unwrap().is_some());
        let mut unnamed = Activation {
            fds: vec![(fd(bind()), "a".into()), (fd(bind()), "b".into())],
        };
        assert!(unnamed.take_client().unwrap().is_none());
        unnamed.close_rest();
        assert!(!unnamed.is_active());
    }
}
