//! Fetching URLs a tenant chose (an agent's `jwks_uri`) without reaching into the network
//! the server runs in: names are resolved here and only public addresses are connected
//! to; an address written in the URL is checked the same way. A URL that names only
//! loopback, private, link-local, shared (CGNAT), multicast or reserved addresses is
//! refused before any connection is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

/// Which addresses a fetch may connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only (production).
    Public,
    /// Any address: a test's local server, or a deployment that trusts every tenant.
    Any,
}

/// How the server fetches URLs that tenants and clients choose (agents' `jwks_uri`,
/// clients' metadata documents): which addresses it may connect to, and which certificate
/// authorities it trusts beside the system's (an internal PKI, or a test's own).
#[derive(Clone, Debug)]
pub struct OutboundFetch {
    reach: Reach,
    extra_roots: Vec<reqwest::Certificate>,
}

impl Default for OutboundFetch {
    fn default() -> Self {
        Self::public()
    }
}

impl OutboundFetch {
    /// `extra_roots_pem`: a PEM bundle of more certificate authorities to trust.
    pub fn new(reach: Reach, extra_roots_pem: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let extra_roots = match extra_roots_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)?,
            None => Vec::new(),
        };
        Ok(Self { reach, extra_roots })
    }

    /// Public addresses only, the system's authorities only.
    pub fn public() -> Self {
        Self {
            reach: Reach::Public,
            extra_roots: Vec::new(),
        }
    }

    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// A client that follows no redirect, uses no proxy, waits `timeout` at most, and
    /// connects to the addresses the reach allows.
    pub(crate) fn client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        // reqwest is built without a crypto provider: install ring (a no-op when one is).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_certs_merge(self.extra_roots.iter().cloned());
        if self.reach == Reach::Public {
            client = client.dns_resolver(PublicResolver);
        }
        client.build()
    }

    /// Whether a fetch of `url` may start (see [`may_fetch`]).
    pub(crate) fn allows(&self, url: &Url) -> bool {
        self.reach == Reach::Any || may_fetch(url)
    }
}

/// Resolves names with the system resolver, keeping their public addresses only.
#[derive(Debug)]
pub(crate) struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a fetch of `url` may start: an address written in it must be public (a name
/// is checked as it is resolved, by [`PublicResolver`]).
pub(crate) fn may_fetch(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
        Some(Host::Domain(_)) => true,
        None => false,
    }
}

/// An address on the public internet: none of the ranges a server's own network,
/// its host or its cloud's metadata service answer on.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // 100.64.0.0/10, carrier-grade NAT
    let this_network = a == 0; // 0.0.0.0/8
    let reserved = a >= 240; // 240.0.0.0/4 and the broadcast address
    let benchmarking = a == 198 && (b == 18 || b == 19); // 198.18.0.0/15
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || this_network
        || reserved
        || benchmarking)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments().first().copied().unwrap_or_default();
    let nat64 = ip.segments().starts_with(&[0x64, 0xff9b]); // 64:ff9b::/96 and /48
    let documentation = first == 0x2001 && ip.segments().get(1) == Some(&0x0db8);
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || ip.to_ipv4().is_some() // the deprecated IPv4-compatible ::a.b.c.d
        || nat64
        || documentation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn an_address_in_the_url_is_checked_before_any_connection() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(!may_fetch(&url("https://127.0.0.1/jwks")));
        assert!(!may_fetch(&url("https://[::1]:8443/jwks")));
        assert!(!may_fetch(&url("https://169.254.169.254/latest/meta-data")));
        assert!(may_fetch(&url("https://8.8.8.8/jwks")));
        assert!(may_fetch(&url("https://keys.example.com/jwks")));
    }

    #[tokio::test]
    async fn a_name_with_only_private_addresses_resolves_to_nothing() {
        let refused = PublicResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(refused.as_deref(), Some("localhost has no public address"));
    }
}
