use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use d2_events::{EventForwarder, NewEvent};
use reqwest::Url;
use reqwest::header::{HeaderValue, InvalidHeaderValue};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber as _;

use crate::settings::LogflareSettings;
use crate::stats::{Counters, ForwardStats, add};
use crate::worker::Worker;

type UrlError = <Url as std::str::FromStr>::Err;

/// Why the forwarder could not start. Never contains the API key.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A setting out of range; names the setting.
    InvalidSetting {
        name: &'static str,
        reason: &'static str,
    },
    /// `url` is not an absolute http(s) URL.
    InvalidUrl(UrlError),
    /// The API key cannot be sent as a header value (the value is not shown).
    InvalidApiKey(InvalidHeaderValue),
    /// The HTTP client could not be built.
    Client(reqwest::Error),
    /// `start` was called outside a tokio runtime.
    NoRuntime(tokio::runtime::TryCurrentError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidSetting { name, reason } => {
                write!(f, "invalid Logflare setting `{name}`: {reason}")
            }
            StartError::InvalidUrl(_) => f.write_str("invalid Logflare setting `url`"),
            StartError::InvalidApiKey(_) => {
                f.write_str("invalid Logflare setting `api_key`: not a valid header value")
            }
            StartError::Client(_) => f.write_str("cannot build the Logflare HTTP client"),
            StartError::NoRuntime(_) => {
                f.write_str("the Logflare forwarder must start inside a tokio runtime")
            }
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::InvalidSetting { .. } => None,
            StartError::InvalidUrl(error) => Some(error),
            StartError::InvalidApiKey(error) => Some(error),
            StartError::Client(error) => Some(error),
            StartError::NoRuntime(error) => Some(error),
        }
    }
}

/// The [`EventForwarder`] to Logflare: queues events for the background worker and returns
/// at once. Cheap to clone (all clones share one queue and one set of counters).
#[derive(Clone, Debug)]
pub struct LogflareForwarder {
    sender: mpsc::Sender<NewEvent>,
    counters: Arc<Counters>,
    /// Set while the queue is full, so the drop is logged once per episode.
    dropping: Arc<AtomicBool>,
}

/// The background task that sends the queued events. Stop it with
/// [`shutdown`](Self::shutdown); dropping it leaves the task running until every
/// [`LogflareForwarder`] is dropped.
#[derive(Debug)]
#[must_use = "call `shutdown` to flush the queued events"]
pub struct LogflareWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

fn check(ok: bool, name: &'static str, reason: &'static str) -> Result<(), StartError> {
    if ok {
        Ok(())
    } else {
        Err(StartError::InvalidSetting { name, reason })
    }
}

/// `{url}/api/logs?source={source}`.
fn endpoint(settings: &LogflareSettings) -> Result<Url, StartError> {
    let mut url: Url = format!("{}/api/logs", settings.url.trim_end_matches('/'))
        .parse()
        .map_err(StartError::InvalidUrl)?;
    check(
        matches!(url.scheme(), "http" | "https"),
        "url",
        "must be an http or https URL",
    )?;
    url.query_pairs_mut()
        .append_pair("source", &settings.source);
    Ok(url)
}

impl LogflareForwarder {
    /// Validates the settings, builds the HTTP client and spawns the worker on the current
    /// tokio runtime.
    pub fn start(settings: LogflareSettings) -> Result<(Self, LogflareWorker), StartError> {
        check(!settings.source.is_empty(), "source", "must not be empty")?;
        check(!settings.api_key.is_empty(), "api_key", "must not be empty")?;
        check(
            settings.queue_capacity > 0,
            "queue_capacity",
            "must be at least 1",
        )?;
        check(settings.batch_size > 0, "batch_size", "must be at least 1")?;
        check(
            settings.max_attempts > 0,
            "max_attempts",
            "must be at least 1",
        )?;
        check(!settings.timeout.is_zero(), "timeout", "must be positive")?;
        check(
            !settings.flush_interval.is_zero(),
            "flush_interval",
            "must be positive",
        )?;
        let endpoint = endpoint(&settings)?;
        let mut api_key =
            HeaderValue::from_str(&settings.api_key).map_err(StartError::InvalidApiKey)?;
        api_key.set_sensitive(true);
        let runtime = tokio::runtime::Handle::try_current().map_err(StartError::NoRuntime)?;

        // reqwest is built without a crypto provider: install ring (a no-op when one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(StartError::Client)?;

        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::channel(settings.queue_capacity);
        let (stop, stopped) = oneshot::channel();
        let worker = Worker {
            client,
            endpoint,
            api_key,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
            max_attempts: settings.max_attempts,
            initial_backoff: settings.initial_backoff,
            max_backoff: settings.max_backoff.max(settings.initial_backoff),
            counters: Arc::clone(&counters),
        };
        // The task logs through the caller's subscriber, wherever it runs.
        let task = runtime.spawn(worker.run(receiver, stopped).with_current_subscriber());
        Ok((
            Self {
                sender,
                counters: Arc::clone(&counters),
                dropping: Arc::new(AtomicBool::new(false)),
            },
            LogflareWorker {
                stop,
                task,
                counters,
            },
        ))
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> ForwardStats {
        self.counters.snapshot()
    }
}

impl EventForwarder for LogflareForwarder {
    /// Takes as many events as the queue has room for and drops (and counts) the rest.
    /// Never waits.
    fn forward(&self, events: &[NewEvent]) {
        let mut accepted = 0;
        let mut full = 0;
        let mut closed = 0;
        for (index, event) in events.iter().enumerate() {
            match self.sender.try_reserve() {
                Ok(permit) => {
                    permit.send(event.clone());
                    accepted += 1;
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    full = events.len().saturating_sub(index);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(())) => {
                    closed = events.len().saturating_sub(index);
                    break;
                }
            }
        }
        add(&self.counters.accepted, accepted);
        add(&self.counters.dropped_queue_full, full);
        add(&self.counters.dropped_closed, closed);
        if full > 0 {
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    events.dropped = full,
                    "logflare queue full, dropping forwarded events"
                );
            }
        } else if accepted > 0 && self.dropping.swap(false, Ordering::Relaxed) {
            tracing::info!("logflare queue accepting events again");
        }
    }
}

impl LogflareWorker {
    /// The counters, for `/metrics`.
    pub fn stats(&self) -> ForwardStats {
        self.counters.snapshot()
    }

    /// Stops taking events, sends what is queued, and waits for that at most `deadline`;
    /// whatever is still unsent then is counted as `abandoned`. Returns the final counters.
    pub async fn shutdown(self, deadline: Duration) -> ForwardStats {
        let LogflareWorker {
            stop,
            mut task,
            counters,
        } = self;
        let _ = stop.send(());
        match tokio::time::timeout(deadline, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(error.cause = %error, "logflare forwarder task failed");
            }
            Err(_) => {
                task.abort();
                let _ = task.await;
            }
        }
        counters.settle();
        let stats = counters.snapshot();
        if stats.abandoned > 0 {
            tracing::warn!(
                events.abandoned = stats.abandoned,
                deadline_ms = deadline.as_millis(),
                "logflare forwarder stopped before sending every queued event"
            );
        }
        stats
    }
}
