//! The metrics queries in SQLite's SQL. Each reads one account's window through
//! `events_identity`: `?1` the account, `[?2, ?3)` the window of `occurred_at`. Times are
//! UTC text, which SQLite's date functions read (`unixepoch(t, 'subsec')`: seconds, to the
//! millisecond).

pub(crate) const SUMMARY: &str = "\
    SELECT count(*) FILTER (WHERE decision = 1) AS allowed, \
           count(*) FILTER (WHERE decision = 0) AS denied, \
           count(DISTINCT tool) FILTER (WHERE decision IS NOT NULL) AS unique_tools, \
           avg(latency_ms) FILTER (WHERE decision IS NOT NULL) AS avg_decision_ms, \
           avg(unixepoch(ingested_at, 'subsec') - unixepoch(occurred_at, 'subsec')) * 1000.0 \
               AS avg_ingest_lag_ms \
    FROM events WHERE account_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3";

/// `?4`: the bucket's width in seconds; buckets start at multiples of it since the epoch.
pub(crate) const TIMESERIES: &str = "\
    SELECT strftime('%Y-%m-%d %H:%M:%S+00:00', unixepoch(occurred_at) / ?4 * ?4, 'unixepoch') \
               AS ts, \
           count(*) FILTER (WHERE decision = 1) AS allowed, \
           count(*) FILTER (WHERE decision = 0) AS denied \
    FROM events WHERE account_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3 \
        AND decision IS NOT NULL \
    GROUP BY 1 ORDER BY 1";

// `?4`: how many keys. The window total is computed before LIMIT, so it covers every key.
// Keys tie-break in byte order (BINARY), the same on every store.
pub(crate) const TOP_TOOLS: &str = "\
    SELECT tool AS key, count(*) AS count, sum(count(*)) OVER () AS total \
    FROM events WHERE account_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3 \
        AND decision IS NOT NULL AND tool IS NOT NULL \
    GROUP BY tool ORDER BY count DESC, tool COLLATE BINARY LIMIT ?4";

pub(crate) const TOP_EVENT_TYPES: &str = "\
    SELECT event_type AS key, count(*) AS count, sum(count(*)) OVER () AS total \
    FROM events WHERE account_id = ?1 AND occurred_at >= ?2 AND occurred_at < ?3 \
    GROUP BY event_type ORDER BY count DESC, event_type COLLATE BINARY LIMIT ?4";
