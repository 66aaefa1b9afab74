//! The federation directory, sans-io (`[federation] directory = true`): which users of the
//! linked peer servers are online there, learnt over the authenticated peer links, and what this
//! server tells its peers about its own users.
//!
//! - **Sending.** When a link comes up (and when the peer asks for a resync, at most once per
//!   [`RESYNC_INTERVAL`]) the peer gets a full snapshot of this server's online users, cut into
//!   numbered parts that fit the frame limit and [`MAX_ENTRIES_PER_FRAME`]. A local presence
//!   change marks its user; once per loop turn ([`Router::directory_flush`]) the marked users'
//!   state goes to every linked peer as deltas. Entries carry absolute state (connections,
//!   status), so a repeated one changes nothing.
//! - **Receiving.** Every update on a link carries the next sequence number. A gap (a lost,
//!   repeated or reordered frame, or a part out of place) drops the snapshot being assembled, the
//!   deltas until the next snapshot are ignored, and the peer is asked for a resync; the peer's
//!   entries stay as they were until the new snapshot replaces them. A snapshot replaces all of
//!   the peer's entries at once, when its last part is in.
//! - **What a peer may say.** Only its own users: an update naming another server (`server`
//!   in its header) or a user of another server (`bob@c`) is refused `forged_origin` and those
//!   entries are not taken. At most `max_entries_per_peer` entries per peer (`limit_reached`).
//! - **A link down** removes the peer's entries at once (watchers are told they are offline): a
//!   user on a server this one cannot reach cannot be reached through it either. The next link
//!   starts with a fresh snapshot.
//!
//! Entries are keyed by `(server, user)`; watchers are told through `router/presence.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::deliver::Target;
use super::{Action, ConnId, ErrorBody, ErrorCode, Router};
use crate::protocol::directory::{
    DirEntry, DirectoryFrame, MAX_ENTRIES_PER_FRAME, error_frame, resync_frame, update_frame,
    update_overhead, write_entry,
};

/// Shortest time between two full snapshots sent on one link.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long a receiver waits for the snapshot it asked for before it asks again.
const ASK_AGAIN: Duration = Duration::from_secs(5);

/// `[federation]`: whether the directory runs, and its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Exchange online users with the linked peers.
    pub enabled: bool,
    /// Most entries kept for one peer server.
    pub max_entries_per_peer: usize,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            enabled: false,
            max_entries_per_peer: 100_000,
        }
    }
}

/// The directory's traffic since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Full snapshots sent.
    pub full_syncs_sent: u64,
    /// Their frames' bytes.
    pub full_bytes_sent: u64,
    /// Their entries.
    pub full_entries_sent: u64,
    /// Delta frames sent.
    pub delta_frames_sent: u64,
    /// Their bytes.
    pub delta_bytes_sent: u64,
    /// Their entries (one per changed user per peer).
    pub delta_entries_sent: u64,
    /// Updates received.
    pub frames_received: u64,
    /// Resyncs this server asked for (a gap in a peer's numbers).
    pub resyncs_asked: u64,
    /// Updates (or parts of them) refused.
    pub refused: u64,
}

/// What the directory holds for one peer server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDirectory {
    /// The peer.
    pub server: String,
    /// Its users online.
    pub entries: usize,
    /// Heap bytes they take (an estimate from the table's capacity and the names' lengths).
    pub bytes: usize,
    /// Whether the last snapshot is in and no gap was seen since.
    pub in_sync: bool,
    /// Directory frames exchanged with the peer since start.
    pub traffic: PeerTraffic,
}

/// Directory frames on the links to one peer since start, both ways (frame bodies: the 4-byte
/// length prefix is not counted; snapshots, deltas, resync requests and refusals alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Frames sent to the peer.
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames received from the peer.
    pub received_frames: u64,
    /// Their bytes.
    pub received_bytes: u64,
}

/// A user online on a peer server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteEntry {
    connections: u32,
    status: Option<Box<str>>,
}

impl RemoteEntry {
    fn of(e: &DirEntry) -> Self {
        RemoteEntry {
            connections: e.connections,
            status: e.status.as_deref().map(Box::from),
        }
    }
}

/// A snapshot being assembled.
#[derive(Debug)]
struct Staging {
    next: u32,
    parts: u32,
    entries: HashMap<String, RemoteEntry>,
}

/// The directory's side of one live peer link.
#[derive(Debug)]
struct LinkSync {
    server: String,
    /// The last number sent on the link.
    sent: u64,
    last_full: Option<Instant>,
    /// The peer asked for a snapshot within [`RESYNC_INTERVAL`] of the last one.
    full_wanted: bool,
    /// The number the next update must carry; `None`: waiting for a snapshot's first part.
    expect: Option<u64>,
    /// When a resync was last asked for.
    asked: Option<Instant>,
    staging: Option<Staging>,
    /// A refusal by the peer was logged at warn level already.
    complained: bool,
    /// A refusal of the peer's updates was logged at warn level already.
    refused_logged: bool,
}

/// The directory's state.
#[derive(Debug, Default)]
pub(super) struct Directory {
    pub(super) config: DirectoryConfig,
    /// Local users whose presence changed since the last flush.
    dirty: BTreeSet<String>,
    links: HashMap<ConnId, LinkSync>,
    /// Peer server → its users online.
    servers: BTreeMap<String, HashMap<String, RemoteEntry>>,
    stats: DirectoryStats,
    /// Per peer server (configured peers only: the names come from authenticated links).
    traffic: BTreeMap<String, PeerTraffic>,
}

/// Count one frame sent on `link` (whose directory state is `links[link]`).
fn count_sent(
    traffic: &mut BTreeMap<String, PeerTraffic>,
    links: &HashMap<ConnId, LinkSync>,
    link: ConnId,
    bytes: usize,
) {
    if let Some(sync) = links.get(&link) {
        let t = traffic.entry(sync.server.clone()).or_default();
        t.sent_frames += 1;
        t.sent_bytes += bytes as u64;
    }
}

impl Directory {
    /// `user`'s connections and status on `server`, if the directory has them online there.
    pub(super) fn remote(&self, user: &str, server: &str) -> Option<(usize, Option<&str>)> {
        let e = self.servers.get(server)?.get(user)?;
        Some((e.connections as usize, e.status.as_deref()))
    }

    /// The first server (by name) where the directory has `user` online.
    pub(super) fn find(&self, user: &str) -> Option<&str> {
        self.servers
            .iter()
            .find(|(_, users)| users.contains_key(user))
            .map(|(server, _)| server.as_str())
    }
}

/// Cut entries into frames' worth: at most [`MAX_ENTRIES_PER_FRAME`] each, and each within
/// `room` bytes (at least one entry per frame). Always at least one (maybe empty) chunk.
fn chunks<'a>(
    entries: impl Iterator<Item = (&'a str, usize, Option<&'a str>)>,
    room: usize,
) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let (mut cur, mut n) = (Vec::new(), 0);
    let mut one = Vec::new();
    for (user, connections, status) in entries {
        one.clear();
        write_entry(&mut one, user, connections, status);
        if n > 0 && (n == MAX_ENTRIES_PER_FRAME || cur.len() + 1 + one.len() > room) {
            out.push((std::mem::take(&mut cur), n));
            n = 0;
        }
        if n > 0 {
            cur.push(b',');
        }
        cur.extend_from_slice(&one);
        n += 1;
    }
    out.push((cur, n));
    out
}

impl Router {
    /// Turn the directory on or off and set its bound (at start: `[federation]` needs a restart).
    pub fn set_directory(&mut self, config: DirectoryConfig) {
        self.directory.config = config;
    }

    /// The directory's traffic figures.
    pub fn directory_stats(&self) -> &DirectoryStats {
        &self.directory.stats
    }

    /// What the directory holds, per peer server with entries or a live link.
    pub fn directory_servers(&self) -> Vec<ServerDirectory> {
        let mut names: BTreeSet<&str> = self.directory.servers.keys().map(|s| s.as_str()).collect();
        names.extend(self.directory.links.values().map(|l| l.server.as_str()));
        names.extend(self.directory.traffic.keys().map(|s| s.as_str()));
        names
            .into_iter()
            .map(|server| {
                let users = self.directory.servers.get(server);
                let bytes = users.map_or(0, |m| {
                    m.capacity() * (std::mem::size_of::<(String, RemoteEntry)>() + 1)
                        + m.iter()
                            .map(|(u, e)| u.capacity() + e.status.as_ref().map_or(0, |s| s.len()))
                            .sum::<usize>()
                });
                let in_sync = self
                    .directory
                    .links
                    .values()
                    .any(|l| l.server == server && l.expect.is_some() && l.staging.is_none());
                ServerDirectory {
                    server: server.to_string(),
                    entries: users.map_or(0, HashMap::len),
                    bytes,
                    in_sync,
                    traffic: self
                        .directory
                        .traffic
                        .get(server)
                        .copied()
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The peer server the directory places `user` on, when they are not online here.
    pub fn directory_server_of(&self, user: &str) -> Option<&str> {
        if self.presence.conns(user).is_some() {
            return None;
        }
        self.directory.find(user)
    }

    /// Where a `sendClients` reaches the user named `name`: as [`Router::target`] says, except
    /// that a bare name of a user who is not online here goes to the peer server the directory
    /// has them on.
    pub(super) fn send_target<'a>(&'a self, name: &'a str) -> Target<'a> {
        match self.target(name) {
            Target::Local(user)
                if user == name
                    && self.directory.config.enabled
                    && self.presence.conns(user).is_none() =>
            {
                match self.directory.find(user) {
                    Some(server) => Target::Remote { server, user },
                    None => Target::Local(user),
                }
            }
            target => target,
        }
    }

    /// A local user's presence changed: their state goes to the peers at the next flush.
    pub(super) fn directory_touch(&mut self, user: &str) {
        if self.directory.config.enabled && !self.directory.links.is_empty() {
            self.directory.dirty.insert(user.to_string());
        }
    }

    /// A peer link is up: the peer gets a full snapshot, and its own is awaited.
    pub fn directory_link_up(&mut self, link: ConnId, now: Instant, out: &mut Vec<Action>) {
        if !self.directory.config.enabled {
            return;
        }
        let Some(server) = self.peer_of(link).map(str::to_string) else {
            return;
        };
        self.directory.links.insert(
            link,
            LinkSync {
                server,
                sent: 0,
                last_full: None,
                full_wanted: false,
                expect: None,
                asked: None,
                staging: None,
                complained: false,
                refused_logged: false,
            },
        );
        self.send_full(link, now, out);
    }

    /// A peer link went down: the peer's entries go at once, and their watchers are told.
    pub fn directory_link_down(&mut self, link: ConnId, out: &mut Vec<Action>) {
        let Some(sync) = self.directory.links.remove(&link) else {
            return;
        };
        let Some(gone) = self.directory.servers.remove(&sync.server) else {
            return;
        };
        info!(
            "peer={} directory: {} entries dropped with the link",
            sync.server,
            gone.len()
        );
        if self.presence.has_watchers() {
            let mut users: Vec<String> = gone.into_keys().collect();
            users.sort_unstable();
            for user in users {
                self.remote_changed(&user, &sync.server, out);
            }
        }
    }

    /// When a deferred snapshot is due (for the poll timeout).
    pub fn directory_next_due(&self) -> Option<Instant> {
        self.directory
            .links
            .values()
            .filter(|l| l.full_wanted)
            .filter_map(|l| l.last_full.map(|t| t + RESYNC_INTERVAL))
            .min()
    }

    /// Once per loop turn: send the snapshots that are due, and the local changes since the
    /// last turn as deltas to every linked peer.
    pub fn directory_flush(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.directory.config.enabled {
            return;
        }
        let mut due: Vec<ConnId> = self
            .directory
            .links
            .iter()
            .filter(|(_, l)| {
                l.full_wanted && l.last_full.is_none_or(|t| now >= t + RESYNC_INTERVAL)
            })
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for link in due {
            self.send_full(link, now, out);
        }
        if self.directory.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.directory.dirty);
        if self.directory.links.is_empty() {
            return;
        }
        let me = self.config.server.clone();
        let room = self.config.max_frame.saturating_sub(update_overhead(&me));
        let presence = &self.presence;
        let entries = dirty.iter().map(|user| match presence.local(user) {
            Some((n, status)) => (user.as_str(), n, status),
            None => (user.as_str(), 0, None),
        });
        let frames = chunks(entries, room);
        let mut links: Vec<ConnId> = self.directory.links.keys().copied().collect();
        links.sort_unstable();
        let stats = &mut self.directory.stats;
        for link in links {
            let sync = self.directory.links.get_mut(&link).expect("listed above");
            let traffic = self
                .directory
                .traffic
                .entry(sync.server.clone())
                .or_default();
            for (chunk, n) in &frames {
                sync.sent += 1;
                let body = update_frame(&me, sync.sent, None, chunk);
                stats.delta_frames_sent += 1;
                stats.delta_bytes_sent += body.len() as u64;
                stats.delta_entries_sent += *n as u64;
                traffic.sent_frames += 1;
                traffic.sent_bytes += body.len() as u64;
                out.push(Action::Send { to: link, body });
            }
        }
    }

    /// A full snapshot of this server's online users to one peer.
    fn send_full(&mut self, link: ConnId, now: Instant, out: &mut Vec<Action>) {
        let me = self.config.server.clone();
        let room = self.config.max_frame.saturating_sub(update_overhead(&me));
        let mut online = self.presence.online();
        online.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let entries = online.len();
        let frames = chunks(online.into_iter(), room);
        let Some(sync) = self.directory.links.get_mut(&link) else {
            return;
        };
        let parts = frames.len() as u32;
        let stats = &mut self.directory.stats;
        stats.full_syncs_sent += 1;
        stats.full_entries_sent += entries as u64;
        let traffic = self
            .directory
            .traffic
            .entry(sync.server.clone())
            .or_default();
        for (i, (chunk, _)) in frames.iter().enumerate() {
            sync.sent += 1;
            let body = update_frame(&me, sync.sent, Some((i as u32 + 1, parts)), chunk);
            stats.full_bytes_sent += body.len() as u64;
            traffic.sent_frames += 1;
            traffic.sent_bytes += body.len() as u64;
            out.push(Action::Send { to: link, body });
        }
        sync.last_full = Some(now);
        sync.full_wanted = false;
        debug!(
            "peer={} directory: snapshot of {entries} entries in {parts} parts",
            sync.server
        );
    }

    /// A directory frame of `bytes` arrived on the peer link `link` (counted whether or not the
    /// directory is on here: it is traffic on the link).
    pub fn directory_received(&mut self, link: ConnId, bytes: usize) {
        let Some(server) = self.peer_links.get(&link) else {
            return;
        };
        let traffic = &mut self.directory.traffic;
        let t = match traffic.get_mut(server) {
            Some(t) => t,
            None => traffic.entry(server.clone()).or_default(),
        };
        t.received_frames += 1;
        t.received_bytes += bytes as u64;
    }

    /// A directory frame from a linked peer.
    pub fn directory_frame(
        &mut self,
        link: ConnId,
        frame: DirectoryFrame,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.directory.config.enabled {
            debug!("conn={link} directory frame ignored: the directory is off here");
            return;
        }
        let Some(sync) = self.directory.links.get_mut(&link) else {
            return;
        };
        match frame {
            DirectoryFrame::Resync => {
                if sync.last_full.is_none_or(|t| now >= t + RESYNC_INTERVAL) {
                    self.send_full(link, now, out);
                } else {
                    sync.full_wanted = true;
                }
            }
            DirectoryFrame::Error { seq, error, code } => {
                let line = format!(
                    "peer={} refused directory update {seq:?}: {error} ({code})",
                    sync.server
                );
                if std::mem::replace(&mut sync.complained, true) {
                    debug!("{line}");
                } else {
                    warn!("{line} (further refusals are logged at debug level)");
                }
            }
            DirectoryFrame::Update {
                server,
                seq,
                part,
                entries,
            } => self.directory_update(link, (server, seq, part), entries, now, out),
        }
    }

    /// An update: check its number, then its origin and entries; apply what may be taken.
    fn directory_update(
        &mut self,
        link: ConnId,
        (server, seq, part): (String, u64, Option<(u32, u32)>),
        entries: Vec<DirEntry>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let dir = &mut self.directory;
        dir.stats.frames_received += 1;
        let max = dir.config.max_entries_per_peer;
        let Some(sync) = dir.links.get_mut(&link) else {
            return;
        };
        let peer = sync.server.clone();
        let expected = sync.expect;
        let in_order = expected == Some(seq);
        let placed = match part {
            Some((1, parts)) => {
                sync.staging = Some(Staging {
                    next: 1,
                    parts,
                    entries: HashMap::new(),
                });
                true
            }
            Some((k, parts)) => {
                in_order
                    && sync
                        .staging
                        .as_ref()
                        .is_some_and(|s| s.next == k && s.parts == parts)
            }
            None => in_order && sync.staging.is_none(),
        };
        if !placed {
            sync.staging = None;
            sync.expect = None;
            if let Some(expected) = expected {
                warn!(
                    "peer={peer} directory update {seq} out of place (expected {expected}); asking for a resync"
                );
            }
            if sync.asked.is_none_or(|t| now >= t + ASK_AGAIN) {
                sync.asked = Some(now);
                dir.stats.resyncs_asked += 1;
                let body = resync_frame();
                count_sent(&mut dir.traffic, &dir.links, link, body.len());
                out.push(Action::Send { to: link, body });
            }
            return;
        }
        sync.expect = Some(seq + 1);
        let mut refusal: Option<ErrorBody> = None;
        let entries = if server == peer {
            entries
        } else {
            refusal = Some(ErrorBody::new(
                ErrorCode::ForgedOrigin,
                format!("peer {peer:?} may announce only its own users, not those of {server:?}"),
            ));
            Vec::new()
        };
        let over = || {
            ErrorBody::new(
                ErrorCode::LimitReached,
                format!(
                    "peer {peer:?} announced more than {max} users (the most kept for one server)"
                ),
            )
        };
        let mut changed = Vec::new();
        for entry in entries {
            if let Err(e) = entry.check(&peer, |s| {
                s == self.config.server || self.peers.contains_key(s)
            }) {
                refusal.get_or_insert(e);
                continue;
            }
            if part.is_some() {
                let staging = sync.staging.as_mut().expect("placed above");
                if entry.connections == 0 {
                    continue;
                }
                if staging.entries.len() >= max && !staging.entries.contains_key(&entry.user) {
                    refusal.get_or_insert_with(over);
                    continue;
                }
                staging
                    .entries
                    .insert(entry.user.clone(), RemoteEntry::of(&entry));
                continue;
            }
            let users = dir.servers.entry(peer.clone()).or_default();
            if entry.connections == 0 {
                if users.remove(&entry.user).is_some() {
                    changed.push(entry.user);
                }
                continue;
            }
            if users.len() >= max && !users.contains_key(&entry.user) {
                refusal.get_or_insert_with(over);
                continue;
            }
            let new = RemoteEntry::of(&entry);
            if users.get(&entry.user) != Some(&new) {
                users.insert(entry.user.clone(), new);
                changed.push(entry.user);
            }
        }
        if let Some((k, parts)) = part {
            let staging = sync.staging.as_mut().expect("placed above");
            staging.next = k + 1;
            if k == parts {
                let new = sync.staging.take().expect("placed above").entries;
                sync.asked = None;
                let old = dir.servers.insert(peer.clone(), new).unwrap_or_default();
                let now_there = &dir.servers[&peer];
                changed.extend(
                    old.iter()
                        .filter(|(u, e)| now_there.get(*u) != Some(*e))
                        .map(|(u, _)| u.clone()),
                );
                changed.extend(now_there.keys().filter(|u| !old.contains_key(*u)).cloned());
                debug!(
                    "peer={peer} directory: snapshot of {} entries taken",
                    now_there.len()
                );
            }
        }
        if let Some(error) = refusal {
            dir.stats.refused += 1;
            let line = format!(
                "peer={peer} directory update {seq} refused: {}",
                error.error
            );
            if std::mem::replace(&mut sync.refused_logged, true) {
                debug!("{line}");
            } else {
                warn!("{line} (further refusals are logged at debug level)");
            }
            let body = error_frame(Some(seq), &error);
            count_sent(&mut dir.traffic, &dir.links, link, body.len());
            out.push(Action::Send { to: link, body });
        }
        if self.presence.has_watchers() {
            changed.sort_unstable();
            changed.dedup();
            for user in changed {
                self.remote_changed(&user, &peer, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
