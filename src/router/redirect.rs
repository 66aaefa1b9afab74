//! Redirects, the router's side: a handler's `redirect` answer to a client's request becomes
//! [`Action::Redirect`] (a redirect answers a client of this server, nothing else), and when the
//! server carries it out, the client's other requests still in flight are answered `redirected`
//! so that each of them still gets exactly one reply before the connection closes. No I/O.

use super::*;

impl Router {
    /// A handler answered `pending` with a redirect (at the end of a `sendHandler` chain too).
    pub(super) fn redirect(
        &mut self,
        pending: Pending,
        url: String,
        token: Option<RedirectToken>,
        out: &mut Vec<Action>,
    ) {
        match pending.origin {
            Origin::Client { conn, id } => {
                self.stats.messages.answered(true);
                out.push(Action::Redirect {
                    to: conn,
                    id: id.map(|id| id.to_string()),
                    url,
                    token,
                });
            }
            origin => {
                let text = match origin {
                    // As for any command but reply from an auth handler (`login.rs`).
                    Origin::Login { .. } => format!(
                        "the {:?} auth handler answered a login with a command other than \
                         \"reply\"",
                        pending.kind
                    ),
                    _ => format!(
                        "the {:?} handler answered a peer server's message with a redirect: a \
                         redirect answers a client of this server",
                        pending.kind
                    ),
                };
                self.fail(
                    &origin,
                    ErrorBody::new(ErrorCode::BadHandlerReply, text),
                    out,
                );
            }
        }
    }

    /// The server is redirecting client `conn`: answer each of its requests still in flight
    /// (sent to a handler, waiting for one, or out to peer servers) with `redirected`, oldest
    /// first, and take the client out of presence so that nothing more is routed to it. A
    /// handler's later answer to one of these requests is treated as the answer to a request
    /// that timed out.
    pub fn client_redirected(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let mine = |origin: &Origin| origin.client() == Some(conn);
        let mut tokens: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| mine(&p.origin))
            .map(|(token, _)| *token)
            .collect();
        tokens.sort_unstable();
        for token in tokens {
            let pending = self.take_pending(token).expect("listed above");
            self.ended(pending.stat, RequestOutcome::Error);
            self.after_timeout(pending.handler, out);
            let text = format!(
                "the client was redirected before the {:?} handler answered this request",
                pending.kind
            );
            self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::Redirected, text),
                out,
            );
        }
        let mut fanouts: Vec<u64> = self
            .fanouts
            .iter()
            .filter(|(_, f)| mine(&f.origin))
            .map(|(id, _)| *id)
            .collect();
        fanouts.sort_unstable();
        for id in fanouts {
            let fanout = self.fanouts.remove(&id).expect("listed above");
            self.count_pending(&fanout.origin, -1);
            let text = "the client was redirected before every server answered this request";
            self.fail(
                &fanout.origin,
                ErrorBody::new(ErrorCode::Redirected, text),
                out,
            );
        }
        self.client_gone(conn, out);
        self.pump(out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::*;
    use crate::protocol::handler::parse_handler_message;
    use crate::protocol::message::{Inbound, parse_inbound};

    const ALICE: ConnId = ConnId {
        slot: 1,
        generation: 1,
    };
    const GREET: ConnId = ConnId {
        slot: 10,
        generation: 10,
    };
    const SLOW: ConnId = ConnId {
        slot: 11,
        generation: 11,
    };

    fn router() -> Router {
        let mut r = Router::new(RouterConfig {
            server: "a".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 3,
            max_frame: 1 << 16,
            login_timeout: Duration::from_secs(1),
            max_logins: 2,
        });
        r.add_type("greet", 8);
        r.add_type("slow", 8);
        r.client_identified(ALICE, "alice", &mut Vec::new());
        r.handler_connected(GREET, "greet");
        r.handler_connected(SLOW, "slow");
        r
    }

    fn ask(r: &mut Router, id: &str, kind: &str, out: &mut Vec<Action>) {
        let frame = json!({"header":{"scope":"client","id":id},"payload":{"type":kind}});
        let text = frame.to_string();
        let Inbound::Message(m) = parse_inbound(text.as_bytes()).unwrap() else {
            unreachable!()
        };
        r.client_message(ALICE, m, Instant::now(), out);
    }

    fn answer(r: &mut Router, from: ConnId, frame: Value, out: &mut Vec<Action>) {
        let text = frame.to_string();
        let msg = parse_handler_message(text.as_bytes()).unwrap();
        r.handler_message(from, msg, Instant::now(), out);
    }

    fn bodies(out: &mut Vec<Action>) -> Vec<Value> {
        out.drain(..)
            .filter_map(|a| match a {
                Action::Send { body, .. } => Some(serde_json::from_slice(&body).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_redirect_answers_the_client_request_without_a_payload() {
        let mut r = router();
        let mut out = Vec::new();
        ask(&mut r, "1", "greet", &mut out);
        out.clear();
        answer(
            &mut r,
            GREET,
            json!({"header":{"status":"ok","command":"redirect","request":"1",
                   "commandData":{"url":"bester://b:1","token":"mint"}}}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Action::Redirect {
                to: ALICE,
                id: Some("1".into()),
                url: "bester://b:1".into(),
                token: Some(RedirectToken::Mint),
            }]
        );
        assert_eq!(r.pending_for(ALICE), 0);
    }

    #[test]
    fn other_requests_in_flight_are_answered_redirected_once() {
        let mut r = router();
        let mut out = Vec::new();
        ask(&mut r, "1", "greet", &mut out);
        ask(&mut r, "2", "slow", &mut out);
        ask(&mut r, "3", "slow", &mut out);
        out.clear();
        assert_eq!(r.pending_for(ALICE), 3);
        answer(
            &mut r,
            GREET,
            json!({"header":{"status":"ok","command":"redirect","request":"1",
                   "commandData":{"url":"bester://b:1"}}}),
            &mut out,
        );
        out.clear();
        r.client_redirected(ALICE, &mut out);
        assert_eq!(
            bodies(&mut out),
            [
                json!({"header":{"status":"error","kind":"reply","id":"2"},"data":{"error":"the client was redirected before the \"slow\" handler answered this request","code":"redirected"}}),
                json!({"header":{"status":"error","kind":"reply","id":"3"},"data":{"error":"the client was redirected before the \"slow\" handler answered this request","code":"redirected"}}),
            ]
        );
        assert_eq!(r.pending_for(ALICE), 0);
        assert_eq!(r.connections_of("alice"), 0, "out of presence");
        // The slow handler's late answer finds nothing waiting: no second answer to the client.
        answer(
            &mut r,
            SLOW,
            json!({"header":{"status":"ok","request":"2"},"payload":{"type":"slow"}}),
            &mut out,
        );
        assert!(
            out.iter()
                .all(|a| !matches!(a, Action::Send { to, .. } if *to == ALICE))
        );
    }

    #[test]
    fn an_auth_handler_cannot_answer_a_login_with_a_redirect() {
        let mut r = router();
        let mut out = Vec::new();
        let client = ConnId {
            slot: 5,
            generation: 5,
        };
        let at = ("main".to_string(), "tcp");
        let now = Instant::now();
        r.login_request(
            client,
            "greet",
            "192.0.2.1:1".into(),
            at,
            "{}",
            now,
            &mut out,
        );
        let Some(Action::Request { body, .. }) = out.pop() else {
            panic!("no login request")
        };
        let request: Value = serde_json::from_slice(&body).unwrap();
        let token = request["header"]["request"].as_str().unwrap().to_string();
        answer(
            &mut r,
            GREET,
            json!({"header":{"status":"ok","command":"redirect","request":token,
                   "commandData":{"url":"bester://b:1","token":"t"}}}),
            &mut out,
        );
        let Some(Action::LoginRefused { conn, body, .. }) = out.pop() else {
            panic!("not refused: {out:?}")
        };
        assert_eq!(conn, client);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"header":{"status":"error","kind":"reply"},"data":{"error":"the \"greet\" auth handler answered a login with a command other than \"reply\"","code":"bad_handler_reply"}})
        );
    }

    #[test]
    fn a_redirect_of_a_push_is_refused() {
        let mut r = router();
        let mut out = Vec::new();
        answer(
            &mut r,
            GREET,
            json!({"header":{"status":"ok","command":"redirect","id":"p",
                   "commandData":{"url":"bester://b:1"}},"payload":{"type":"x"}}),
            &mut out,
        );
        assert_eq!(
            bodies(&mut out),
            [
                json!({"header":{"kind":"report","status":"error","id":"p"},"data":{"error":"a push (no request) must use sendClients, sendServers, groupAdd, groupRemove or presence","code":"bad_handler_reply"}})
            ]
        );
    }
}
