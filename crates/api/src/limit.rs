//! The per-IP limit on unauthenticated requests and failed authentications. Authenticated
//! traffic is never limited per IP (many SDKs share one NAT address); capabilities that
//! need it limit per token and plan instead.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use d2_kernel::limit::{KeyedLimiter, Rate};

use crate::error::ApiError;

#[derive(Debug)]
pub struct IpLimiter {
    buckets: KeyedLimiter<IpAddr>,
    rate: Rate,
    trust_forwarded_for: bool,
}

impl IpLimiter {
    pub fn new(per_minute: u32, burst: u32, trust_forwarded_for: bool) -> Self {
        let burst = burst.max(1);
        // `burst` at once, refilled at `per_minute`.
        let rate = Rate::new(burst, Duration::from_secs(60) * burst / per_minute.max(1));
        Self {
            buckets: KeyedLimiter::default(),
            rate,
            trust_forwarded_for,
        }
    }

    /// Spends one request of `ip`'s allowance; a 429 problem when it is used up.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.buckets
            .check(&ip, self.rate)
            .map(drop)
            .map_err(ApiError::rate_limited)
    }

    /// A failed authentication: answered `error`, or 429 once the IP is over its limit.
    pub fn charge_failure(&self, ip: IpAddr, error: ApiError) -> ApiError {
        match self.check(ip) {
            Ok(()) => error,
            Err(limited) => limited,
        }
    }

    /// Forgets addresses that have been quiet long enough to be back at full allowance.
    pub fn forget_idle(&self) {
        self.buckets.forget_idle();
    }

    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        client_ip(req, self.trust_forwarded_for)
    }

    pub fn service_client_ip(&self, req: &ServiceRequest) -> IpAddr {
        client_ip(req.request(), self.trust_forwarded_for)
    }
}

fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    req.peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |addr| {
            addr.ip()
        })
}
