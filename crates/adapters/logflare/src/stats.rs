use std::sync::atomic::{AtomicU64, Ordering};

/// What the forwarder did since it started. Every member but `pending` is a monotonic
/// counter (Prometheus `_total`); `pending` is a gauge.
///
/// Every forwarded event is counted once in `accepted`, `dropped_queue_full` or
/// `dropped_closed`; every accepted event ends in `sent`, `failed_events` or `abandoned`,
/// or is still `pending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Events taken into the queue.
    pub accepted: u64,
    /// Events not taken because the queue was full.
    pub dropped_queue_full: u64,
    /// Events not taken because the forwarder had shut down.
    pub dropped_closed: u64,
    /// Events Logflare accepted.
    pub sent: u64,
    /// Requests Logflare accepted.
    pub sent_batches: u64,
    /// Batches given up: retries exhausted or a non-retryable answer.
    pub failed_batches: u64,
    /// Events in the failed batches.
    pub failed_events: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Accepted events still queued or in flight when the shutdown deadline passed.
    pub abandoned: u64,
    /// Accepted events not yet sent, failed or abandoned.
    pub pending: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_closed: AtomicU64,
    pub sent: AtomicU64,
    pub sent_batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub failed_events: AtomicU64,
    pub retries: AtomicU64,
    pub abandoned: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    if n > 0 {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Counters {
    pub fn snapshot(&self) -> ForwardStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let accepted = read(&self.accepted);
        let sent = read(&self.sent);
        let failed_events = read(&self.failed_events);
        let abandoned = read(&self.abandoned);
        ForwardStats {
            accepted,
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_closed: read(&self.dropped_closed),
            sent,
            sent_batches: read(&self.sent_batches),
            failed_batches: read(&self.failed_batches),
            failed_events,
            retries: read(&self.retries),
            abandoned,
            pending: accepted
                .saturating_sub(sent)
                .saturating_sub(failed_events)
                .saturating_sub(abandoned),
        }
    }

    /// After the worker has stopped: what was accepted and never settled is abandoned.
    pub fn settle(&self) {
        let stats = self.snapshot();
        self.abandoned.fetch_add(stats.pending, Ordering::Relaxed);
    }
}
