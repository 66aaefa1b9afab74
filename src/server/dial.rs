//! The server's side of handlers it dials (`connect`): carry out the router's [`Action::Dial`] by
//! connecting through [`crate::handler::Dialer`], registering the stream as a handler connection
//! for its one request, and queueing the request on it. Failures go back to the router, which
//! answers the client `handler_unavailable`.
//!
//! [`Action::Dial`]: crate::router::Action::Dial

use log::debug;

use crate::net::Stream;

use super::Server;
use super::conn::Role;

impl Server {
    /// Connect to the handler of `kind` for request `token` and send it `body`.
    pub(super) fn dial(&mut self, kind: &str, token: u64, body: Vec<u8>) {
        let stream = match self.dialer.connect(kind) {
            Ok(stream) => stream,
            Err(why) => {
                debug!("handler={kind} dial for request {token} failed: {why}");
                return self
                    .router
                    .dial_failed(kind, token, &why, &mut self.actions);
            }
        };
        let role = Role::Handler {
            kind: kind.to_string(),
            complained: false,
            dialed: true,
        };
        let max_frame = self.config.max_frame;
        let Some(id) = self.insert_conn(
            Stream::Unix(stream),
            format!("{kind} (dialled)"),
            None,
            role,
            max_frame,
        ) else {
            let why = "the connection could not be registered";
            return self.router.dial_failed(kind, token, why, &mut self.actions);
        };
        debug!("conn={id} handler={kind} dialled for request {token}");
        if !self.router.dial_opened(id, kind, token) {
            return self.close(id, "request no longer waiting".into());
        }
        if !self.try_send(id, body) {
            self.router.handler_refused(token, &mut self.actions);
            self.close(id, "request refused".into());
        }
    }
}
