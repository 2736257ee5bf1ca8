//! The metrics queries in PostgreSQL's SQL. Each reads one account's window through
//! `events_identity`: `$1` the account, `[$2, $3)` the window of `occurred_at`.

pub(crate) const SUMMARY: &str = "\
    SELECT count(*) FILTER (WHERE decision = 1) AS allowed, \
           count(*) FILTER (WHERE decision = 0) AS denied, \
           count(DISTINCT tool) FILTER (WHERE decision IS NOT NULL) AS unique_tools, \
           avg(latency_ms) FILTER (WHERE decision IS NOT NULL) AS avg_decision_ms, \
           avg(extract(epoch FROM ingested_at - occurred_at) * 1000)::float8 \
               AS avg_ingest_lag_ms \
    FROM events WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3";

/// `$4`: the bucket's width in seconds; buckets start at multiples of it since the epoch.
pub(crate) const TIMESERIES: &str = "\
    SELECT date_bin($4 * interval '1 second', occurred_at, timestamptz 'epoch') AS ts, \
           count(*) FILTER (WHERE decision = 1) AS allowed, \
           count(*) FILTER (WHERE decision = 0) AS denied \
    FROM events WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
        AND decision IS NOT NULL \
    GROUP BY 1 ORDER BY 1";

// `$4`: how many keys. The window total is computed before LIMIT, so it covers every key.
// Keys tie-break in byte order (COLLATE "C"), the same on every store.
pub(crate) const TOP_TOOLS: &str = "\
    SELECT tool AS key, count(*) AS count, (sum(count(*)) OVER ())::bigint AS total \
    FROM events WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
        AND decision IS NOT NULL AND tool IS NOT NULL \
    GROUP BY tool ORDER BY count DESC, tool COLLATE \"C\" LIMIT $4";

pub(crate) const TOP_EVENT_TYPES: &str = "\
    SELECT event_type AS key, count(*) AS count, (sum(count(*)) OVER ())::bigint AS total \
    FROM events WHERE account_id = $1 AND occurred_at >= $2 AND occurred_at < $3 \
    GROUP BY event_type ORDER BY count DESC, event_type COLLATE \"C\" LIMIT $4";
