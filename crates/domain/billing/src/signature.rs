//! The payment provider's webhook signatures (Stripe's scheme): the `Stripe-Signature`
//! header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>">[,v1=...]`, made
//! with the endpoint's signing secret. Several secrets are accepted at once, so a secret
//! is rotated without losing an event; a timestamp outside the tolerance is refused either
//! way, which with the event ids kept (each processed once) refuses replays.

use chrono::{DateTime, Utc};
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

/// The longest header read (a few signatures; a real one is about 150 bytes).
const MAX_HEADER_BYTES: usize = 1024;

/// Why a webhook's signature was refused. None says which secret came close or what the
/// expected signature was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is not t=<seconds>,v1=<signature>")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance of {tolerance_seconds} s")]
    OutsideTolerance { tolerance_seconds: u64 },
    #[error("no signature of the payload matches a configured secret")]
    Mismatch,
}

/// The signing secrets of the webhook endpoint and the tolerance of its timestamps.
pub struct WebhookSecrets {
    keys: Vec<hmac::Key>,
    tolerance_seconds: u64,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("secrets", &self.keys.len())
            .field("tolerance_seconds", &self.tolerance_seconds)
            .finish()
    }
}

impl WebhookSecrets {
    pub fn new(secrets: &[SecretString], tolerance_seconds: u64) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes()))
                .collect(),
            tolerance_seconds,
        }
    }

    /// Whether any secret is configured (without one, webhooks are not received).
    pub fn is_configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks `header` against `payload` at `now`; answers the signed time.
    pub fn verify(
        &self,
        header: Option<&str>,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        if header.len() > MAX_HEADER_BYTES {
            return Err(SignatureError::Malformed);
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match name {
                "t" => {
                    timestamp = Some(
                        value
                            .parse::<i64>()
                            .map_err(|_| SignatureError::Malformed)?,
                    );
                }
                // Stripe's scheme v1; other schemes (v0, test-mode) are not trusted.
                "v1" => signatures.push(
                    data_encoding::HEXLOWER_PERMISSIVE
                        .decode(value.as_bytes())
                        .map_err(|_| SignatureError::Malformed)?,
                ),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        let signed_at =
            DateTime::<Utc>::from_timestamp(timestamp, 0).ok_or(SignatureError::Malformed)?;
        // Whole seconds on both sides, as the header carries them.
        let drift = now.timestamp().abs_diff(timestamp);
        if drift > self.tolerance_seconds {
            return Err(SignatureError::OutsideTolerance {
                tolerance_seconds: self.tolerance_seconds,
            });
        }
        let mut signed = Vec::with_capacity(payload.len().saturating_add(24));
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(payload);
        // `hmac::verify` compares in constant time.
        let matches = self.keys.iter().any(|key| {
            signatures
                .iter()
                .any(|signature| hmac::verify(key, &signed, signature).is_ok())
        });
        if matches {
            Ok(signed_at)
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The header a sender with `secret` puts on `payload` at `at` (tests and tools that
/// replay events).
pub fn sign(secret: &str, payload: &[u8], at: DateTime<Utc>) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{}.", at.timestamp()).into_bytes();
    signed.extend_from_slice(payload);
    let tag = hmac::sign(&key, &signed);
    format!(
        "t={},v1={}",
        at.timestamp(),
        data_encoding::HEXLOWER.encode(tag.as_ref())
    )
}
