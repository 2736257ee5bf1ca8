//! The background task: batches the queue and posts each batch, retrying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use d2_events::NewEvent;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use tokio::sync::{mpsc, oneshot};

use crate::entry;
use crate::stats::{Counters, add};

pub(crate) struct Worker {
    pub client: Client,
    pub endpoint: Url,
    pub api_key: HeaderValue,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub counters: Arc<Counters>,
}

/// What one attempt came to.
enum Attempt {
    Sent,
    /// Worth another try, after at least the server's `Retry-After` when it gave one.
    Retry {
        status: Option<StatusCode>,
        reason: String,
        retry_after: Option<Duration>,
    },
    GiveUp {
        status: Option<StatusCode>,
        reason: String,
    },
}

/// The whole cause chain of an error, without the URL (it names the source, and a URL
/// configured with credentials in it must not reach the logs either).
fn cause_chain(error: reqwest::Error) -> String {
    d2_kernel::ErrorChain(&error.without_url()).to_string()
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

impl Worker {
    /// Runs until `stop` fires (then drains the queue) or every sender is gone.
    pub async fn run(self, mut queue: mpsc::Receiver<NewEvent>, mut stop: oneshot::Receiver<()>) {
        let mut batch: Vec<NewEvent> = Vec::with_capacity(self.batch_size);
        // Dropping the `LogflareWorker` without `shutdown` disarms `stop`, not the task.
        let mut stop_armed = true;
        'run: loop {
            tokio::select! {
                biased;
                signal = &mut stop, if stop_armed => {
                    stop_armed = false;
                    if signal.is_ok() {
                        break 'run;
                    }
                    continue 'run;
                }
                received = queue.recv_many(&mut batch, self.batch_size) => {
                    if received == 0 {
                        return;
                    }
                }
            }
            let flush = tokio::time::sleep(self.flush_interval);
            tokio::pin!(flush);
            while batch.len() < self.batch_size {
                let room = self.batch_size.saturating_sub(batch.len());
                tokio::select! {
                    biased;
                    signal = &mut stop, if stop_armed => {
                        stop_armed = false;
                        if signal.is_ok() {
                            break 'run;
                        }
                    }
                    () = &mut flush => break,
                    received = queue.recv_many(&mut batch, room) => {
                        if received == 0 {
                            break;
                        }
                    }
                }
            }
            self.deliver(&batch).await;
            batch.clear();
        }
        // Shutting down: take nothing new, send what is queued.
        queue.close();
        loop {
            let room = self.batch_size.saturating_sub(batch.len());
            if room > 0 {
                queue.recv_many(&mut batch, room).await;
            }
            if batch.is_empty() {
                return;
            }
            self.deliver(&batch).await;
            batch.clear();
        }
    }

    /// Posts one batch, retrying transient failures; counts the outcome.
    async fn deliver(&self, batch: &[NewEvent]) {
        let body = match entry::body(batch) {
            Ok(body) => body,
            Err(error) => {
                self.failed(
                    batch.len(),
                    0,
                    None,
                    &format!("cannot encode the batch: {error}"),
                );
                return;
            }
        };
        let mut backoff = self.initial_backoff;
        let mut attempt = 1;
        loop {
            let (status, reason, retry_after) = match self.attempt(&body).await {
                Attempt::Sent => {
                    add(&self.counters.sent, batch.len());
                    add(&self.counters.sent_batches, 1);
                    tracing::debug!(
                        events = batch.len(),
                        attempts = attempt,
                        "logflare batch sent"
                    );
                    return;
                }
                Attempt::GiveUp { status, reason } => {
                    self.failed(batch.len(), attempt, status, &reason);
                    return;
                }
                Attempt::Retry {
                    status,
                    reason,
                    retry_after,
                } => (status, reason, retry_after),
            };
            if attempt >= self.max_attempts {
                self.failed(batch.len(), attempt, status, &reason);
                return;
            }
            let wait = retry_after
                .map_or(backoff, |after| after.max(backoff))
                .min(self.max_backoff);
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis(),
                error.cause = %reason,
                "logflare batch will be retried"
            );
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2).min(self.max_backoff);
            attempt += 1;
            add(&self.counters.retries, 1);
        }
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let started = Instant::now();
        let sent = self
            .client
            .post(self.endpoint.clone())
            .header("x-api-key", self.api_key.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_builder() => {
                return Attempt::GiveUp {
                    status: None,
                    reason: cause_chain(error),
                };
            }
            Err(error) => {
                return Attempt::Retry {
                    status: None,
                    reason: cause_chain(error),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(&response);
        // Read the (small) answer so the connection can be reused; its content is not logged.
        let _ = response.bytes().await;
        let reason = format!(
            "logflare answered {status} after {} ms",
            started.elapsed().as_millis()
        );
        if status.is_success() {
            Attempt::Sent
        } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry {
                status: Some(status),
                reason,
                retry_after,
            }
        } else {
            Attempt::GiveUp {
                status: Some(status),
                reason,
            }
        }
    }

    fn failed(&self, events: usize, attempts: u32, status: Option<StatusCode>, reason: &str) {
        add(&self.counters.failed_batches, 1);
        add(&self.counters.failed_events, events);
        tracing::warn!(
            events,
            attempts,
            http.status = status.map(|status| status.as_u16()),
            error.cause = %reason,
            "logflare batch dropped"
        );
    }
}
