//! Where a request comes from: the client's IP address, as far as the
//! server can *know* it, for login throttling and the audit trail.
//!
//! The rules (one contract for every plantd HTTP API):
//!
//! 1. The **peer** is the address the request arrived from: API Gateway's
//!    `sourceIp` on the Lambda path (the adapter puts it in a [`PeerAddr`]
//!    extension), else the TCP peer (`axum::extract::ConnectInfo`, when the
//!    server is served with `into_make_service_with_connect_info`).
//! 2. `X-Forwarded-For` is believed **only when the peer is a configured
//!    trusted proxy** ([`TrustedProxies`], `PLANTD_TRUSTED_PROXIES`): then
//!    the source is the right-most address in it that is not itself a
//!    trusted proxy. An attacker cannot pick its own source by sending the
//!    header: from an untrusted peer the header is ignored.
//! 3. With no peer known (a router called in-process), the source is
//!    [`Source::Unknown`]: every such caller shares one throttling bucket.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

/// The environment variable listing trusted proxies (comma-separated IP
/// addresses) whose `X-Forwarded-For` is believed.
pub const TRUSTED_PROXIES_ENV: &str = "PLANTD_TRUSTED_PROXIES";

/// The peer address a platform adapter vouches for (API Gateway's
/// `requestContext.http.sourceIp`), inserted as a request extension. It
/// wins over the TCP peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// Proxies whose `X-Forwarded-For` is believed. Empty by default: the
/// header is then never believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpAddr>);

impl TrustedProxies {
    /// Trusts exactly `addrs`.
    pub fn new(addrs: Vec<IpAddr>) -> Self {
        Self(addrs)
    }

    /// Parses a comma-separated list of IP addresses.
    ///
    /// # Errors
    /// The first entry that is not an IP address, quoted.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| format!("{s:?} is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// From [`TRUSTED_PROXIES_ENV`]; none when unset.
    ///
    /// # Errors
    /// As [`TrustedProxies::parse`], naming the variable.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(TRUSTED_PROXIES_ENV) {
            Ok(v) => Self::parse(&v).map_err(|e| format!("{TRUSTED_PROXIES_ENV}: {e}")),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The client's address.
    Addr(IpAddr),
    /// Nothing vouches for an address (in-process calls, tests).
    Unknown,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(ip) => write!(f, "{ip}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The source of a request under the module's rules.
pub fn source(parts: &Parts, trusted: &TrustedProxies) -> Source {
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0).or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    });
    let Some(peer) = peer else {
        return Source::Unknown;
    };
    if !trusted.contains(&peer) {
        return Source::Addr(peer);
    }
    // Every X-Forwarded-For header, in order, as one list; the right-most
    // entries were added by the proxies nearest to us.
    let forwarded: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .map_or(Source::Addr(peer), Source::Addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(peer: Option<&str>, xff: &[&str]) -> Parts {
        let mut b = Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let (mut p, ()) = b.body(()).expect("request").into_parts();
        if let Some(peer) = peer {
            let addr: SocketAddr = format!("{peer}:1234").parse().expect("addr");
            p.extensions.insert(ConnectInfo(addr));
        }
        p
    }

    fn ip(s: &str) -> Source {
        Source::Addr(s.parse().expect("ip"))
    }

    #[test]
    fn the_header_is_ignored_from_an_untrusted_peer() {
        let none = TrustedProxies::default();
        assert_eq!(
            source(&parts(Some("203.0.113.9"), &["10.9.9.9"]), &none),
            ip("203.0.113.9")
        );
        assert_eq!(source(&parts(None, &["10.9.9.9"]), &none), Source::Unknown);
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_entries_to_its_left_do_not_count() {
        let t = TrustedProxies::parse("10.0.0.1, 10.0.0.2").expect("list");
        // The client sent a forged entry; proxy 10.0.0.2 appended the real
        // peer, 10.0.0.1 appended 10.0.0.2.
        let p = parts(Some("10.0.0.1"), &["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(source(&p, &t), ip("198.51.100.7"));
        assert_eq!(source(&parts(Some("10.0.0.1"), &[]), &t), ip("10.0.0.1"));
    }

    #[test]
    fn an_adapter_vouched_peer_wins() {
        let mut p = parts(Some("127.0.0.1"), &[]);
        p.extensions
            .insert(PeerAddr("192.0.2.4".parse().expect("ip")));
        assert_eq!(source(&p, &TrustedProxies::default()), ip("192.0.2.4"));
        assert!(TrustedProxies::parse("nope").is_err());
    }
}
