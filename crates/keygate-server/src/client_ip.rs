//! The client IP address that IP allowlists and audit events see.
//!
//! *Invariant:* `X-Forwarded-For` is believed only when the TCP peer is one of the
//! operator's `trusted_proxies`. Then the header is read from the right, skipping trusted
//! hops, and the first untrusted address is the client (the "rightmost untrusted hop"):
//! anything to its left was written by the client itself and may be forged. Without
//! trusted proxies the peer address is the client IP and the header is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::config::ConfigError;
use crate::state::AppState;

/// The resolved client address, put into request extensions by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Parses `KEYGATE_TRUSTED_PROXIES` entries: an IP (`10.0.0.1`, `::1`) or a CIDR
/// (`10.0.0.0/8`). Empty entries are ignored.
pub fn parse_trusted_proxies(entries: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "KEYGATE_TRUSTED_PROXIES: not an IP address or CIDR: {e}"
                    ))
                })
        })
        .collect()
}

/// `::ffff:a.b.c.d` is the IPv4 peer `a.b.c.d` (dual-stack sockets report it that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` element: `1.2.3.4`, `2001:db8::1`, and leniently `1.2.3.4:5678`
/// or `[2001:db8::1]:5678`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    s.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

/// The client address for a request from `peer` carrying these `X-Forwarded-For` values.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip, trusted) => client = ip,
            Some(ip) => return ip,
            // Garbage written by (or before) a trusted hop: stop at the last address a
            // trusted proxy vouched for rather than guess.
            None => return client,
        }
    }
    client
}

/// Where the client is, as a trusted proxy says (`KEYGATE_GEO_COUNTRY_HEADER`,
/// `KEYGATE_GEO_CITY_HEADER`): put into request extensions by [`resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    pub country: Option<String>,
    pub city: Option<String>,
}

/// A country as a proxy names it: two ASCII letters or digits (`DE`; Cloudflare's `XX`
/// and `T1` too), upper case; anything else is not recorded.
fn country(v: &str) -> Option<String> {
    let v = v.trim();
    (v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| v.to_ascii_uppercase())
}

/// A city: at most 100 characters, none of them control characters.
fn city(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty() && v.chars().count() <= 100 && !v.chars().any(char::is_control))
        .then(|| v.to_string())
}

/// Middleware: resolves the client IP once per request, and its place when a trusted
/// proxy names it.
pub async fn resolve(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        let ip = client_ip(
            peer,
            req.headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok()),
            &state.config.trusted_proxies,
        );
        req.extensions_mut().insert(ClientIp(ip));
        if let Some(geo) = geo_of(req.headers(), peer, &state.config) {
            req.extensions_mut().insert(geo);
        }
    }
    next.run(req).await
}

/// The place a request from `peer` carries in the configured geo headers, when `peer` is
/// a trusted proxy (a client that reaches keygate directly could name any place), each
/// header sent once (a proxy that appends to the client's own header, rather than
/// replacing it, would leave the client's first) and in a place's shape.
pub fn geo_of(
    headers: &axum::http::HeaderMap,
    peer: IpAddr,
    config: &crate::config::Config,
) -> Option<Geo> {
    if !is_trusted(canonical(peer), &config.trusted_proxies) {
        return None;
    }
    let header = |name: &Option<String>| {
        let mut values = headers.get_all(name.as_deref()?).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    let geo = Geo {
        country: header(&config.geo_country_header).and_then(country),
        city: header(&config.geo_city_header).and_then(city),
    };
    (geo != Geo::default()).then_some(geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxys_place_is_taken_only_in_shape() {
        assert_eq!(country(" de "), Some("DE".into()));
        assert_eq!(country("T1"), Some("T1".into()));
        assert_eq!(country("DEU"), None);
        assert_eq!(country("d\u{0}"), None);
        assert_eq!(city("Frankfurt am Main"), Some("Frankfurt am Main".into()));
        assert_eq!(city("a\nb"), None);
        assert_eq!(city(&"x".repeat(101)), None);
        assert_eq!(city(""), None);
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        parse_trusted_proxies(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.1.1.1"].into_iter(), &t),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), ["1.1.1.1"].into_iter(), &[]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = nets(&["10.0.0.0/8", "192.168.1.7"]);
        // client forged "6.6.6.6"; real client 198.51.100.4; two trusted proxies
        let xff = ["6.6.6.6, 198.51.100.4", "192.168.1.7"];
        assert_eq!(
            client_ip(ip("10.1.2.3"), xff.into_iter(), &t),
            ip("198.51.100.4")
        );
        // all hops trusted: the leftmost trusted one
        assert_eq!(
            client_ip(ip("10.1.2.3"), ["10.9.9.9"].into_iter(), &t),
            ip("10.9.9.9")
        );
        // no header: the peer
        assert_eq!(
            client_ip(ip("10.1.2.3"), std::iter::empty(), &t),
            ip("10.1.2.3")
        );
        // garbage stops the walk at the last trusted hop
        assert_eq!(
            client_ip(ip("10.1.2.3"), ["1.2.3.4, nonsense"].into_iter(), &t),
            ip("10.1.2.3")
        );
        // ports and brackets, v4-mapped peers
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), ["[2001:db8::1]:443"].into_iter(), &t),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), ["198.51.100.4:5555"].into_iter(), &t),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn bad_proxy_entry_is_a_config_error() {
        let e = parse_trusted_proxies(&["10.0.0.0/8".into(), "proxy.local".into()]).unwrap_err();
        assert!(e.0.contains("proxy.local"), "{e}");
        assert_eq!(nets(&[" ", "::1"]).len(), 1);
    }
}
