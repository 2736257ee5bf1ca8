//! Logging for the binaries: JSON lines in production, readable lines in dev. The filter
//! comes from `log.filter`, or `RUST_LOG` when set.
//!
//! The JSON lines have the shape of `tracing-subscriber`'s JSON format with flattened
//! events and the current span (`docs/logging.md`; a test compares the two), written by
//! [`JsonLines`] at a fraction of its cost: the library's formatter collects every event's
//! fields into a map of `serde_json::Value`s and parses the span's fields back from text on
//! every line, which made the access log a third of the instructions of a cached
//! authenticated request. Here a span's fields are rendered once, as JSON, when the span
//! opens, and spliced into each line as they are; event fields are written straight into
//! the line.
//!
//! The request being served is not a `tracing` span but a [`RequestScope`] carried by the
//! request's task ([`in_request`]): a span costs every request its creation, an entry and
//! an exit at each poll and its closing (about 4,000 of the 57,000 instructions a cached 304
//! poll executed with it),
//! while the scope costs one task-local set per poll and is read only by the lines that
//! are written. Lines logged while serving a request name it under `span` exactly as the
//! span did (`request_id`, `method`, `path`, `"name":"request"`); a span opened inside the
//! request, when there is one, is named instead, as before.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::{self, BufWriter, Write as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. Call once, from a binary's `main`, and keep the guard
/// until the end: dropping it writes out what is still buffered (call
/// [`LogGuard::flush`] before `std::process::exit`, which drops nothing).
pub fn init(settings: &LogSettings) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let buffer =
        (settings.format == LogFormat::Json && settings.flush_interval_ms > 0).then(|| {
            Buffered::start(
                io::stdout(),
                Duration::from_millis(settings.flush_interval_ms),
            )
        });
    let installed = match (settings.format, &buffer) {
        (LogFormat::Json, Some(buffer)) => {
            let installed = json_subscriber(filter, buffer.clone()).try_init().is_ok();
            if installed {
                // The subscriber's writer: access lines join the same buffer, in order.
                let _ = ACCESS_SINK.set(AccessSink::Buffered(buffer.clone()));
            }
            installed
        }
        (LogFormat::Json, None) => {
            let installed = json_subscriber(filter, io::stdout).try_init().is_ok();
            if installed {
                let _ = ACCESS_SINK.set(AccessSink::Stdout);
            }
            installed
        }
        (LogFormat::Pretty, _) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_span_events(FmtSpan::NONE)
            .event_format(Readable(tracing_subscriber::fmt::format().compact()))
            .try_init()
            .is_ok(),
    };
    if !installed {
        tracing::debug!("a global subscriber was already installed");
    }
    LogGuard { buffer }
}

/// Writes out the buffered log lines when dropped.
#[derive(Debug)]
#[must_use = "keep the guard until the end, so what is buffered then is written out"]
pub struct LogGuard {
    buffer: Option<Buffered<io::Stdout>>,
}

impl LogGuard {
    pub fn flush(&self) {
        if let Some(buffer) = &self.buffer {
            buffer.flush();
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A writer (standard output) behind a 64 KiB buffer that a thread of its own flushes
/// every `log.flush_interval_ms`, and that a panic flushes too. Written line by line, the access
/// log cost each request a `write` system call, a third of the kernel time of a cached
/// 304 poll; gathered, it costs one call per interval or per 64 KiB (as nginx's
/// `access_log ... buffer= flush=`). What a `kill -9` can lose is the last interval's lines.
#[derive(Debug)]
pub struct Buffered<W: io::Write>(Arc<Mutex<BufWriter<W>>>);

impl<W: io::Write> Clone for Buffered<W> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<W: io::Write + Send + 'static> Buffered<W> {
    fn new(writer: W) -> Self {
        Self(Arc::new(Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            writer,
        ))))
    }

    fn start(writer: W, interval: Duration) -> Self {
        let buffer = Self::new(writer);
        let flusher = buffer.clone();
        let spawned = std::thread::Builder::new()
            .name("log-flush".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    flusher.flush();
                }
            });
        if spawned.is_err() {
            eprintln!("cannot start the log flusher; log lines are written when 64 KiB gather");
        }
        let on_panic = buffer.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            on_panic.flush();
        }));
        buffer
    }

    /// Appends a whole line, as the subscriber's writer does.
    fn write_line(&self, line: &[u8]) {
        let mut writer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Nothing to tell anyone if standard output is gone.
        let _ = writer.write_all(line);
    }

    fn flush(&self) {
        let mut writer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Nothing to tell anyone if standard output is gone.
        let _ = writer.flush();
    }
}

impl<'a, W: io::Write + 'a> MakeWriter<'a> for Buffered<W> {
    type Writer = <Mutex<BufWriter<W>> as MakeWriter<'a>>::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        // The formatter renders the whole line first: the lock is held for one copy.
        self.0.make_writer()
    }
}

/// The production subscriber writing JSON lines to `writer`: for `init`, and for test
/// harnesses that capture what the binaries would print.
pub fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> tracing_subscriber::FmtSubscriber<JsonFields, JsonLines, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .fmt_fields(JsonFields)
        .event_format(JsonLines)
        .with_writer(writer)
        .finish()
}

/// Renders fields as the members of a JSON object, without the braces:
/// `"message":"request completed","http.status":200`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonMembers::new(&mut writer, false);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let continues = !current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = JsonMembers::new(&mut writer, continues);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// One JSON line per event: `timestamp`, `level`, the event's fields, `target`, and the
/// current span's fields with its `name` under `span`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str(level_member(*meta.level()))?;
        let mut visitor = JsonMembers::new(&mut writer, true);
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_str(",")?;
            }
            writer.write_str("\"name\":")?;
            write_json_str(&mut writer, span.name())?;
            writer.write_str("}")?;
        } else {
            RequestScope::with_current(|request| request.write_as_span(&mut writer))
                .unwrap_or(Ok(()))?;
        }
        writer.write_str("}\n")
    }
}

/// The end of the timestamp and the level, as one piece of text.
fn level_member(level: tracing::Level) -> &'static str {
    if level == tracing::Level::INFO {
        "\",\"level\":\"INFO\""
    } else if level == tracing::Level::WARN {
        "\",\"level\":\"WARN\""
    } else if level == tracing::Level::ERROR {
        "\",\"level\":\"ERROR\""
    } else if level == tracing::Level::DEBUG {
        "\",\"level\":\"DEBUG\""
    } else {
        "\",\"level\":\"TRACE\""
    }
}

/// The request a task is serving, which every line logged while serving it names.
#[derive(Clone, Debug)]
pub struct RequestScope {
    /// The `X-Request-Id` accepted or generated.
    pub request_id: String,
    pub method: Cow<'static, str>,
    /// The path as logs may record it (secrets in paths replaced by their parameter).
    pub path: String,
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

impl RequestScope {
    /// Runs `f` with the request the current task is serving, if it serves one.
    pub fn with_current<R>(f: impl FnOnce(&Self) -> R) -> Option<R> {
        REQUEST.try_with(f).ok()
    }

    /// `,"span":{...}`: the request as a line names the span it is logged in.
    fn write_as_span(&self, writer: &mut impl fmt::Write) -> fmt::Result {
        writer.write_str(",\"span\":{\"request_id\":")?;
        write_json_str(writer, &self.request_id)?;
        writer.write_str(",\"method\":")?;
        write_json_str(writer, &self.method)?;
        writer.write_str(",\"path\":")?;
        write_json_str(writer, &self.path)?;
        writer.write_str(",\"name\":\"request\"}")
    }
}

/// The target of the access lines, as `log.filter` names them.
pub const ACCESS_TARGET: &str = "d2_api::observe";

/// Where [`request_completed`] writes its lines itself: the writer of the JSON log, when
/// [`init`] installed it.
static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

enum AccessSink {
    Buffered(Buffered<io::Stdout>),
    Stdout,
}

impl AccessSink {
    fn write_line(&self, line: &[u8]) {
        match self {
            Self::Buffered(buffer) => buffer.write_line(line),
            // Nothing to tell anyone if standard output is gone.
            Self::Stdout => drop(io::stdout().lock().write_all(line)),
        }
    }
}

/// The access line of a request, `request completed` at `info` with the route, the
/// status and the duration, as `tracing::info!` would log it in the request's scope.
///
/// With the JSON log of the binaries the line is written here, straight into its writer
/// (the buffer, in production): the text the subscriber's formatter makes (a unit test
/// compares them) at less than half its cost, without an event, a visitor over its fields
/// and a call through `dyn fmt::Write` per piece; every request writes this line, the
/// largest part of the logging a request costs. Otherwise, and when a span is open, it is
/// a `tracing` event.
pub fn request_completed(route: &str, status: u16, elapsed: Duration) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    match ACCESS_SINK.get() {
        Some(sink) if tracing::Span::current().is_none() => {
            thread_local! {
                static LINE: RefCell<String> = const { RefCell::new(String::new()) };
            }
            LINE.with_borrow_mut(|line| {
                line.clear();
                let now = std::time::SystemTime::now();
                if write_access_line(line, now, route, status, duration_ms).is_ok() {
                    sink.write_line(line.as_bytes());
                }
            });
        }
        _ => tracing::info!(
            target: ACCESS_TARGET,
            message = "request completed",
            http.route = route,
            http.status = status,
            duration_ms,
        ),
    }
}

/// The access line as [`JsonLines`] writes the event of [`request_completed`].
fn write_access_line(
    line: &mut String,
    now: std::time::SystemTime,
    route: &str,
    status: u16,
    duration_ms: f64,
) -> fmt::Result {
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, now)?;
    line.push_str(level_member(tracing::Level::INFO));
    line.push_str(",\"message\":\"request completed\",\"http.route\":");
    write_json_str(line, route)?;
    line.push_str(",\"http.status\":");
    line.push_str(itoa::Buffer::new().format(status));
    line.push_str(",\"duration_ms\":");
    let mut number = ryu::Buffer::new();
    line.push_str(if duration_ms.is_finite() {
        number.format_finite(duration_ms)
    } else {
        "null"
    });
    line.push_str(",\"target\":\"");
    line.push_str(ACCESS_TARGET);
    line.push('"');
    RequestScope::with_current(|request| request.write_as_span(line)).unwrap_or(Ok(()))?;
    line.push_str("}\n");
    Ok(())
}

/// Runs `work` as the serving of `request`: every line logged while it runs (and no
/// narrower span is open) names the request. The future is a named type, so a middleware
/// can return it without boxing it.
pub fn in_request<F: Future>(
    request: RequestScope,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<RequestScope, F> {
    REQUEST.scope(request, work)
}

/// The readable format of development, which names the request being served before the
/// event as the library names a span: `request{request_id=… method=GET path=/v1/…}: …`.
struct Readable<F>(F);

impl<S, N, F> FormatEvent<S, N> for Readable<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if ctx.lookup_current().is_none() {
            RequestScope::with_current(|r| {
                write!(
                    writer,
                    "request{{request_id={} method={} path={}}}: ",
                    r.request_id, r.method, r.path
                )
            })
            .unwrap_or(Ok(()))?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Writes each recorded field as a JSON member, separated by commas.
struct JsonMembers<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// Whether a member was written before (so the next one needs a comma).
    continues: bool,
    result: fmt::Result,
}

impl<'a, 'w> JsonMembers<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>, continues: bool) -> Self {
        Self {
            writer,
            continues,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        // Three writes per member, not five: every line has a few, and each is a call
        // through `dyn fmt::Write`.
        self.result = (|| {
            self.writer
                .write_str(if self.continues { ",\"" } else { "\"" })?;
            JsonStringContents(&mut *self.writer).write_str(name)?;
            self.writer.write_str("\":")?;
            value(self.writer)
        })();
        self.continues = true;
    }
}

impl Visit for JsonMembers<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        if value.is_finite() {
            self.member(field, |w| {
                w.write_str(ryu::Buffer::new().format_finite(value))
            });
        } else {
            self.member(field, |w| w.write_str("null"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_json_str(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Escaped piece by piece as it is formatted: the message of every line comes here,
        // and this way it is never copied into a string of its own.
        self.member(field, |w| {
            w.write_str("\"")?;
            write!(JsonStringContents(&mut *w), "{value:?}")?;
            w.write_str("\"")
        });
    }
}

/// Writes `text` as a JSON string.
fn write_json_str(writer: &mut impl fmt::Write, text: &str) -> fmt::Result {
    writer.write_str("\"")?;
    JsonStringContents(&mut *writer).write_str(text)?;
    writer.write_str("\"")
}

/// Whether JSON must escape something in `text`: a quote, a backslash or a control
/// character. Every byte is looked at, with no early exit, so the loop is vectorised.
fn needs_escape(text: &str) -> bool {
    text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Writes what it is given as the inside of a JSON string: text with nothing to escape as
/// it is, which is what `serde_json` would write; other text escaped by `serde_json`.
struct JsonStringContents<W: fmt::Write>(W);

impl<W: fmt::Write> fmt::Write for JsonStringContents<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !needs_escape(text) {
            return self.0.write_str(text);
        }
        let quoted = serde_json::to_string(text).map_err(|_| fmt::Error)?;
        let contents = quoted
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .ok_or(fmt::Error)?;
        self.0.write_str(contents)
    }
}

/// Writes `time` as `tracing-subscriber` does, RFC 3339 in UTC with microseconds
/// (`2026-12-01T10:34:39.123456Z`). The date and time up to the second are formatted once
/// a second per thread and reused.
fn write_timestamp(writer: &mut impl fmt::Write, time: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            let at = i64::try_from(seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            text.clear();
            write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"))?;
            *cached = seconds;
        }
        writer.write_str(text)
    })?;
    // Six digits, zero-padded: a million plus the microseconds, without its leading 1.
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(1_000_000_u32.saturating_add(since_epoch.subsec_micros()));
    writer.write_str(".")?;
    writer.write_str(micros.get(1..).unwrap_or("000000"))?;
    writer.write_str("Z")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn parse(lines: &Lines) -> Vec<serde_json::Value> {
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    fn logged(body: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let subscriber = json_subscriber(EnvFilter::new("trace"), lines.clone());
        tracing::subscriber::with_default(subscriber, body);
        parse(&lines)
    }

    fn emit_request_lines() {
        let span =
            tracing::info_span!("request", request_id = "r-1", method = %"GET", path = "/a\"b");
        let _entered = span.enter();
        tracing::debug!(token.id = %"t-1", "token verified");
        tracing::info!(
            http.route = "/v1/x",
            http.status = 304_u16,
            duration_ms = 0.25,
            "request completed"
        );
    }

    /// The lines are those of `tracing-subscriber`'s own JSON format (flattened events, the
    /// current span), so what reads the logs sees no change.
    #[test]
    fn lines_match_the_library_json_format() {
        let ours = logged(emit_request_lines);
        let lines = Lines::default();
        let library = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(library, emit_request_lines);
        let theirs = parse(&lines);
        let without_time = |mut line: serde_json::Value| {
            line.as_object_mut().unwrap().remove("timestamp").unwrap();
            line
        };
        assert_eq!(ours.len(), 2);
        assert_eq!(
            ours.into_iter().map(without_time).collect::<Vec<_>>(),
            theirs.into_iter().map(without_time).collect::<Vec<_>>()
        );
    }

    /// A line logged while a request is served names the request as the library names a
    /// `request` span with the same fields; a span opened inside the request wins, as the
    /// current span always did.
    #[test]
    fn lines_inside_a_request_scope_name_it_as_a_span_would() {
        let scope = RequestScope {
            request_id: "r-1".to_owned(),
            method: Cow::Borrowed("GET"),
            path: "/a\"b".to_owned(),
        };
        let ours = Lines::default();
        let subscriber = json_subscriber(EnvFilter::new("trace"), ours.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(tracing::instrument::WithSubscriber::with_subscriber(
            in_request(scope, async {
                tracing::debug!(token.id = %"t-1", "token verified");
                tracing::info!(
                    http.route = "/v1/x",
                    http.status = 304_u16,
                    duration_ms = 0.25,
                    "request completed"
                );
                let _job = tracing::info_span!("job", job = "export").entered();
                tracing::info!("inside");
            }),
            subscriber,
        ));
        let ours = parse(&ours);
        let theirs = logged(emit_request_lines);
        let without_time = |mut line: serde_json::Value| {
            line.as_object_mut().unwrap().remove("timestamp").unwrap();
            line
        };
        assert_eq!(ours.len(), 3);
        assert_eq!(
            ours[..2]
                .iter()
                .cloned()
                .map(without_time)
                .collect::<Vec<_>>(),
            theirs.into_iter().map(without_time).collect::<Vec<_>>()
        );
        assert_eq!(ours[2]["span"]["name"], "job");
        assert!(ours[2]["span"].get("request_id").is_none());
        assert!(
            RequestScope::with_current(|_| ()).is_none(),
            "outside the request"
        );
    }

    /// The access line written straight into the buffer is, but for its timestamp, the
    /// very text the subscriber writes for the event `request_completed` logs otherwise.
    #[test]
    fn the_access_line_written_directly_is_the_one_the_subscriber_writes() {
        let route = "/v1/{x}/\"quoted\"";
        let elapsed = Duration::from_micros(1_250);
        let lines = Lines::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let scope = RequestScope {
            request_id: "r-1".to_owned(),
            method: Cow::Borrowed("GET"),
            path: "/a\"b".to_owned(),
        };
        let direct = runtime.block_on(tracing::instrument::WithSubscriber::with_subscriber(
            in_request(scope, async {
                // No sink was registered by `init` here: this is the `tracing` event.
                request_completed(route, 304, elapsed);
                let mut line = String::new();
                let duration_ms = elapsed.as_secs_f64() * 1000.0;
                write_access_line(
                    &mut line,
                    std::time::SystemTime::now(),
                    route,
                    304,
                    duration_ms,
                )
                .unwrap();
                line
            }),
            json_subscriber(EnvFilter::new("info"), lines.clone()),
        ));
        let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let without_timestamp = |line: &str| {
            let (_, rest) = line.split_once("\",\"level\"").unwrap();
            rest.to_owned()
        };
        assert_eq!(without_timestamp(&direct), without_timestamp(&logged));
        let line: serde_json::Value = serde_json::from_str(&direct).unwrap();
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["http.route"], route);
        assert_eq!(line["duration_ms"], 1.25);
        assert_eq!(line["target"], "d2_api::observe");
        assert_eq!(line["span"]["path"], "/a\"b");
        assert!(direct.ends_with("}\n"));
    }

    #[test]
    fn a_line_is_json_with_the_event_and_the_current_span() {
        let lines = logged(|| {
            let span =
                tracing::info_span!("request", request_id = "r-1", method = %"GET", path = "/a\"b");
            let _entered = span.enter();
            tracing::info!(
                http.route = "/v1/x",
                http.status = 304_u16,
                duration_ms = 1.5,
                ok = true,
                delta = -3,
                detail = ?Some("x"),
                "request completed"
            );
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["http.route"], "/v1/x");
        assert_eq!(line["http.status"], 304);
        assert_eq!(line["duration_ms"], 1.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["detail"], "Some(\"x\")");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["span"]["request_id"], "r-1");
        assert_eq!(line["span"]["method"], "GET");
        assert_eq!(line["span"]["path"], "/a\"b");
        assert_eq!(line["span"]["name"], "request");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn text_is_escaped_and_numbers_that_json_cannot_hold_are_null() {
        let lines = logged(|| {
            tracing::warn!(
                text = "line\nbreak \u{1} \"quoted\" ünï",
                ratio = f64::NAN,
                "odd {}",
                "input"
            );
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["text"], "line\nbreak \u{1} \"quoted\" ünï");
        assert_eq!(line["ratio"], serde_json::Value::Null);
        assert_eq!(line["message"], "odd input");
        assert!(line.get("span").is_none());
    }

    #[test]
    fn plain_text_is_written_as_serde_json_writes_it() {
        for text in [
            "",
            "plain",
            "ünïcödé ✓",
            "/v1/{id}",
            "a\"b",
            "back\\slash",
            "tab\tnul\u{0}",
            "\u{7f}\u{1f}",
        ] {
            let mut ours = String::new();
            write_json_str(&mut ours, text).unwrap();
            assert_eq!(ours, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn buffered_lines_are_written_out_when_flushed() {
        let lines = Lines::default();
        let buffer = Buffered::new(lines.clone());
        let subscriber = json_subscriber(EnvFilter::new("info"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || tracing::info!(n = 1, "first"));
        assert!(lines.0.lock().unwrap().is_empty(), "written before a flush");
        buffer.flush();
        tracing::subscriber::with_default(
            json_subscriber(EnvFilter::new("info"), buffer.clone()),
            || tracing::info!(n = 2, "second"),
        );
        buffer.flush();
        let written = parse(&lines);
        assert_eq!(written.len(), 2);
        assert_eq!(written[0]["message"], "first");
        assert_eq!(written[1]["n"], 2);
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_as_the_library_writes_them() {
        use std::time::{Duration, UNIX_EPOCH};
        // Twice in the same second (the cached prefix), then in the next one.
        for offset in [
            Duration::new(1_796_121_279, 5_000),
            Duration::new(1_796_121_279, 999_999_000),
            Duration::new(1_796_121_280, 0),
            Duration::new(0, 1_000),
        ] {
            let time = UNIX_EPOCH + offset;
            let mut ours = String::new();
            write_timestamp(&mut ours, time).unwrap();
            let expected = chrono::DateTime::<chrono::Utc>::from(time)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(ours, expected);
        }
    }

    #[test]
    fn fields_recorded_later_join_the_span() {
        let lines = logged(|| {
            let span = tracing::info_span!("job", job = "export", events = tracing::field::Empty);
            span.record("events", 42);
            let _entered = span.enter();
            tracing::info!("done");
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["span"]["name"], "job");
        assert_eq!(line["span"]["job"], "export");
        assert_eq!(line["span"]["events"], 42);
    }
}
