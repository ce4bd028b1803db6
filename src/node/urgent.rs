//! The urgent gate: urgent work in progress, and urgent reports queued for
//! a peer until its urgent lane sent them. Bulk work (intake groups,
//! received chunks, delivery batches, settlements) waits on it between its
//! chunks, so an urgent report never queues behind a backlog.

/// Urgent work in progress on this node — an urgent submission being
/// stored, an urgent batch being received, delivered or settled, and
/// urgent reports queued for a peer whose urgent lane has not yet sent
/// them. Bulk work (intake groups, received chunks, delivery batches,
/// settlements) waits for it between its chunks, so an urgent report
/// shares neither the writer nor the CPU with more than the one bulk chunk
/// already under way when it arrived — from its intake to its receipt, not
/// only step by step.
#[derive(Default)]
pub struct UrgentGate {
    busy: std::sync::atomic::AtomicUsize,
    /// Peers with urgent reports queued and not yet sent, each until when
    /// the hold lapses on its own (a peer that is down must not slow bulk
    /// work for the others for longer than that).
    held: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
    idle: tokio::sync::Notify,
    /// When urgent work was last seen here.
    last_seen: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Held while urgent work is in progress.
pub struct UrgentWork<'a>(&'a UrgentGate);

/// How long urgent reports queued for a peer hold bulk work back at most,
/// when the peer's urgent lane does not get them out sooner.
pub const URGENT_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// For this long after urgent work was last seen, bulk work goes in
/// chunks of `URGENT_TIMES_CHUNK`: the next urgent report then waits for a
/// short bulk transaction at most, at the price of more commits per bulk
/// report while urgent reports keep coming.
pub const URGENT_TIMES: std::time::Duration = std::time::Duration::from_secs(5);
pub const URGENT_TIMES_CHUNK: usize = 16;

impl UrgentGate {
    pub fn enter(&self) -> UrgentWork<'_> {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.seen();
        UrgentWork(self)
    }

    fn seen(&self) {
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }

    /// How many reports bulk work should take per transaction, `normal`
    /// unless urgent work was seen in the last `URGENT_TIMES`.
    pub fn bulk_chunk(&self, normal: usize) -> usize {
        let last = *self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < URGENT_TIMES) {
            normal.min(URGENT_TIMES_CHUNK)
        } else {
            normal
        }
    }

    /// Urgent reports are queued for `peer`: bulk work waits until its
    /// urgent lane has sent them (`release`), or `URGENT_HOLD` passed.
    pub fn hold(&self, peer: &str) {
        self.seen();
        let until = std::time::Instant::now() + URGENT_HOLD;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.iter_mut().find(|(p, _)| p == peer) {
            Some((_, u)) => *u = until,
            None => held.push((peer.to_owned(), until)),
        }
    }

    /// `peer`'s urgent lane found nothing more to send (or cannot reach
    /// the peer): its hold ends.
    pub fn release(&self, peer: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let before = held.len();
        held.retain(|(p, _)| p != peer);
        if held.len() < before && held.is_empty() && self.quiet_now() {
            self.idle.notify_waiters();
        }
    }

    fn quiet_now(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// True when no urgent work is in progress or held for.
    pub fn is_idle(&self) -> bool {
        if !self.quiet_now() {
            return false;
        }
        let now = std::time::Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, until)| *until > now);
        held.is_empty()
    }

    /// Waits until no urgent work is in progress — at most a second, so
    /// bulk work is slowed by a stream of urgent reports, never stopped.
    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.is_idle() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = self.idle.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)) => {}
            }
        }
    }
}

impl Drop for UrgentWork<'_> {
    fn drop(&mut self) {
        if self
            .0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{URGENT_HOLD, UrgentGate};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Bulk work waits while urgent reports are queued for a peer, and
    /// goes on as soon as the peer's urgent lane has sent them.
    #[tokio::test]
    async fn bulk_waits_for_urgent_reports_held_for_a_peer() {
        let gate = Arc::new(UrgentGate::default());
        assert!(gate.is_idle());
        gate.hold("DE-1");
        assert!(!gate.is_idle());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                gate.wait_idle().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "bulk work went on while urgent work was held"
        );
        // Another peer's lane finishing does not end this hold.
        gate.release("FR-1");
        assert!(!gate.is_idle());
        gate.release("DE-1");
        let waited = waiter.await.unwrap();
        assert!(gate.is_idle());
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(900),
            "waited {waited:?}"
        );
    }

    /// A hold never stops bulk work: one wait lasts at most a second, and a
    /// hold nobody releases (the peer is down) lapses on its own.
    #[tokio::test]
    async fn an_unreleased_hold_slows_bulk_work_but_never_stops_it() {
        let gate = UrgentGate::default();
        gate.hold("DE-1");
        let started = Instant::now();
        gate.wait_idle().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_millis(1500),
            "waited {waited:?}"
        );
        assert!(!gate.is_idle());
        tokio::time::sleep(URGENT_HOLD - waited + Duration::from_millis(50)).await;
        assert!(gate.is_idle(), "the hold did not lapse");
        // Urgent work in progress holds bulk work back the same way.
        let work = gate.enter();
        assert!(!gate.is_idle());
        drop(work);
        assert!(gate.is_idle());
    }
}
