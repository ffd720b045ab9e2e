//! The SSRF guard: the addresses webhooks may not reach, the DNS resolver that drops them,
//! and the check every endpoint URL passes before it is stored or used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{MAX_URL_LEN, WebhookError};

/// Tells whether webhooks must not connect to `ip`, so a partner cannot point
/// an endpoint at our own network, the cloud metadata service or other
/// non-public destinations.
///
/// Forbidden: loopback, private, link-local (incl. 169.254.169.254 and
/// fd00:ec2::254), CGNAT, unspecified, broadcast, multicast, documentation,
/// benchmarking, 0.0.0.0/8, 192.0.0.0/24, 240.0.0.0/4, IPv6 ULA and
/// site-local, the IPv6 discard prefix, and any IPv6 address embedding a
/// forbidden IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
/// 6to4 2002::/16) plus local-use NAT64 64:ff9b:1::/48.
#[must_use]
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_ipv4(v4),
        IpAddr::V6(v6) => is_forbidden_ipv6(v6),
    }
}

fn is_forbidden_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8 "this network", incl. unspecified
        || a == 10 // private
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, incl. cloud metadata
        || (a == 172 && (b & 0xf0) == 16) // private 172.16.0.0/12
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168) // private
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn is_forbidden_ipv6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let [.., o12, o13, o14, o15] = ip.octets();
    let low_v4 = Ipv4Addr::new(o12, o13, o14, o15);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return is_forbidden_ipv4(mapped); // ::ffff:a.b.c.d
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible ::a.b.c.d; also covers :: and ::1.
        return is_forbidden_ipv4(low_v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_forbidden_ipv4(low_v4); // NAT64 well-known prefix
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:aabb:ccdd::/48 embeds a.b.c.d.
        let [.., a, b] = s[1].to_be_bytes();
        let [.., c, d] = s[2].to_be_bytes();
        return is_forbidden_ipv4(Ipv4Addr::new(a, b, c, d));
    }
    (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7, incl. fd00:ec2::254
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && (s[1] & 0xf000) == 0) // documentation 3fff::/20
}

/// A DNS resolver for reqwest that drops addresses webhooks may not reach, so
/// a partner's host name cannot smuggle a delivery into our network.
///
/// Resolves with the system resolver (`tokio::net::lookup_host`). With
/// `allow_private` (local development, tests) nothing is dropped. IP-literal
/// hosts never reach a resolver; [`check_url`] guards those.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    /// Creates the resolver, so [`http_client`](super::http_client) (or a custom client) can
    /// install it.
    #[must_use]
    pub const fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// Resolves `host`, keeping only the addresses webhooks may reach.
    async fn lookup(self, host: String) -> Result<Vec<SocketAddr>, WebhookError> {
        let lookup: std::io::Result<Vec<SocketAddr>> = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map(Iterator::collect);
        let resolved = match lookup {
            Ok(addrs) => addrs,
            Err(source) => return Err(WebhookError::Resolve { host, source }),
        };
        if resolved.is_empty() {
            return Err(WebhookError::NoAddresses { host });
        }
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| self.allow_private || !is_forbidden_ip(addr.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(WebhookError::ForbiddenHost { host });
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = this.lookup(host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Validates an endpoint URL before it is stored or used, so credentials,
/// odd schemes and internal IP literals are refused up front.
///
/// Accepts absolute `http`/`https` URLs (only `https` when `require_https`)
/// of at most [`MAX_URL_LEN`] characters, with a host and without userinfo.
/// An IP-literal host (in any notation the URL standard accepts, e.g.
/// `http://2130706433/`) that [`is_forbidden_ip`] refuses is rejected unless
/// `allow_private`; host names are checked at connect time by
/// [`GuardedResolver`].
///
/// # Errors
/// The matching [`WebhookError`] URL variant; errors name at most the host.
pub fn check_url(
    raw: &str,
    require_https: bool,
    allow_private: bool,
) -> Result<url::Url, WebhookError> {
    if raw.len() > MAX_URL_LEN {
        return Err(WebhookError::UrlTooLong { len: raw.len() });
    }
    let url = url::Url::parse(raw).map_err(WebhookError::InvalidUrl)?;
    if url.as_str().len() > MAX_URL_LEN {
        return Err(WebhookError::UrlTooLong {
            len: url.as_str().len(),
        });
    }
    match url.scheme() {
        "https" => {}
        "http" if require_https => return Err(WebhookError::HttpsRequired),
        "http" => {}
        other => {
            return Err(WebhookError::UnsupportedScheme {
                scheme: other.to_owned(),
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookError::CredentialsInUrl);
    }
    let ip = match url.host() {
        None => return Err(WebhookError::MissingHost),
        Some(url::Host::Domain("")) => {
            return Err(WebhookError::MissingHost);
        }
        Some(url::Host::Domain(_)) => None,
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(ip) = ip
        && !allow_private
        && is_forbidden_ip(ip)
    {
        return Err(WebhookError::ForbiddenAddress { ip });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    use proptest::prelude::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// IPv4 address, IPv4-mapped and IPv4-compatible forms.
    fn all_forms(s: &str) -> [IpAddr; 3] {
        let ip = v4(s);
        [
            IpAddr::V4(ip),
            IpAddr::V6(ip.to_ipv6_mapped()),
            IpAddr::V6(ip.to_ipv6_compatible()),
        ]
    }

    const FORBIDDEN_V4: &[&str] = &[
        "127.0.0.1",
        "127.255.255.254", // loopback
        "10.0.0.1",
        "10.255.255.255", // private
        "172.16.0.1",
        "172.31.255.255", // private
        "192.168.0.1",
        "192.168.255.255", // private
        "169.254.0.1",
        "169.254.169.254", // link-local, cloud metadata
        "100.64.0.1",
        "100.127.255.255", // CGNAT
        "0.0.0.0",
        "0.1.2.3",         // unspecified, this network
        "255.255.255.255", // broadcast
        "224.0.0.1",
        "239.255.255.250", // multicast
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9", // documentation
        "192.0.0.1",
        "192.0.0.170", // IETF protocol assignments
        "198.18.0.1",
        "198.19.255.255", // benchmarking
        "240.0.0.1",
        "250.1.2.3", // reserved
    ];

    const ALLOWED_V4: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "9.255.255.255",
        "11.0.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.167.1.1",
        "192.169.0.1",
        "169.253.1.1",
        "169.255.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "126.255.255.255",
        "128.0.0.1",
        "192.0.1.1",
        "192.0.3.1",
        "198.17.255.255",
        "198.20.0.1",
        "198.51.101.1",
        "203.0.114.1",
        "223.255.255.255",
    ];

    #[test]
    fn forbidden_ipv4_ranges_are_refused_in_every_ip_form() {
        for s in FORBIDDEN_V4 {
            for ip in all_forms(s) {
                assert!(is_forbidden_ip(ip), "{ip} should be forbidden");
            }
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed_plain_and_mapped() {
        for s in ALLOWED_V4 {
            let ip = v4(s);
            assert!(!is_forbidden_ip(IpAddr::V4(ip)), "{ip} should be allowed");
            assert!(
                !is_forbidden_ip(IpAddr::V6(ip.to_ipv6_mapped())),
                "mapped {ip}"
            );
        }
    }

    #[test]
    fn forbidden_ipv6_ranges_are_refused() {
        for s in [
            "::1",
            "::", // loopback, unspecified
            "fe80::1",
            "febf:ffff::1", // link-local
            "fd00:ec2::254",
            "fc00::1",
            "fdff:ffff::1", // ULA incl. AWS metadata
            "fec0::1",      // site-local
            "ff02::1",
            "ff05::1:3",
            "ff0e::1", // multicast
            "2001:db8::1",
            "2001:db8:ffff::1",
            "3fff::1",
            "3fff:fff::1", // documentation
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1", // mapped
            "::127.0.0.1",
            "::10.1.2.3", // compatible
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1", // NAT64
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1", // 6to4
            "100::1",           // discard-only
        ] {
            assert!(
                is_forbidden_ip(IpAddr::V6(v6(s))),
                "{s} should be forbidden"
            );
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for s in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "fe7f::1",
            "fbff::1",
            "2001:db9::1",
            "3fff:1000::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_forbidden_ip(IpAddr::V6(v6(s))), "{s} should be allowed");
        }
    }

    proptest! {
        #[test]
        fn an_ipv4_mapped_address_is_judged_like_its_ipv4_address(bits in any::<u32>()) {
            let ip = Ipv4Addr::from(bits);
            prop_assert_eq!(
                is_forbidden_ip(IpAddr::V4(ip)),
                is_forbidden_ip(IpAddr::V6(ip.to_ipv6_mapped()))
            );
            prop_assert_eq!(
                is_forbidden_ip(IpAddr::V4(ip)),
                is_forbidden_ip(IpAddr::V6(ip.to_ipv6_compatible()))
            );
        }
    }

    // -- check_url ------------------------------------------------------------

    #[test]
    fn a_public_https_url_is_accepted() {
        let url = check_url("https://hooks.example.com/flowlet?x=1", true, false).unwrap();
        assert_eq!(url.host_str(), Some("hooks.example.com"));
        check_url("https://8.8.8.8:8443/hook", true, false).unwrap();
        check_url("https://[2606:4700:4700::1111]/hook", true, false).unwrap();
    }

    #[test]
    fn plain_http_is_accepted_only_when_https_is_not_required() {
        check_url("http://hooks.example.com/", false, false).unwrap();
        assert!(matches!(
            check_url("http://hooks.example.com/", true, false),
            Err(WebhookError::HttpsRequired)
        ));
    }

    #[test]
    fn schemes_other_than_http_and_https_are_refused() {
        for raw in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "mailto:a@example.com",
            "gopher://example.com/",
        ] {
            assert!(
                matches!(
                    check_url(raw, false, false),
                    Err(WebhookError::UnsupportedScheme { .. })
                ),
                "{raw}"
            );
        }
    }

    #[test]
    fn relative_and_hostless_urls_are_refused() {
        for raw in [
            "/hook",
            "hooks.example.com/hook",
            "",
            "https://",
            "https:///",
        ] {
            assert!(
                matches!(
                    check_url(raw, false, false),
                    Err(WebhookError::InvalidUrl(_) | WebhookError::MissingHost)
                ),
                "{raw}"
            );
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        for raw in [
            "https://user:hunter2@example.com/",
            "https://user@example.com/",
            "https://:hunter2@example.com/",
        ] {
            let err = check_url(raw, true, false).unwrap_err();
            assert!(matches!(err, WebhookError::CredentialsInUrl), "{raw}");
            assert!(!format!("{err} {err:?}").contains("hunter2"));
        }
    }

    #[test]
    fn urls_longer_than_2048_characters_are_refused() {
        let base = "https://example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        check_url(&fits, true, false).unwrap();
        let too_long = format!("{fits}a");
        assert!(matches!(
            check_url(&too_long, true, false),
            Err(WebhookError::UrlTooLong { len: 2049 })
        ));
    }

    #[test]
    fn forbidden_ip_literals_are_refused_in_any_notation_unless_private_is_allowed() {
        for raw in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1:8080/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
        ] {
            let err = check_url(raw, false, false).unwrap_err();
            assert!(
                matches!(err, WebhookError::ForbiddenAddress { .. }),
                "{raw}: {err}"
            );
            check_url(raw, false, true).unwrap();
        }
    }

    #[test]
    fn url_errors_name_the_host_but_not_the_path_or_query() {
        let err =
            check_url("http://10.0.0.1/hooks/SECRET-TOKEN?key=abc", false, false).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("10.0.0.1"), "{shown}");
        assert!(
            !shown.contains("SECRET-TOKEN") && !shown.contains("abc"),
            "{shown}"
        );
    }

    // -- GuardedResolver ------------------------------------------------------

    #[tokio::test]
    async fn the_guarded_resolver_refuses_localhost_unless_private_is_allowed() {
        let refused = GuardedResolver::new(false)
            .resolve(Name::from_str("localhost").unwrap())
            .await;
        let Err(err) = refused else {
            panic!("localhost resolved although private addresses are forbidden");
        };
        assert_eq!(
            err.to_string(),
            "localhost resolves only to addresses webhooks may not reach"
        );

        let allowed = GuardedResolver::new(true)
            .resolve(Name::from_str("localhost").unwrap())
            .await;
        let Ok(addrs) = allowed else {
            panic!("localhost did not resolve with private addresses allowed");
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn the_guarded_resolver_reports_names_that_do_not_resolve() {
        let result = GuardedResolver::new(false)
            .resolve(Name::from_str("does-not-exist.invalid").unwrap())
            .await;
        let Err(err) = result else {
            panic!(".invalid resolved");
        };
        assert!(err.to_string().contains("does-not-exist.invalid"), "{err}");
    }
}
