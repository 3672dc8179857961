//! Live session events in this process: appended sequence numbers (the
//! stream then reads the log) and text deltas (never logged). Streams of
//! sessions driven by another replica poll the log instead.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub enum Live {
    /// An event was logged: read the log.
    Appended,
    Delta(String),
}

#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Live>>>,
}

impl Hub {
    pub fn subscribe(&self, session: &str) -> broadcast::Receiver<Live> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(session.to_owned()).or_insert_with(|| broadcast::channel(1024).0).subscribe()
    }

    pub fn publish(&self, session: &str, live: Live) {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(session) {
            let _ = tx.send(live);
        }
    }
}
