//! Requests to URLs that users choose: webhook receivers and OAuth token endpoints. They
//! reach only publicly routable addresses, unless the operator lists the host in
//! `KEYGATE_ALLOWED_PRIVATE_HOSTS`. Otherwise any signed-in user could make keygate POST
//! to its own network: a metadata service at 169.254.169.254, an admin port on
//! 127.0.0.1, a host at 10.0.0.5, and read the answer's status back (SSRF).
//!
//! Two checks, both needed:
//! - [`check_target`] looks at the URL's host when the URL is saved and again before each
//!   request (rows saved before this check existed are caught there): an IP address
//!   written in the URL, and `localhost` names. A client connects to an IP address in the
//!   URL without asking a resolver.
//! - [`PublicResolver`] is the client's resolver: every address a name resolves to must be
//!   public, so a name that points at 10.0.0.5 (or is switched to it after the URL was
//!   saved) is never connected to. The checked addresses are the ones connected to.
//!
//! The client also ignores proxy settings from the environment: a proxy would resolve the
//! name itself, past this check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is a publicly routable unicast address: not loopback, private, shared
/// (CGNAT), link-local, unspecified, broadcast, multicast, documentation, benchmarking or
/// reserved, and not an IPv6 form of one (IPv4-mapped, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // local-use NAT64 (64:ff9b:1::/48, RFC 8215) maps into whatever the network chose, and
    // Teredo (2001::/32) tunnels to an address it hides: neither can be judged
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) || (s[0] == 0x2001 && s[1] == 0) {
        return false;
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated)
        || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible and other ::/96 forms
        || s[0..5] == [0, 0, 0, 0, 0xffff] // IPv4-translated (::ffff:0:0/96)
        || s[0..4] == [0x100, 0, 0, 0]) // discard-only (100::/64)
}

/// An entry of `KEYGATE_ALLOWED_PRIVATE_HOSTS`, or a URL's host: an IP address (IPv6 with
/// or without brackets, any spelling) or a name (without case or a trailing dot).
#[derive(PartialEq)]
enum HostId {
    Ip(IpAddr),
    Name(String),
}

fn host_id(s: &str) -> HostId {
    let bare = s.trim().trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => HostId::Ip(ip),
        Err(_) => HostId::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
    }
}

/// Checks `KEYGATE_ALLOWED_PRIVATE_HOSTS` entries at start: host names or IP addresses,
/// without a scheme, port or path.
pub fn check_allowed_entry(entry: &str) -> Result<(), String> {
    match host_id(entry) {
        HostId::Ip(_) => Ok(()),
        HostId::Name(n)
            if !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            Ok(())
        }
        HostId::Name(_) => Err(format!(
            "{entry}: not a host name or IP address (no scheme, port or path)"
        )),
    }
}

/// Whether the operator listed `host` in `KEYGATE_ALLOWED_PRIVATE_HOSTS`.
fn listed(allowed: &[String], host: &str) -> bool {
    let host = host_id(host);
    allowed.iter().any(|a| host_id(a) == host)
}

/// Refuses a URL whose host is a non-public IP address or a `localhost` name, unless the
/// operator listed that host. Names are checked when they resolve ([`PublicResolver`]).
pub fn check_target(allowed: &[String], raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|_| "not a valid URL".to_string())?;
    let refused = |what: &str| {
        Err(format!(
            "{what} is not a public address; list the host in KEYGATE_ALLOWED_PRIVATE_HOSTS to allow it"
        ))
    };
    match url.host() {
        None => Err("the URL needs a host".into()),
        Some(url::Host::Ipv4(ip)) if !is_public_v4(ip) && !listed(allowed, &ip.to_string()) => {
            refused(&ip.to_string())
        }
        Some(url::Host::Ipv6(ip)) if !is_public_v6(ip) && !listed(allowed, &ip.to_string()) => {
            refused(&ip.to_string())
        }
        Some(url::Host::Domain(d)) => {
            let name = d.trim_end_matches('.').to_ascii_lowercase();
            if (name == "localhost" || name.ends_with(".localhost")) && !listed(allowed, &name) {
                return refused(&name);
            }
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// A user-chosen URL as saved: [`crate::webhooks::check_url`]'s form (http or https, a
/// host, no credentials), then [`check_target`].
pub fn check_user_url(allowed: &[String], raw: &str) -> Result<(), String> {
    crate::webhooks::check_url(raw).map_err(str::to_string)?;
    check_target(allowed, raw)
}

/// An OAuth token endpoint must be https: the refresh token and the client secret are
/// posted to it. Plain http only to a host the operator listed in
/// `KEYGATE_ALLOWED_PRIVATE_HOSTS` (a token service on the same network). Checked beside
/// [`check_target`] (saving: [`check_user_url`]).
pub fn check_token_scheme(allowed: &[String], raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|_| "not a valid URL".to_string())?;
    if url.scheme() != "https" && !url.host_str().is_some_and(|h| listed(allowed, h)) {
        return Err("must be https: the refresh token and client secret are sent to it (plain http only to a host in KEYGATE_ALLOWED_PRIVATE_HOSTS)".into());
    }
    Ok(())
}

/// The resolver of the client for user-chosen URLs: a name resolves only to its public
/// addresses (all of them, when the operator listed it). A name with none is an error, and
/// the request fails as unreachable.
pub struct PublicResolver {
    allowed: Arc<[String]>,
}

impl PublicResolver {
    pub fn new(allowed: &[String]) -> Self {
        PublicResolver {
            allowed: allowed.into(),
        }
    }
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let open = listed(&self.allowed, &host);
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| open || is_public(a.ip()))
                .collect();
            if usable.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (KEYGATE_ALLOWED_PRIVATE_HOSTS)"
                )
                .into());
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

/// The body of `resp`, or `None` if it is longer than `max` bytes or cannot be read: a
/// user-chosen endpoint could otherwise stream without end into memory.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > max {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// The HTTP client for user-chosen URLs: public addresses only ([`PublicResolver`]), no
/// redirects, no proxy from the environment, a connect timeout. Callers set the request
/// timeout.
pub fn client(allowed: &[String]) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PublicResolver::new(allowed)))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn only_public_unicast_addresses_pass() {
        for ok in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(public(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:5",
            "2002:a00:5::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b:1::a00:5",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::ffff:0:a00:5",
            "100::1",
            "192.88.99.1",
        ] {
            assert!(!public(bad), "{bad}");
        }
    }

    #[test]
    fn urls_naming_private_hosts_are_refused_unless_listed() {
        let none: &[String] = &[];
        assert!(check_target(none, "https://hooks.example.com/x").is_ok());
        assert!(check_target(none, "https://1.1.1.1/x").is_ok());
        for bad in [
            "http://127.0.0.1:9000/hook",
            "http://2130706433/", // 127.0.0.1 as one number
            "http://0x7f.1/",
            "http://[::1]:8080/",
            "http://[::ffff:10.0.0.5]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            let e = check_target(none, bad).expect_err(bad);
            assert!(e.contains("KEYGATE_ALLOWED_PRIVATE_HOSTS"), "{e}");
        }
        let listed = [
            "127.0.0.1".to_string(),
            "LocalHost.".to_string(),
            "[0:0::ffff:a00:5]".to_string(),
        ];
        assert!(check_target(&listed, "http://127.0.0.1:9000/hook").is_ok());
        assert!(check_target(&listed, "http://localhost:9000/hook").is_ok());
        assert!(check_target(&listed, "http://[::ffff:10.0.0.5]/").is_ok());
        assert!(check_target(&listed, "http://10.0.0.5/").is_err());
        assert!(check_target(&listed, "http://127.0.0.2/").is_err());
    }

    #[test]
    fn allowlist_entries_are_hosts_only() {
        for ok in [
            "10.0.0.5",
            "[::1]",
            "::1",
            "hooks.internal",
            "hooks.internal.",
        ] {
            assert!(check_allowed_entry(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.5:8080",
            "http://hooks.internal",
            "hooks.internal/x",
            "",
        ] {
            assert!(check_allowed_entry(bad).is_err(), "{bad}");
        }
    }

    /// A name that resolves to loopback gets no address, unless it is listed.
    #[tokio::test]
    async fn the_resolver_drops_private_addresses() {
        let name = |s: &str| s.parse::<Name>().unwrap();
        let r = PublicResolver::new(&[]);
        let e = match r.resolve(name("localhost")).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("no public address"), "{e}");
        let r = PublicResolver::new(&["localhost".to_string()]);
        let addrs: Vec<SocketAddr> = r.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    /// The client connects through the resolver: a listener on loopback is not reached by
    /// name, unless the name is listed.
    #[tokio::test]
    async fn the_client_never_connects_to_a_private_address_by_name() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://localhost:{port}/hook");
        let refused = client(&[]).unwrap().post(&url).send().await;
        assert!(refused.is_err(), "connected: {refused:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        let listed = client(&["localhost".to_string()]).unwrap();
        let r = listed.post(&url).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
