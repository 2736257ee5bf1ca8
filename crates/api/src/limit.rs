//! The per-IP limit on unauthenticated requests and failed authentications. Authenticated
//! traffic is never limited per IP (many SDKs share one NAT address); capabilities that
//! need it limit per token and plan instead.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use d2_kernel::limit::{Rate, RateBuckets, RateLimit};

use crate::error::ApiError;

/// Addresses remembered as over their allowance at most; past it, the oldest refusals
/// are not remembered (their requests are still limited, through a lookup).
const MAX_OVER_BUDGET: usize = 100_000;

#[derive(Debug)]
pub struct IpLimiter {
    buckets: RateBuckets<IpAddr>,
    trusted_proxies: usize,
    /// Addresses over their allowance, until when: their unknown credentials are refused
    /// before any lookup.
    over_budget: Mutex<HashMap<IpAddr, (Instant, RateLimit)>>,
    /// How many addresses `over_budget` holds, written under its lock: while none is,
    /// an authenticated request reads this instead of taking the lock, which every worker
    /// would write.
    remembered: AtomicUsize,
}

impl IpLimiter {
    pub fn new(per_minute: u32, burst: u32, trusted_proxies: usize) -> Self {
        let burst = burst.max(1);
        // `burst` at once, refilled at `per_minute`.
        let rate = Rate::new(burst, Duration::from_secs(60) * burst / per_minute.max(1));
        Self {
            buckets: RateBuckets::new(rate),
            trusted_proxies,
            over_budget: Mutex::default(),
            remembered: AtomicUsize::new(0),
        }
    }

    /// Spends one request of `ip`'s allowance (shared by its whole /64 for IPv6); a 429
    /// problem when it is used up.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        let bucket = bucket_of(ip);
        self.buckets.check(&bucket).map(drop).map_err(|limit| {
            self.remember_over_budget(bucket, limit);
            ApiError::rate_limited(limit)
        })
    }

    fn remember_over_budget(&self, bucket: IpAddr, limit: RateLimit) {
        let until = Instant::now() + Duration::from_secs(limit.retry_after_seconds);
        let mut over = self
            .over_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if over.len() >= MAX_OVER_BUDGET {
            let now = Instant::now();
            over.retain(|_, (until, _)| *until > now);
        }
        if over.len() < MAX_OVER_BUDGET {
            over.insert(bucket, (until, limit));
        }
        self.remembered.store(over.len(), Ordering::Release);
    }

    /// When `ip` has spent its allowance (on failed authentications or unauthenticated
    /// requests): the 429 to answer a credential that is not already known, without
    /// looking it up. Checked before any lookup, so a flood of well-formed unknown tokens
    /// costs no database query once the address is over its budget.
    pub fn over_budget(&self, ip: IpAddr) -> Option<ApiError> {
        if self.remembered.load(Ordering::Acquire) == 0 {
            return None;
        }
        let over = self
            .over_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (until, limit) = over.get(&bucket_of(ip))?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(ApiError::rate_limited(RateLimit {
            retry_after_seconds: left.as_secs().saturating_add(1),
            ..*limit
        }))
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
        let now = Instant::now();
        let mut over = self
            .over_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        over.retain(|_, (until, _)| *until > now);
        self.remembered.store(over.len(), Ordering::Release);
    }

    /// The client's address: for the per-IP limit and for what is recorded (events'
    /// `source_ip`), so both always agree.
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        client_ip(req, self.trusted_proxies)
    }

    pub fn service_client_ip(&self, req: &ServiceRequest) -> IpAddr {
        client_ip(req.request(), self.trusted_proxies)
    }
}

/// The bucket an address spends from. An IPv6 client usually holds a whole /64 (one
/// subnet is the smallest unit a provider hands out), so keying by the full address would
/// let it make 2^64 fresh buckets; an IPv6 address is keyed by its /64 prefix. IPv4
/// addresses (and IPv4-mapped IPv6 ones) are keyed by the whole address.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
        )),
    }
}

fn client_ip(req: &HttpRequest, trusted_proxies: usize) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    let forwarded = req
        .headers()
        .get_all(crate::headers::FORWARDED_FOR)
        .map(crate::headers::text);
    from_forwarded(peer, forwarded, trusted_proxies)
}

/// The client address given the peer, the `X-Forwarded-For` header lines (in order; `None`
/// for a line that is not text) and the number of trusted proxies in front of the server.
///
/// Each proxy appends the address it received the request from, so with `trusted_proxies`
/// = N (the one connecting to us included) the last N entries were written by our own
/// proxies and the N-th from the right is the address the outermost one saw: the client.
/// Entries left of it were sent by the client and prove nothing. With fewer entries than
/// N the left-most is taken; an entry that is not an address, an unreadable header, or
/// N = 0 (no proxy: the header is the caller's own) give the peer address.
fn from_forwarded<'a>(
    peer: IpAddr,
    lines: impl Iterator<Item = Option<&'a str>>,
    trusted_proxies: usize,
) -> IpAddr {
    if trusted_proxies == 0 {
        return peer.to_canonical();
    }
    let mut entries = Vec::new();
    for line in lines {
        let Some(line) = line else {
            return peer.to_canonical();
        };
        entries.extend(line.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    let index = entries.len().saturating_sub(trusted_proxies);
    entries
        .get(index)
        .and_then(|entry| parse_entry(entry))
        .unwrap_or(peer)
        .to_canonical()
}

/// An address, possibly with a port (`203.0.113.7:443`, `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn client(header: &[&str], trusted: usize) -> IpAddr {
        from_forwarded(PEER, header.iter().map(|l| Some(*l)), trusted)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client(&["203.0.113.7"], 0), PEER);
        assert_eq!(client(&[], 0), PEER);
    }

    #[test]
    fn the_client_is_the_nth_entry_from_the_right() {
        assert_eq!(client(&["203.0.113.7"], 1), ip("203.0.113.7"));
        assert_eq!(
            client(&["198.51.100.1, 203.0.113.7, 192.0.2.9"], 1),
            ip("192.0.2.9")
        );
        assert_eq!(
            client(&["198.51.100.1, 203.0.113.7, 192.0.2.9"], 2),
            ip("203.0.113.7")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(&["198.51.100.1", "203.0.113.7, 192.0.2.9"], 2),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn spoofed_left_most_entries_change_nothing() {
        for spoofed in ["1.1.1.1", "8.8.8.8, 9.9.9.9", "::1", "garbage"] {
            assert_eq!(
                client(&[&format!("{spoofed}, 203.0.113.7")], 1),
                ip("203.0.113.7")
            );
        }
    }

    #[test]
    fn with_too_few_entries_the_left_most_is_taken() {
        assert_eq!(client(&["203.0.113.7"], 3), ip("203.0.113.7"));
        assert_eq!(client(&["203.0.113.7, 192.0.2.9"], 5), ip("203.0.113.7"));
        assert_eq!(client(&[], 1), PEER);
    }

    #[test]
    fn garbage_gives_the_peer() {
        assert_eq!(client(&["not-an-address"], 1), PEER);
        assert_eq!(client(&["203.0.113.7, 999.1.1.1"], 1), PEER);
        assert_eq!(client(&[" , "], 1), PEER);
        assert_eq!(from_forwarded(PEER, [None].into_iter(), 1), PEER);
    }

    #[test]
    fn ports_and_mapped_addresses_are_read() {
        assert_eq!(client(&["203.0.113.7:443"], 1), ip("203.0.113.7"));
        assert_eq!(client(&["[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(client(&["::ffff:203.0.113.7"], 1), ip("203.0.113.7"));
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_64() {
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            bucket_of(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            bucket_of(ip("2001:db8:1:2::1")),
            bucket_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(bucket_of(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(bucket_of(ip("203.0.113.7")), bucket_of(ip("203.0.113.8")));
        assert_eq!(bucket_of(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }

    #[test]
    fn a_limited_64_is_limited_for_every_address_in_it() {
        let limiter = IpLimiter::new(1, 2, 1);
        assert!(limiter.check(ip("2001:db8::1")).is_ok());
        assert!(limiter.check(ip("2001:db8::2")).is_ok());
        assert!(limiter.check(ip("2001:db8::ffff:3")).is_err());
        assert!(limiter.check(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn an_address_over_its_allowance_is_remembered_until_it_is_forgotten() {
        let limiter = IpLimiter::new(1, 1, 0);
        assert!(limiter.over_budget(ip("203.0.113.7")).is_none());
        assert!(limiter.check(ip("203.0.113.7")).is_ok());
        assert!(limiter.over_budget(ip("203.0.113.7")).is_none());
        assert!(limiter.check(ip("203.0.113.7")).is_err());
        assert!(limiter.over_budget(ip("203.0.113.7")).is_some());
        assert!(limiter.over_budget(ip("203.0.113.8")).is_none());
        // Still refusing when swept: a minute has not passed.
        limiter.forget_idle();
        assert!(limiter.over_budget(ip("203.0.113.7")).is_some());
        limiter.over_budget.lock().unwrap().clear();
        limiter.forget_idle();
        assert!(limiter.over_budget(ip("203.0.113.7")).is_none());
        assert_eq!(limiter.remembered.load(Ordering::Acquire), 0);
    }
}
