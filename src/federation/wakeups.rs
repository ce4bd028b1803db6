//! Cross-replica wake-ups. A replica that commits outbox work wakes its own
//! workers in-process (`Core::wake`); on PostgreSQL the committing
//! transaction also `NOTIFY`s (`store::postgres::WORK_CHANNEL`), and this
//! task, one per process, `LISTEN`s and wakes the lane named, so the other
//! replicas' workers pick the work up too. Best effort: a notification
//! lost while the connection is down is found by the workers' idle poll.
//! On SQLite (one process per file) there is nothing to listen to.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Core;

pub async fn run(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let listener = tokio::select! {
            l = core.store.work_listener() => l,
            _ = shutdown.changed() => return,
        };
        let mut listener = match listener {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other replicas' work; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = listener.next() => n,
                _ = shutdown.changed() => return,
            };
            match next {
                Ok((peer, urgent)) => core.wake_lane(&peer, urgent),
                Err(e) => {
                    tracing::warn!(error = %e, "lost the work notifications; listening again");
                    break;
                }
            }
        }
    }
}
