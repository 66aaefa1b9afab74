//! The presence and group built-ins of a client session: `bester.presence`,
//! `bester.presence.subscribe` / `.unsubscribe`, `bester.status`, `bester.join` and
//! `bester.leave`. Each reads its data, asks the router (where the state and the rules live) and
//! answers; the pushes the router returns go out with the other actions.

use serde::Serialize;

use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::groups::{JoinData, MAX_STATUS_TEXT, Recipients, StatusData};
use crate::protocol::message::{ClientMessage, client_ok};
use crate::router::ConnId;

use super::Server;

/// One-off presence query.
pub const PRESENCE: &str = "bester.presence";
/// Watch users and groups.
pub const SUBSCRIBE: &str = "bester.presence.subscribe";
/// Stop watching.
pub const UNSUBSCRIBE: &str = "bester.presence.unsubscribe";
/// Set one's status text.
pub const STATUS: &str = "bester.status";
/// Join a group.
pub const JOIN: &str = "bester.join";
/// Leave a group.
pub const LEAVE: &str = "bester.leave";

/// Whether `kind` is one of the built-ins of this module.
pub(super) fn is_presence_builtin(kind: &str) -> bool {
    matches!(
        kind,
        PRESENCE | SUBSCRIBE | UNSUBSCRIBE | STATUS | JOIN | LEAVE
    )
}

#[derive(Serialize)]
struct Membership<'a> {
    group: &'a str,
    member: bool,
}

impl Server {
    /// Answer one of the presence and group built-ins.
    pub(super) fn presence_builtin(&mut self, id: ConnId, msg: &ClientMessage) {
        let reply_id = msg.id.as_deref();
        let body = match self.presence_answer(id, msg) {
            Ok(body) => body,
            Err(error) => return self.reply_error(id, reply_id, &error),
        };
        self.stats.messages.answered(true);
        self.send(id, body);
    }

    fn presence_answer(&mut self, id: ConnId, msg: &ClientMessage) -> Result<Vec<u8>, ErrorBody> {
        let reply_id = msg.id.as_deref();
        let kind = &*msg.payload.kind;
        fn ok<D: Serialize + ?Sized>(id: Option<&str>, kind: &str, data: &D) -> Vec<u8> {
            client_ok(id, Some(kind), data)
        }
        let null = msg.payload.data.as_deref().is_none_or(|d| d == "null");
        match kind {
            PRESENCE => {
                let what: Recipients = msg.payload.data_as()?;
                let user = self.session_user(id);
                let answer = self.router.presence_query(user.as_deref(), &what)?;
                Ok(ok(reply_id, kind, &answer))
            }
            SUBSCRIBE => {
                let what: Recipients = msg.payload.data_as()?;
                let answer = self.router.presence_subscribe(id, &what)?;
                Ok(ok(reply_id, kind, &answer))
            }
            UNSUBSCRIBE => {
                let what: Option<Recipients> = if null {
                    None
                } else {
                    Some(msg.payload.data_as()?)
                };
                self.router.presence_unsubscribe(id, what.as_ref());
                Ok(ok(reply_id, kind, &()))
            }
            STATUS => {
                let data: StatusData = if null {
                    StatusData::default()
                } else {
                    msg.payload.data_as()?
                };
                if let Some(text) = &data.text
                    && text.len() > MAX_STATUS_TEXT
                {
                    return Err(ErrorBody::new(
                        ErrorCode::InvalidMessage,
                        format!(
                            "bad data for \"bester.status\": text is at most {MAX_STATUS_TEXT} bytes (this one is {})",
                            text.len()
                        ),
                    ));
                }
                let entry = self
                    .router
                    .set_status(id, data.text, &mut self.actions)
                    .ok_or_else(|| ErrorBody::new(ErrorCode::NotIdentified, "identify first"))?;
                Ok(ok(reply_id, kind, &entry))
            }
            JOIN => {
                let data: JoinData = msg.payload.data_as()?;
                self.router
                    .client_join(id, &data.group, &mut self.actions)?;
                Ok(ok(
                    reply_id,
                    kind,
                    &Membership {
                        group: &data.group,
                        member: true,
                    },
                ))
            }
            _ => {
                let data: JoinData = msg.payload.data_as()?;
                let member = self
                    .router
                    .client_leave(id, &data.group, &mut self.actions)?;
                Ok(ok(
                    reply_id,
                    kind,
                    &Membership {
                        group: &data.group,
                        member,
                    },
                ))
            }
        }
    }
}
