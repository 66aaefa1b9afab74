//! The federation directory as the monitor shows it (`GET /directory`): per peer server the
//! users the directory has online there, the heap they take and whether the last snapshot is in;
//! and the directory's traffic since start. The state and the exchange live in
//! `router/directory.rs`; the frames in [`crate::protocol::directory`].

use serde_json::{Value, json};

use super::Server;

impl Server {
    /// `GET /directory`.
    pub(super) fn directory_report(&self) -> Value {
        let servers: Vec<Value> = self
            .router
            .directory_servers()
            .into_iter()
            .map(|s| {
                json!({
                    "server": s.server,
                    "entries": s.entries,
                    "bytes": s.bytes,
                    "in_sync": s.in_sync,
                    "sent_frames": s.traffic.sent_frames,
                    "sent_bytes": s.traffic.sent_bytes,
                    "received_frames": s.traffic.received_frames,
                    "received_bytes": s.traffic.received_bytes,
                })
            })
            .collect();
        let st = self.router.directory_stats();
        json!({
            "enabled": self.config.federation.enabled,
            "max_entries_per_peer": self.config.federation.max_entries_per_peer,
            "servers": servers,
            "sent": {
                "full_syncs": st.full_syncs_sent,
                "full_bytes": st.full_bytes_sent,
                "full_entries": st.full_entries_sent,
                "delta_frames": st.delta_frames_sent,
                "delta_bytes": st.delta_bytes_sent,
                "delta_entries": st.delta_entries_sent,
            },
            "received": {
                "frames": st.frames_received,
                "resyncs_asked": st.resyncs_asked,
                "refused": st.refused,
            },
        })
    }
}
