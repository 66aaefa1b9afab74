//! Answering whoever started a piece of work, whatever it is: a client gets a reply carrying its
//! id, a peer server gets an ack for its message number, a handler that pushed gets a report.

use serde::Serialize;

use super::{Action, Origin, Router};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::handler::{handler_delivery_report_with, handler_error_report};
use crate::protocol::message::client_error;
use crate::protocol::peer::{AckContent, ServerReports, UserFailures, ack_error, ack_ok};
use crate::protocol::write::{client_reply, client_report_reply};

/// The parts of a successful answer.
#[derive(Debug, Default)]
pub(super) struct Outcome<'a> {
    /// The payload type.
    pub kind_of: Option<&'a str>,
    /// The data's JSON text, for a sender that is also a recipient.
    pub data: Option<&'a str>,
    /// Users delivered to.
    pub delivered: Option<&'a [String]>,
    /// Users offline.
    pub offline: Option<&'a [String]>,
    /// What each peer server did.
    pub servers: Option<&'a ServerReports>,
    /// Users of other servers that could not be reached, with why.
    pub failed: Option<&'a UserFailures>,
}

/// An ok reply to a client with the outcome's delivery report.
fn report_reply(id: Option<&str>, outcome: &Outcome<'_>) -> Vec<u8> {
    client_report_reply(
        id,
        outcome.kind_of,
        (outcome.delivered, outcome.offline, outcome.failed),
        outcome.servers,
        outcome.data,
    )
}

/// What an ok ack to a peer carries for this outcome.
fn ack_content<'a>(outcome: &Outcome<'a>) -> AckContent<'a> {
    AckContent {
        kind_of: outcome.kind_of,
        data: outcome.data,
        delivered: outcome.delivered,
        offline: outcome.offline,
        servers: outcome.servers,
        failed: outcome.failed,
    }
}

impl Router {
    /// How long the body of [`Router::respond_ok`]'s frame to a client or peer would be (0 for
    /// other origins), without sending it.
    pub(super) fn ok_body_len(&self, origin: &Origin, outcome: &Outcome<'_>) -> usize {
        match origin {
            Origin::Client { id, .. } => {
                let body = report_reply(id.as_deref(), outcome);
                let len = body.len();
                crate::protocol::pool::recycle(body);
                len
            }
            Origin::Peer { msg, .. } => {
                let body = ack_ok(msg, &ack_content(outcome));
                let len = body.len();
                crate::protocol::pool::recycle(body);
                len
            }
            Origin::Push { .. } | Origin::Login { .. } => 0,
        }
    }

    /// Answer `origin` with success.
    pub(super) fn respond_ok(
        &mut self,
        origin: &Origin,
        outcome: &Outcome<'_>,
        out: &mut Vec<Action>,
    ) {
        let (to, body) = match origin {
            Origin::Client { conn, id } => {
                self.stats.messages.answered(true);
                let plain = outcome.delivered.is_none()
                    && outcome.offline.is_none()
                    && outcome.servers.is_none()
                    && outcome.failed.is_none();
                if plain {
                    let body = client_reply(id.as_deref(), outcome.kind_of, outcome.data);
                    return out.push(Action::Send { to: *conn, body });
                }
                (*conn, report_reply(id.as_deref(), outcome))
            }
            Origin::Peer { link, msg, .. } => {
                let body = ack_ok(msg, &ack_content(outcome));
                if body.len() > self.config.max_frame {
                    // Never a frame over the limit to a peer: it is told why instead.
                    let text = format!(
                        "with its ack header the answer would be {} bytes, over the limit of {} bytes",
                        body.len(),
                        self.config.max_frame
                    );
                    crate::protocol::pool::recycle(body);
                    return self.fail(origin, ErrorBody::new(ErrorCode::FrameTooLarge, text), out);
                }
                (*link, body)
            }
            Origin::Push { handler, id } => (
                *handler,
                handler_delivery_report_with(
                    id.as_deref(),
                    (outcome.delivered, outcome.offline, outcome.failed),
                    outcome.servers,
                ),
            ),
            Origin::Login { conn, .. } => {
                let data = outcome.data.map(str::to_string);
                return out.push(Action::LoginAccepted { conn: *conn, data });
            }
        };
        out.push(Action::Send { to, body });
    }

    /// Answer `origin` with an error body (ours, or one a handler gave).
    pub(super) fn respond_error<E: Serialize + ?Sized>(
        &mut self,
        origin: &Origin,
        error: &E,
        out: &mut Vec<Action>,
    ) {
        let (to, body) = match origin {
            Origin::Client { conn, id } => {
                self.stats.messages.answered(false);
                (*conn, client_error(id.as_deref(), error))
            }
            Origin::Peer { link, msg, .. } => (*link, ack_error(msg, error)),
            Origin::Push { handler, id } => {
                (*handler, handler_error_report(None, id.as_deref(), error))
            }
            // The auth handler's own refusal, told to the client as it is.
            Origin::Login { conn, .. } => {
                let body = client_error(None, error);
                return out.push(Action::LoginRefused {
                    conn: *conn,
                    body,
                    by_handler: true,
                });
            }
        };
        out.push(Action::Send { to, body });
    }

    /// Answer `origin` with one of our error codes.
    pub(super) fn fail(&mut self, origin: &Origin, error: ErrorBody, out: &mut Vec<Action>) {
        log::debug!("{origin:?} fails: {error}");
        self.stats.errors.count(error.code);
        match origin {
            Origin::Login { conn, .. } => self.login_failed(*conn, &error, out),
            _ => self.respond_error(origin, &error, out),
        }
    }
}
