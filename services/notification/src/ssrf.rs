//! Where a webhook may point. A URL is http(s) without userinfo, and every
//! address its host resolves to is public: no loopback, private, link-local,
//! unique-local, unspecified, multicast, CGNAT, broadcast, documentation or
//! other special-purpose range (nor an IPv4-mapped, -compatible, NAT64 or
//! 6to4 form of one), unless the development allow-list (CIDRs) covers it.
//! Checked at registration and again before each send; the send then
//! connects to the address that was checked (no second lookup to rebind).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use ipnet::IpNet;
use reqwest::Url;

/// The longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Special-purpose ranges a webhook may not reach (IANA's special-purpose
/// registries, plus everything not globally routable).
static BLOCKED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // CGNAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local (cloud metadata)
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation (TEST-NET-1)
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation (TEST-NET-2)
        "203.0.113.0/24",  // documentation (TEST-NET-3)
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
        "::/128",          // unspecified
        "::1/128",         // loopback
        "::/96",           // IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  // local-use NAT64
        "100::/64",        // discard-only
        "2001::/23",       // IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",   // documentation
        "3fff::/20",       // documentation
        "5f00::/16",       // segment routing
        "fc00::/7",        // unique local
        "fe80::/10",       // link-local
        "fec0::/10",       // site-local (deprecated)
        "ff00::/8",        // multicast
    ]
    .iter()
    .map(|net| net.parse().expect("a valid CIDR"))
    .collect()
});

/// Why a URL or an address is refused: shown to the caller (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("url must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("url is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("url must use http or https, not {0}")]
    Scheme(String),
    #[error("url must not contain a user name or password")]
    Userinfo,
    #[error("url has no host")]
    NoHost,
    #[error("url must not have a fragment")]
    Fragment,
    #[error("host {0} does not resolve")]
    Unresolved(String),
    #[error("host {host} resolves to {addr}, a {range} address, which webhooks may not reach")]
    Forbidden { host: String, addr: IpAddr, range: String },
}

/// The development allow-list: addresses in these networks are allowed
/// even in a blocked range.
#[derive(Debug, Clone, Default)]
pub struct AllowList(pub Vec<IpNet>);

impl AllowList {
    pub fn parse(value: &str) -> Result<AllowList, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>().map_err(|e| format!("{s}: {e} (expected CIDRs such as 127.0.0.1/32)")))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    fn allows(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }
}

/// The blocked range `addr` falls in, if any. IPv4 forms embedded in an
/// IPv6 address (mapped, NAT64, 6to4) are judged as that IPv4 address.
pub fn blocked_range(addr: IpAddr) -> Option<IpNet> {
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = embedded_v4(v6)
        && let Some(range) = blocked_range(IpAddr::V4(v4))
    {
        return Some(range);
    }
    BLOCKED.iter().find(|net| net.contains(&addr)).copied()
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:a.b.c.d::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// Checks the form of a webhook URL (no lookup).
pub fn parse(url: &str) -> Result<Url, Refused> {
    if url.chars().count() > MAX_URL_LEN {
        return Err(Refused::TooLong);
    }
    let parsed = Url::parse(url).map_err(|e| Refused::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused::Scheme(parsed.scheme().to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused::Userinfo);
    }
    if parsed.fragment().is_some() {
        return Err(Refused::Fragment);
    }
    if parsed.host().is_none() {
        return Err(Refused::NoHost);
    }
    Ok(parsed)
}

/// Where a vetted URL connects: its host name (for TLS and `Host`) and the
/// checked address.
#[derive(Debug, Clone)]
pub struct Vetted {
    pub url: Url,
    pub host: String,
    pub addr: SocketAddr,
}

/// Parses the URL, resolves its host and checks every address; the first is
/// the one to connect to.
pub async fn vet(url: &str, allow: &AllowList) -> Result<Vetted, Refused> {
    let url = parse(url)?;
    let host = url.host_str().ok_or(Refused::NoHost)?.to_owned();
    let port = url.port_or_known_default().ok_or(Refused::NoHost)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port)).await.map_err(|_| Refused::Unresolved(host.clone()))?.collect(),
    };
    let first = *addrs.first().ok_or_else(|| Refused::Unresolved(host.clone()))?;
    for addr in &addrs {
        if allow.allows(addr.ip()) {
            continue;
        }
        if let Some(range) = blocked_range(addr.ip()) {
            return Err(Refused::Forbidden { host, addr: addr.ip(), range: range.to_string() });
        }
    }
    Ok(Vetted { url, host: bare.to_owned(), addr: first })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Refused {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(vet(url, &AllowList::default())).expect_err(url)
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for url in [
            "http://127.0.0.1/hook",
            "http://127.1.2.3:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://192.0.2.10/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.1.2.3]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2001:db8::1]/",
            "http://[ff02::1]/",
            "http://localhost:9/",
        ] {
            assert!(matches!(refused(url), Refused::Forbidden { .. }), "{url}: {:?}", refused(url));
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_their_reason() {
        assert_eq!(refused("ftp://example.com/"), Refused::Scheme("ftp".into()));
        assert_eq!(refused("http://user:pw@example.com/"), Refused::Userinfo);
        assert!(matches!(refused("not a url"), Refused::Invalid(_)));
        assert_eq!(refused(&format!("http://example.com/{}", "a".repeat(MAX_URL_LEN))), Refused::TooLong);
        assert_eq!(refused("http://example.com/#x"), Refused::Fragment);
    }

    #[test]
    fn public_addresses_pass_and_the_allow_list_opens_a_range() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let vetted = runtime.block_on(vet("https://93.184.215.14/x", &AllowList::default())).unwrap();
        assert_eq!(vetted.addr, "93.184.215.14:443".parse().unwrap());
        let allow = AllowList::parse("127.0.0.1/32, 10.0.0.0/8").unwrap();
        assert!(runtime.block_on(vet("http://127.0.0.1:8080/", &allow)).is_ok());
        assert!(matches!(runtime.block_on(vet("http://127.0.0.2/", &allow)), Err(Refused::Forbidden { .. })));
        assert!(AllowList::parse("nonsense").is_err());
        assert!(blocked_range("2606:4700::1".parse().unwrap()).is_none());
    }
}
