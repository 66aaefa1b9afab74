//! Handler answers: what a handler frame means once it is parsed — the reply to a request, a
//! `sendHandler` hop to the next handler in a chain, a push to users, or a report back to the
//! handler — and the actions that carry it out. Part of the [`Router`]; no I/O.

use super::deliver::{Reach, Target};
use super::*;
use crate::protocol::groups::Recipients;

impl Router {
    /// A frame a handler sent (already parsed).
    pub fn handler_message(
        &mut self,
        conn: ConnId,
        msg: HandlerMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let current = link.current;
        let correlate = link.correlate;
        let Some(token) = msg.request.as_deref() else {
            // A handler correlated by order or connection answers without a token.
            if let Some(token) = current {
                let pending = self.take_pending(token).expect("current is pending");
                self.route_answer(conn, pending, msg, now, out);
                return self.one_answered(conn, correlate, out);
            }
            if self.drop_late_answer(conn, out) {
                return;
            }
            let Some(kind) = self.links.get(&conn).map(|l| l.kind.clone()) else {
                return;
            };
            return self.handler_push(conn, &kind, msg, now, out);
        };
        let owned = token
            .parse::<u64>()
            .ok()
            .filter(|t| self.pending.get(t).is_some_and(|p| p.handler == Some(conn)));
        let Some(token) = owned else {
            let error = ErrorBody::new(
                ErrorCode::BadHandlerReply,
                format!("no request {token:?} is waiting for an answer from this handler"),
            );
            debug!("conn={conn} handler={} {error}", link.kind);
            self.stats.errors.count(error.code);
            let body = handler_error_report(msg.request.as_deref(), msg.id.as_deref(), &error);
            out.push(Action::Send { to: conn, body });
            return;
        };
        let pending = self.take_pending(token).expect("checked above");
        self.route_answer(conn, pending, msg, now, out);
        self.one_answered(conn, correlate, out);
    }

    /// Route a handler's answer to the request it answers.
    fn route_answer(
        &mut self,
        conn: ConnId,
        pending: Pending,
        msg: HandlerMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let stats = &mut self.stats.handlers[pending.stat];
        stats
            .latency
            .observe(now.saturating_duration_since(pending.sent_at));
        // A redirect needs no payload: the client is told where to go, nothing else.
        let redirect = matches!(*msg.command, Command::Redirect { .. });
        let answered_ok = msg.status != Status::Error && (msg.payload.is_some() || redirect);
        stats.ended(if answered_ok {
            RequestOutcome::Ok
        } else {
            RequestOutcome::Error
        });
        if msg.status == Status::Error {
            let data = msg.payload.as_ref().and_then(|p| p.data.as_deref());
            match data.and_then(|d| serde_json::from_str::<HandlerErrorBody>(d).ok()) {
                Some(error) => self.respond_error(&pending.origin, &error, out),
                None if msg.status_code.is_some() => {
                    let status = msg.status_code.as_deref().unwrap_or_default();
                    self.fail_status(&pending.origin, &pending.kind, status, out);
                }
                None => {
                    let text = format!("the {:?} handler reported an error", pending.kind);
                    self.fail(
                        &pending.origin,
                        ErrorBody::new(ErrorCode::HandlerError, text),
                        out,
                    );
                }
            }
            return;
        }
        let Some(payload) = msg.payload else {
            if let Command::Redirect { url, token } = msg.command.into_owned() {
                return self.redirect(pending, url, token, out);
            }
            let error = ErrorBody::new(ErrorCode::BadHandlerReply, "an ok answer needs a payload");
            self.stats.errors.count(error.code);
            out.push(Action::Send {
                to: conn,
                body: handler_error_report(msg.request.as_deref(), None, &error),
            });
            let text = format!("the {:?} handler sent a malformed answer", pending.kind);
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::BadHandlerReply, text),
                out,
            );
        };
        if matches!(pending.origin, Origin::Login { .. }) && *msg.command != Command::Reply {
            let text = format!(
                "the {:?} auth handler answered a login with a command other than \"reply\"",
                pending.kind
            );
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::BadHandlerReply, text),
                out,
            );
        }
        match msg.command.into_owned() {
            Command::Reply => {
                let outcome = Outcome {
                    kind_of: Some(&payload.kind),
                    data: payload.data.as_deref(),
                    ..Outcome::default()
                };
                self.respond_ok(&pending.origin, &outcome, out);
            }
            Command::SendClients(to) => {
                if to.require_member
                    && let Some(group) = to.groups.iter().find(|g| {
                        !pending
                            .from
                            .user
                            .as_deref()
                            .is_some_and(|u| self.groups.is_member(g, u))
                    })
                {
                    let user = pending.from.user.as_deref().unwrap_or("the sender");
                    let text = format!("{user} is not a member of group {group:?}");
                    return self.fail(
                        &pending.origin,
                        ErrorBody::new(ErrorCode::Forbidden, text),
                        out,
                    );
                }
                let skip = pending.origin.client();
                if self.stores(&payload.kind, msg.store) {
                    let sender_included = skip.is_some()
                        && pending.from.user.as_ref().is_some_and(|u| {
                            to.users.contains(u)
                                || to.groups.iter().any(|g| self.groups.is_member(g, u))
                        });
                    let from = Arc::clone(&pending.from);
                    return self.push_storing(
                        pending.origin,
                        &to,
                        &payload,
                        &from,
                        skip,
                        sender_included,
                        out,
                    );
                }
                let reach = self.push_to_users(&to, &payload, &pending.from, skip, out);
                // The sender sees the data only if it is one of the recipients on this server.
                let sender_included = skip.is_some()
                    && pending.from.user.as_ref().is_some_and(|u| {
                        to.users.contains(u)
                            || to.groups.iter().any(|g| self.groups.is_member(g, u))
                    });
                let data = if sender_included {
                    payload.data.as_deref()
                } else {
                    None
                };
                self.answer_send_clients(
                    pending.origin,
                    (&payload.kind, data),
                    reach,
                    (&pending.from, &pending.kind),
                    &payload,
                    now,
                    out,
                );
            }
            Command::SendServers(servers) => {
                let from = self.relay_sender(&pending.from, &pending.kind);
                self.send_servers(
                    pending.origin,
                    from,
                    pending.hops,
                    (&servers, msg.replies),
                    &payload,
                    now,
                    out,
                );
            }
            Command::SendHandler(next) => self.chain(pending, next, &payload, now, out),
            Command::Redirect { url, token } => self.redirect(pending, url, token, out),
            Command::GroupAdd(_) | Command::GroupRemove(_) | Command::Presence(_) => {
                let text = format!(
                    "the {:?} handler sent a malformed answer: groupAdd, groupRemove and presence are sent without a request",
                    pending.kind
                );
                self.fail(
                    &pending.origin,
                    ErrorBody::new(ErrorCode::BadHandlerReply, text),
                    out,
                );
            }
        }
    }

    /// Pass a payload on to the handler of `next`, refusing loops and over-long chains.
    fn chain(
        &mut self,
        mut pending: Pending,
        next: String,
        payload: &PayloadRef<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if *next == *pending.kind || pending.via.contains(&next) {
            let chain: Vec<&str> = pending
                .via
                .iter()
                .map(String::as_str)
                .chain([&*pending.kind])
                .collect();
            let text = format!(
                "sendHandler to {next:?} would loop (chain: {})",
                chain.join(" -> ")
            );
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::HandlerLoop, text),
                out,
            );
        }
        if pending.via.len() + 2 > self.config.max_chain_depth {
            let text = format!(
                "sendHandler chain longer than {} handlers",
                self.config.max_chain_depth
            );
            return self.fail(
                &pending.origin,
                ErrorBody::new(ErrorCode::ChainTooDeep, text),
                out,
            );
        }
        let previous = std::mem::replace(&mut pending.kind, self.type_name(&next));
        pending.via.push(previous.to_string());
        self.dispatch(pending, payload, now, out);
    }

    /// Push a payload to every connection of the users and group members named on this server
    /// (except `skip`), once per connection however many ways a user is reached; the users of
    /// other servers (`bob@node-b`, members added that way) are grouped by server in the
    /// returned [`Reach`], each once, for [`Router::answer_send_clients`] to deliver.
    fn push_to_users(
        &self,
        to: &Recipients,
        payload: &PayloadRef<'_>,
        from: &Sender,
        skip: Option<ConnId>,
        out: &mut Vec<Action>,
    ) -> Reach {
        let mut reach = Reach::default();
        // Two names reach the same user only if one of them names a server (`bob@a`, `bob@b`
        // beside a bare `bob`): the members of one group are distinct names, so one group of
        // bare names needs no set of who was reached (the common fan-out, spared a hash of
        // every member).
        let single = to.users.is_empty()
            && to.groups.len() == 1
            && !self.groups.members(&to.groups[0]).any(|m| m.contains('@'));
        let names = to.users.len() + to.groups.iter().map(|g| self.groups.size(g)).sum::<usize>();
        let mut seen = HashSet::with_capacity(if single { 0 } else { names });
        reach.delivered.reserve(names);
        let mut conns = Vec::with_capacity(names);
        let members = to.groups.iter().flat_map(|g| self.groups.members(g));
        for named in to.users.iter().chain(members) {
            let target = self.send_target(named);
            if !single && !seen.insert(target) {
                continue;
            }
            let user = match target {
                Target::Local(user) => user,
                Target::Remote { server, user } => {
                    let users = reach.remote.entry(server.to_string()).or_default();
                    users.push((named.clone(), user.to_string()));
                    continue;
                }
            };
            match self.presence.conns(user) {
                Some(online) => {
                    conns.extend(online.iter().filter(|c| Some(**c) != skip));
                    reach.delivered.push(named.clone());
                }
                None => reach.offline.push(named.clone()),
            }
        }
        if !conns.is_empty() {
            let body = client_push(&payload.kind, from, payload.data.as_deref());
            out.push(Action::send_each(conns, body));
        }
        reach
    }

    /// A handler frame with no `request`: a push to users or servers, answered with a report.
    fn handler_push(
        &mut self,
        conn: ConnId,
        kind: &str,
        msg: HandlerMessage<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let origin = Origin::Push {
            handler: conn,
            id: msg.id.as_deref().map(str::to_string),
        };
        match &*msg.command {
            Command::GroupAdd(change) => {
                return self.group_change(conn, msg.id.as_deref(), change, true, out);
            }
            Command::GroupRemove(change) => {
                return self.group_change(conn, msg.id.as_deref(), change, false, out);
            }
            Command::Presence(what) => {
                return match self.presence_query(None, what) {
                    Ok(answer) => out.push(Action::Send {
                        to: conn,
                        body: crate::protocol::groups::handler_report(
                            msg.id.as_deref(),
                            Some(&answer),
                        ),
                    }),
                    Err(error) => self.fail(&origin, error, out),
                };
            }
            _ => {}
        }
        let Some(payload) = &msg.payload else {
            let error = ErrorBody::new(ErrorCode::BadHandlerReply, "a push needs a payload");
            return self.fail(&origin, error, out);
        };
        let from = Sender {
            user: None,
            server: self.config.server.clone(),
            handler: Some(kind.to_string()),
            info: None,
        };
        match &*msg.command {
            Command::SendClients(users) if self.stores(&payload.kind, msg.store) => {
                self.push_storing(origin, users, payload, &from, None, false, out);
            }
            Command::SendClients(users) => {
                let reach = self.push_to_users(users, payload, &from, None, out);
                let from = (&from, kind);
                self.answer_send_clients(origin, (kind, None), reach, from, payload, now, out);
            }
            Command::SendServers(_) if msg.replies => {
                let text = "a push gets no replies: \"replies\" needs a request to answer";
                self.fail(
                    &origin,
                    ErrorBody::new(ErrorCode::BadHandlerReply, text),
                    out,
                );
            }
            Command::SendServers(servers) => {
                self.send_servers(origin, from, 0, (servers, false), payload, now, out)
            }
            Command::Reply
            | Command::SendHandler(_)
            | Command::Redirect { .. }
            | Command::GroupAdd(_)
            | Command::GroupRemove(_)
            | Command::Presence(_) => {
                let text = "a push (no request) must use sendClients, sendServers, groupAdd, groupRemove or presence";
                self.fail(
                    &origin,
                    ErrorBody::new(ErrorCode::BadHandlerReply, text),
                    out,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const fn conn(n: usize) -> ConnId {
        ConnId {
            slot: n,
            generation: n as u64,
        }
    }

    fn router() -> Router {
        Router::new(RouterConfig {
            server: "a".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 3,
            max_frame: 1 << 20,
            login_timeout: Duration::from_secs(1),
            max_logins: 2,
        })
    }

    fn group(name: &str) -> Recipients {
        Recipients {
            users: Vec::new(),
            groups: vec![name.to_string()],
            require_member: false,
        }
    }

    /// (connections sent to, in order; delivered names, sorted).
    fn fan_out(r: &Router, to: &Recipients) -> (Vec<ConnId>, Vec<String>) {
        let payload = PayloadRef {
            kind: "chat".into(),
            data: Some("1".into()),
        };
        let from = Sender {
            user: None,
            server: "a".into(),
            handler: Some("chat".into()),
            info: None,
        };
        let mut out = Vec::new();
        let mut reach = r.push_to_users(to, &payload, &from, None, &mut out);
        let mut sent: Vec<ConnId> = out
            .into_iter()
            .flat_map(|a| match a {
                Action::Send { to, .. } => vec![to],
                Action::SendEach { to, .. } => to,
                other => panic!("not a send: {other:?}"),
            })
            .collect();
        sent.sort_unstable();
        reach.delivered.sort_unstable();
        (sent, reach.delivered)
    }

    #[test]
    fn one_group_of_bare_names_reaches_every_connection_once() {
        let mut r = router();
        let mut out = Vec::new();
        r.client_identified(conn(1), "ann", &mut out);
        r.client_identified(conn(2), "bob", &mut out);
        r.client_identified(conn(3), "bob", &mut out);
        let members = ["ann", "bob", "cid"].map(String::from);
        r.groups.add("room", &members, true).unwrap();
        let (sent, delivered) = fan_out(&r, &group("room"));
        assert_eq!(sent, [conn(1), conn(2), conn(3)]);
        assert_eq!(delivered, ["ann", "bob"], "cid is offline");
    }

    #[test]
    fn a_fan_out_is_one_body_for_every_connection_but_the_senders() {
        let mut r = router();
        let mut out = Vec::new();
        for (n, user) in [(1, "ann"), (2, "bob"), (3, "bob"), (4, "cid")] {
            r.client_identified(conn(n), user, &mut out);
        }
        let members = ["ann", "bob", "cid"].map(String::from);
        r.groups.add("room", &members, true).unwrap();
        let payload = PayloadRef {
            kind: "chat".into(),
            data: Some("1".into()),
        };
        let from = Sender {
            user: Some("ann".into()),
            server: "a".into(),
            handler: None,
            info: None,
        };
        out.clear();
        r.push_to_users(&group("room"), &payload, &from, Some(conn(1)), &mut out);
        let [Action::SendEach { to, body }] = &out[..] else {
            panic!("one action: {out:?}");
        };
        assert_eq!(
            to,
            &[conn(2), conn(3), conn(4)],
            "in order, not the sender's"
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"header":{"status":"ok","kind":"push","type":"chat","from":{"user":"ann","server":"a"}},"data":1})
        );
        // One connection reached: a plain send.
        out.clear();
        let to_cid = Recipients {
            users: vec!["cid".into()],
            groups: Vec::new(),
            require_member: false,
        };
        r.push_to_users(&to_cid, &payload, &from, None, &mut out);
        assert!(
            matches!(&out[..], [Action::Send { to, .. }] if *to == conn(4)),
            "{out:?}"
        );
    }

    #[test]
    fn one_group_naming_a_user_twice_reaches_him_once() {
        let mut r = router();
        let mut out = Vec::new();
        r.client_identified(conn(2), "bob", &mut out);
        r.client_identified(conn(3), "bob", &mut out);
        // `bob@a` is bob on this server: the same user as `bob`.
        let members = ["bob", "bob@a"].map(String::from);
        r.groups.add("room", &members, true).unwrap();
        let (sent, delivered) = fan_out(&r, &group("room"));
        assert_eq!(sent, [conn(2), conn(3)], "once per connection");
        assert_eq!(delivered.len(), 1, "{delivered:?}");
    }
}
