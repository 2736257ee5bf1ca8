//! The names of the headers the API reads and writes beyond the standard ones, as
//! constants: a name given as text is parsed again on every use.

use actix_web::http::header::HeaderName;

pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const POLL_SECONDS: HeaderName = HeaderName::from_static("x-d2-poll-seconds");
pub const KEY_ID: HeaderName = HeaderName::from_static("x-d2-key-id");
pub const SIGNATURE: HeaderName = HeaderName::from_static("x-d2-signature");
pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-next-cursor");
pub const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// The agent runtime's credential header (the same tokens as `Authorization`).
pub const AGENT_TOKEN: HeaderName = HeaderName::from_static("x-agent-token");
/// The account a signed-in person acts in, on routes without one in the path.
pub const ORG_ID: HeaderName = HeaderName::from_static("x-org-id");
