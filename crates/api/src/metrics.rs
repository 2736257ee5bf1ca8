//! Prometheus metrics of the API process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use actix_web::http::Method;
use d2_app::App;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use thread_local::ThreadLocal;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Each thread's requests since the last scrape, which adds them to `requests` and
    /// `latency`.
    tallies: ThreadLocal<Mutex<Tally>>,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    db_connections: IntGauge,
    db_idle: IntGauge,
    events_stored: IntCounter,
    events_duplicate: IntCounter,
    forwarded: IntCounterVec,
    forward_retries: IntCounter,
    forward_pending: IntGauge,
    readiness_checks: IntCounter,
    /// With `redis.url` only.
    redis: Option<RedisMetrics>,
    /// Serialises scrapes, so the cache counters are advanced once per change.
    scrape: Mutex<()>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and unique, so registration cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    pub fn new(with_redis: bool) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "d2_http_requests_total",
                    "HTTP requests by route pattern, method and status.",
                ),
                &["method", "route", "status"],
            )?,
        );
        let latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "d2_http_request_duration_seconds",
                    "HTTP request latency by route pattern.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["method", "route"],
            )?,
        );
        let cache_hits = register(
            &registry,
            IntCounter::new(
                "d2_token_cache_hits_total",
                "Token verifications answered from the cache.",
            )?,
        );
        let cache_misses = register(
            &registry,
            IntCounter::new(
                "d2_token_cache_misses_total",
                "Token verifications that read the store.",
            )?,
        );
        let cache_entries = register(
            &registry,
            IntGauge::new("d2_token_cache_entries", "Entries in the token cache.")?,
        );
        let db_connections = register(
            &registry,
            IntGauge::new("d2_db_pool_connections", "Open database connections.")?,
        );
        let db_idle = register(
            &registry,
            IntGauge::new("d2_db_pool_idle_connections", "Idle database connections.")?,
        );
        let events_stored = register(
            &registry,
            IntCounter::new(
                "d2_events_stored_total",
                "Telemetry events durably stored by ingest.",
            )?,
        );
        let events_duplicate = register(
            &registry,
            IntCounter::new(
                "d2_events_duplicate_total",
                "Telemetry events received again (retried batches) and not stored twice.",
            )?,
        );
        let forwarded = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "d2_logflare_events_total",
                    "Events handed to the Logflare forwarder, by outcome: accepted into the queue, sent, failed (given up after retries), dropped_queue_full, dropped_closed, abandoned (at shutdown). Dropped events are only missing from Logflare, never from storage.",
                ),
                &["outcome"],
            )?,
        );
        let forward_retries = register(
            &registry,
            IntCounter::new(
                "d2_logflare_retries_total",
                "Logflare requests retried after a network error, 429 or 5xx.",
            )?,
        );
        let forward_pending = register(
            &registry,
            IntGauge::new(
                "d2_logflare_pending_events",
                "Events queued for Logflare and not yet sent.",
            )?,
        );
        let redis = with_redis
            .then(|| RedisMetrics::new(&registry))
            .transpose()?;
        let readiness_checks = register(
            &registry,
            IntCounter::new(
                "d2_readiness_checks_total",
                "Store pings made to answer /readyz (at most one per second, however many probes arrive).",
            )?,
        );
        Ok(Self {
            registry,
            redis,
            readiness_checks,
            forwarded,
            forward_retries,
            forward_pending,
            events_stored,
            events_duplicate,
            requests,
            latency,
            tallies: ThreadLocal::new(),
            cache_hits,
            cache_misses,
            cache_entries,
            db_connections,
            db_idle,
            scrape: Mutex::new(()),
        })
    }

    /// Counts one request. `route` must be a matched route pattern or
    /// [`crate::observe::UNMATCHED`], never the request path.
    ///
    /// The request is counted in the calling thread's [`Tally`], which no other thread
    /// touches between scrapes: a request costs no atomic operation on memory the other
    /// workers write (the shared counters and histogram buckets, the label vectors' lock),
    /// which on a cached poll cost more than the instructions suggest, every core taking
    /// the same cache lines from the others.
    pub fn observe(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let status = status_label(status);
        let mut tally = self
            .tallies
            .get_or_default()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seconds = elapsed.as_secs_f64();
        let counted = tally.by_route.get(route).and_then(|all| {
            all.iter()
                .find(|c| c.method == method && c.status == status)
        });
        if let Some(counted) = counted {
            counted.record(seconds);
        } else {
            let counted = Counted {
                method,
                status,
                requests: self
                    .requests
                    .with_label_values(&[method, route, status])
                    .local(),
                latency: self.latency.with_label_values(&[method, route]).local(),
            };
            counted.record(seconds);
            tally
                .by_route
                .entry(route.to_owned())
                .or_default()
                .push(counted);
        }
    }

    /// Adds every thread's tally to the shared metrics.
    fn gather_tallies(&self) {
        for tally in self.tallies.iter() {
            let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            for counted in tally.by_route.values().flatten() {
                counted.requests.flush();
                counted.latency.flush();
            }
        }
    }

    pub fn readiness_checked(&self) {
        self.readiness_checks.inc();
    }

    pub fn events_ingested(&self, stored: usize, duplicates: usize) {
        self.events_stored
            .inc_by(u64::try_from(stored).unwrap_or(u64::MAX));
        self.events_duplicate
            .inc_by(u64::try_from(duplicates).unwrap_or(u64::MAX));
    }

    /// The text exposition of every metric, current as of now.
    pub fn render(&self, app: &App) -> String {
        let _guard = self.scrape.lock();
        self.gather_tallies();
        let stats = app.verifier.stats();
        advance(&self.cache_hits, stats.hits);
        advance(&self.cache_misses, stats.misses);
        self.cache_entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        if let Some(logflare) = &app.logflare {
            let stats = logflare.stats();
            for (outcome, total) in [
                ("accepted", stats.accepted),
                ("sent", stats.sent),
                ("failed", stats.failed_events),
                ("dropped_queue_full", stats.dropped_queue_full),
                ("dropped_closed", stats.dropped_closed),
                ("abandoned", stats.abandoned),
            ] {
                advance(&self.forwarded.with_label_values(&[outcome]), total);
            }
            advance(&self.forward_retries, stats.retries);
            self.forward_pending
                .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
        }
        if let (Some(metrics), Some(redis)) = (&self.redis, &app.redis) {
            let stats = redis.stats();
            metrics.available.set(i64::from(stats.redis_available));
            advance(&metrics.local_decisions, stats.local_decisions);
            advance(&metrics.outages, stats.outages);
        }
        let (open, idle) = app.store.pool_state();
        self.db_connections.set(i64::from(open));
        self.db_idle.set(i64::from(idle));
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// One thread's requests since the last scrape, by route, method and status.
#[derive(Debug, Default)]
struct Tally {
    by_route: HashMap<String, Vec<Counted>, foldhash::fast::RandomState>,
}

/// The requests of one route, method and status.
#[derive(Debug)]
struct Counted {
    method: &'static str,
    status: &'static str,
    requests: LocalIntCounter,
    latency: LocalHistogram,
}

impl Counted {
    fn record(&self, seconds: f64) {
        self.requests.inc();
        self.latency.observe(seconds);
    }
}

/// The state of the Redis that shares account quotas.
#[derive(Debug)]
struct RedisMetrics {
    available: IntGauge,
    local_decisions: IntCounter,
    outages: IntCounter,
}

impl RedisMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            available: register(
                registry,
                IntGauge::new(
                    "d2_redis_available",
                    "1 while account quotas are shared through Redis, 0 while this replica counts them alone (Redis unreachable).",
                )?,
            ),
            local_decisions: register(
                registry,
                IntCounter::new(
                    "d2_quota_local_decisions_total",
                    "Account quota decisions this replica made alone because Redis was unreachable.",
                )?,
            ),
            outages: register(
                registry,
                IntCounter::new(
                    "d2_redis_outages_total",
                    "Times this replica lost Redis and fell back to local quotas.",
                )?,
            ),
        })
    }
}

/// Moves a counter up to a monotonic total kept elsewhere.
fn advance(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// The method label of a request: one of a fixed set, so that no caller can add series
/// to the metrics by sending made-up methods (HTTP allows any token as a method).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        409 => "409",
        410 => "410",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_threads_requests_reach_the_shared_metrics_at_a_scrape() {
        let metrics = Metrics::new(false).unwrap();
        std::thread::scope(|threads| {
            for _ in 0..4 {
                threads.spawn(|| {
                    for status in [200, 200, 304, 999] {
                        metrics.observe(
                            &Method::GET,
                            "/v1/policy/bundle",
                            status,
                            Duration::from_millis(2),
                        );
                    }
                });
            }
        });
        let count = |status| {
            metrics
                .requests
                .with_label_values(&["GET", "/v1/policy/bundle", status])
                .get()
        };
        assert_eq!(count("200"), 0, "counted before the scrape");
        metrics.gather_tallies();
        assert_eq!((count("200"), count("304"), count("5xx")), (8, 4, 4));
        let latency = metrics
            .latency
            .with_label_values(&["GET", "/v1/policy/bundle"]);
        assert_eq!(latency.get_sample_count(), 16);
        // A second scrape adds nothing more.
        metrics.gather_tallies();
        assert_eq!(count("200"), 8);
        assert_eq!(latency.get_sample_count(), 16);
    }
}
