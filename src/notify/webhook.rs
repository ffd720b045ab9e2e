//! The pure parts of webhook delivery: endpoint secrets, signatures, event
//! filters, the retry schedule and the guards that keep deliveries off
//! internal networks.
//!
//! Signatures follow the [Standard Webhooks] scheme so partners can verify
//! them with any off-the-shelf library: the signed content is
//! `{msg_id}.{timestamp}.{body}`, the signature is base64 HMAC-SHA256 keyed
//! with the decoded `whsec_` secret, and the `webhook-signature` header holds
//! `v1,<sig>` once per active key (several during secret rotation).
//!
//! Webhook URLs are chosen by partners, so every delivery is a potential
//! server-side request forgery: [`check_url`] refuses IP literals that point
//! inside our network, and [`GuardedResolver`] (installed by [`http_client`])
//! drops such addresses from DNS answers, because reqwest only consults the
//! resolver for host names.
//!
//! Secrets never appear in `Debug` output or in errors: they are held in
//! [`SecretString`] and [`SigningKey`] prints as redacted.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Prefix of every endpoint secret, as in the Standard Webhooks spec, so a
/// secret is recognisable (and greppable by secret scanners) wherever it is
/// pasted.
pub const SECRET_PREFIX: &str = "whsec_";

/// Number of random bytes in a generated secret: 256 bits, the HMAC-SHA256
/// output size, so the key is never the weak link.
pub const SECRET_BYTES: usize = 32;

/// Shortest decoded key [`SigningKey::parse`] accepts (192 bits), the floor
/// the Standard Webhooks reference libraries use, so imported secrets from
/// other providers still work while trivially guessable ones do not.
pub const MIN_SECRET_BYTES: usize = 24;

/// Header carrying the message id, unchanged across retries, so receivers can
/// deduplicate deliveries.
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";

/// Header carrying the signing time in integer seconds since the Unix epoch,
/// so receivers can reject replays of old messages.
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";

/// Header carrying the space-separated `v1,<base64>` signatures, so receivers
/// can authenticate the payload.
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// User agent of every delivery, so partners can recognise (and allow-list)
/// our traffic.
pub const USER_AGENT: &str = "Flowlet-Webhooks/1";

/// Total number of delivery attempts before a message is given up, so the
/// outbox knows when to mark a message as failed.
pub const MAX_ATTEMPTS: u32 = 8;

/// Longest event-type filter [`validate_filter`] accepts, so filters stay
/// cheap to store and match.
pub const MAX_FILTER_LEN: usize = 100;

/// Longest endpoint URL [`check_url`] accepts, so a partner cannot make us
/// store or log arbitrarily large strings.
pub const MAX_URL_LEN: usize = 2048;

/// Waits between attempts, in seconds: entry `n` is the wait after the
/// `n + 1`-th failed attempt. `MAX_ATTEMPTS - 1` entries.
const RETRY_SCHEDULE_SECS: [u64; 7] =
    [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

/// Standard base64 that decodes with or without padding: secrets from other
/// providers are not always padded, and the padding carries no information.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Everything that can go wrong in this module, so callers can tell a
/// partner's bad input (secret, filter, URL) from an environment failure.
///
/// No variant ever carries a secret or a full URL (paths and queries of
/// webhook URLs often embed tokens); URL errors name at most the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The operating system's random source failed; no secret was made.
    #[error("could not read random bytes for a webhook secret: {0}")]
    Random(getrandom::Error),
    /// The secret does not start with `whsec_`.
    #[error("webhook secret must start with \"whsec_\"")]
    SecretPrefix,
    /// The part after `whsec_` is not standard base64 (the decoder's detail is
    /// dropped on purpose: it quotes bytes of the secret).
    #[error("webhook secret is not valid base64 after \"whsec_\"")]
    SecretEncoding,
    /// The decoded secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("webhook secret decodes to {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    SecretTooShort {
        /// Decoded length in bytes.
        len: usize,
    },
    /// The event-type filter is malformed.
    #[error("invalid event-type filter: {0}")]
    InvalidFilter(&'static str),
    /// The endpoint URL is longer than [`MAX_URL_LEN`].
    #[error("webhook URL is {len} characters long; at most {MAX_URL_LEN} are allowed")]
    UrlTooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The endpoint URL is not an absolute URL.
    #[error("webhook URL is not a valid absolute URL: {0}")]
    InvalidUrl(url::ParseError),
    /// The endpoint URL uses a scheme other than `http` or `https`.
    #[error("webhook URL scheme \"{scheme}\" is not supported; use https")]
    UnsupportedScheme {
        /// The offending scheme.
        scheme: String,
    },
    /// The endpoint URL is plain `http` where `https` is required.
    #[error("webhook URL must use https")]
    HttpsRequired,
    /// The endpoint URL embeds a user name or password.
    #[error("webhook URL must not contain credentials (they would leak into logs)")]
    CredentialsInUrl,
    /// The endpoint URL has no host.
    #[error("webhook URL has no host")]
    MissingHost,
    /// The endpoint URL's host is an IP address webhooks may not reach.
    #[error("webhook URL points to {ip}, an address webhooks may not reach")]
    ForbiddenAddress {
        /// The refused address.
        ip: IpAddr,
    },
    /// Every address the host resolved to is one webhooks may not reach.
    #[error("{host} resolves only to addresses webhooks may not reach")]
    ForbiddenHost {
        /// The host name that was resolved.
        host: String,
    },
    /// The host resolved to no address at all.
    #[error("{host} did not resolve to any address")]
    NoAddresses {
        /// The host name that was resolved.
        host: String,
    },
    /// Name resolution failed.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host name that was resolved.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("could not configure TLS for webhook delivery: {0}")]
    Tls(rustls::Error),
    /// reqwest refused the client configuration.
    #[error("could not build the webhook HTTP client: {0}")]
    HttpClient(reqwest::Error),
}

// ---------------------------------------------------------------------------
// Secrets and signing
// ---------------------------------------------------------------------------

/// Creates a new endpoint secret, `whsec_` + padded standard base64 of 32
/// random bytes, so every endpoint gets an unguessable key in the format
/// Standard Webhooks libraries accept.
///
/// # Errors
/// [`WebhookError::Random`] if the operating system's random source fails.
pub fn generate_secret() -> Result<SecretString, WebhookError> {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    getrandom::fill(bytes.as_mut_slice()).map_err(WebhookError::Random)?;
    // Exact capacity (6 + 44), so turning the String into the secret's
    // Box<str> does not reallocate and leave an unzeroed copy behind.
    let mut encoded = String::with_capacity(SECRET_PREFIX.len() + 44);
    encoded.push_str(SECRET_PREFIX);
    SECRET_BASE64.encode_string(bytes.as_slice(), &mut encoded);
    Ok(SecretString::from(encoded))
}

/// A parsed endpoint secret, ready to sign with, so the `whsec_` string is
/// decoded and checked once rather than at every delivery.
///
/// Holds the HMAC state already keyed with the secret; `Debug` prints
/// `SigningKey([REDACTED])`.
#[derive(Clone)]
pub struct SigningKey {
    mac: HmacSha256,
}

impl SigningKey {
    /// Parses a `whsec_<base64>` secret, so malformed or weak secrets are
    /// refused when they are stored, not when a delivery is signed.
    ///
    /// Base64 padding is optional on input.
    ///
    /// # Errors
    /// [`WebhookError::SecretPrefix`], [`WebhookError::SecretEncoding`] or
    /// [`WebhookError::SecretTooShort`]; none of them quote the secret.
    pub fn parse(secret: &SecretString) -> Result<Self, WebhookError> {
        let encoded = secret
            .expose_secret()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix)?;
        let key = Zeroizing::new(
            SECRET_BASE64
                .decode(encoded)
                .map_err(|_| WebhookError::SecretEncoding)?,
        );
        if key.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::SecretTooShort { len: key.len() });
        }
        // HMAC accepts keys of any length; the error arm is unreachable but
        // keeps this function free of panics.
        let mac = HmacSha256::new_from_slice(&key).map_err(|_| WebhookError::SecretEncoding)?;
        Ok(Self { mac })
    }

    /// One `v1,<base64>` signature over the already-joined parts.
    fn signature(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let mut out = String::from("v1,");
        SECRET_BASE64.encode_string(mac.finalize().into_bytes(), &mut out);
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// Computes the `webhook-signature` header value: one `v1,<base64>` per key,
/// separated by single spaces, so receivers keep verifying while an endpoint
/// rotates its secret.
///
/// `timestamp` is integer seconds since the Unix epoch and must be the value
/// sent in `webhook-timestamp`. With no keys the result is empty; callers
/// must not deliver unsigned messages.
#[must_use]
pub fn sign(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    keys.iter()
        .map(|key| key.signature(msg_id, &timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks header values of one delivery, so the sender
/// sets exactly what was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// Value of [`HEADER_WEBHOOK_ID`].
    pub id: String,
    /// Value of [`HEADER_WEBHOOK_TIMESTAMP`].
    pub timestamp: String,
    /// Value of [`HEADER_WEBHOOK_SIGNATURE`].
    pub signature: String,
}

/// Builds the headers of one delivery, so id, timestamp and signature cannot
/// disagree with each other.
#[must_use]
pub fn headers(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> WebhookHeaders {
    WebhookHeaders {
        id: msg_id.to_owned(),
        timestamp: timestamp.to_string(),
        signature: sign(keys, msg_id, timestamp, body),
    }
}

// ---------------------------------------------------------------------------
// Event-type filters
// ---------------------------------------------------------------------------

/// Tells whether an endpoint subscribed with `filter` receives `event_type`,
/// so endpoints can subscribe to a whole family of events.
///
/// `*` matches everything; `payment.*` matches `payment.created` and
/// `payment.refund.created` but neither `payment` nor `payments.created`;
/// anything else must match exactly. Expects a filter that passed
/// [`validate_filter`].
#[must_use]
pub fn filter_matches(filter: &str, event_type: &str) -> bool {
    if filter == "*" {
        return true;
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => {
            !prefix.is_empty()
                && event_type
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|rest| !rest.is_empty())
        }
        None => filter == event_type,
    }
}

/// Checks a filter before it is stored, so only filters with a clear meaning
/// reach [`filter_matches`]: `*`, or dot-separated `[a-z0-9_]+` segments,
/// optionally ending in `.*`, at most [`MAX_FILTER_LEN`] characters.
///
/// # Errors
/// [`WebhookError::InvalidFilter`] saying what is wrong.
pub fn validate_filter(filter: &str) -> Result<(), WebhookError> {
    if filter.is_empty() {
        return Err(WebhookError::InvalidFilter("it is empty"));
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(WebhookError::InvalidFilter(
            "it is longer than 100 characters",
        ));
    }
    if filter == "*" {
        return Ok(());
    }
    let segments = filter.strip_suffix(".*").unwrap_or(filter);
    for segment in segments.split('.') {
        if segment.is_empty() {
            return Err(WebhookError::InvalidFilter("it has an empty segment"));
        }
        if segment == "*" {
            return Err(WebhookError::InvalidFilter(
                "a wildcard may only stand alone or end the filter as \".*\"",
            ));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(WebhookError::InvalidFilter(
                "segments may only contain a-z, 0-9 and _",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Retry schedule
// ---------------------------------------------------------------------------

/// How long to wait before the next attempt, given how many attempts have
/// failed so far, so failing endpoints are retried for about a day without
/// being hammered: ~5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; `None` after
/// [`MAX_ATTEMPTS`] failures (give up).
///
/// Each delay is spread by up to ±10 % so retries of many messages to one
/// endpoint do not arrive in lock-step. The spread is derived from
/// `jitter_seed` (e.g. a hash of the message id) and `attempts_made`, so it
/// is deterministic and testable. `attempts_made == 0` (nothing tried yet)
/// gives a zero delay.
#[must_use]
pub fn next_attempt_delay(attempts_made: u32, jitter_seed: u64) -> Option<Duration> {
    let Some(index) = attempts_made.checked_sub(1) else {
        return Some(Duration::ZERO);
    };
    let base_secs = RETRY_SCHEDULE_SECS.get(usize::try_from(index).ok()?)?;
    let base_ms = base_secs.checked_mul(1000)?;
    let spread = base_ms / 10;
    let offset = splitmix64(jitter_seed ^ u64::from(attempts_made)) % (2 * spread + 1);
    // spread <= base_ms and offset <= 2 * spread: never negative, no overflow.
    Some(Duration::from_millis(base_ms - spread + offset))
}

/// SplitMix64 finaliser: turns nearby seeds into unrelated values.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// SSRF guard
// ---------------------------------------------------------------------------

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
    /// Creates the resolver, so [`http_client`] (or a custom client) can
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

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// Builds the client every delivery goes through, so the SSRF and TLS policy
/// lives in one place.
///
/// * redirects are not followed: a 3xx is a failed delivery (following one
///   would let a partner bounce us to an internal address);
/// * `timeout` bounds the whole request, connect to last body byte;
/// * user agent [`USER_AGENT`];
/// * DNS through [`GuardedResolver`] with `allow_private`;
/// * no proxies, not even from `HTTP(S)_PROXY`, so the resolver is never
///   bypassed;
/// * HTTP/1.1 only;
/// * TLS 1.2/1.3 via rustls with the ring provider and the Mozilla roots of
///   `webpki-roots` (no aws-lc-rs, no platform verifier).
///
/// Callers must still pass every URL through [`check_url`] first: IP
/// literals are not resolved, so only `check_url` stops them.
///
/// # Errors
/// [`WebhookError::Tls`] or [`WebhookError::HttpClient`] if the
/// configuration is refused.
pub fn http_client(
    timeout: Duration,
    allow_private: bool,
) -> Result<reqwest::Client, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .dns_resolver(GuardedResolver::new(allow_private))
        .no_proxy()
        .http1_only()
        .build()
        .map_err(WebhookError::HttpClient)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    use proptest::prelude::*;
    use tokio::net::{TcpListener, TcpStream};

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(&SecretString::from(secret)).unwrap()
    }

    fn parse_err(secret: &str) -> WebhookError {
        SigningKey::parse(&SecretString::from(secret)).unwrap_err()
    }

    // -- An independent verifier, written from the Standard Webhooks spec ----

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE_SECS: i64 = 5 * 60;

    #[derive(Debug, PartialEq, Eq)]
    enum Rejected {
        BadTimestamp,
        TooOld,
        TooNew,
        BadSecret,
        NoMatchingSignature,
    }

    /// Verifies like a receiver would: the raw header strings, the secret as
    /// the partner stored it, and the receiver's clock.
    fn verify(
        secret: &str,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejected> {
        let sent: i64 = timestamp.parse().map_err(|_| Rejected::BadTimestamp)?;
        if now - sent > TOLERANCE_SECS {
            return Err(Rejected::TooOld);
        }
        if sent - now > TOLERANCE_SECS {
            return Err(Rejected::TooNew);
        }
        let raw_key = secret.strip_prefix("whsec_").ok_or(Rejected::BadSecret)?;
        let raw_key = base64::engine::general_purpose::STANDARD
            .decode(raw_key)
            .map_err(|_| Rejected::BadSecret)?;
        let mut expected = Hmac::<Sha256>::new_from_slice(&raw_key).unwrap();
        expected.update(format!("{id}.{timestamp}.").as_bytes());
        expected.update(body);
        for candidate in signature.split(' ') {
            let Some(("v1", encoded)) = candidate.split_once(',') else {
                continue;
            };
            let Ok(candidate) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            // verify_slice compares in constant time.
            if expected.clone().verify_slice(&candidate).is_ok() {
                return Ok(());
            }
        }
        Err(Rejected::NoMatchingSignature)
    }

    fn verify_headers(
        secret: &str,
        h: &WebhookHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejected> {
        verify(secret, &h.id, &h.timestamp, &h.signature, body, now)
    }

    // -- Secrets --------------------------------------------------------------

    #[test]
    fn a_generated_secret_is_whsec_and_padded_base64_of_32_bytes() {
        let secret = generate_secret().unwrap();
        let text = secret.expose_secret();
        let encoded = text.strip_prefix("whsec_").unwrap();
        assert_eq!(encoded.len(), 44);
        assert!(encoded.ends_with('='));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn two_generated_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn a_generated_secret_parses_and_signs_verifiably() {
        let secret = generate_secret().unwrap();
        let h = headers(
            &[SigningKey::parse(&secret).unwrap()],
            "msg_1",
            1_700_000_000,
            b"{}",
        );
        assert_eq!(
            verify_headers(secret.expose_secret(), &h, b"{}", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_refused() {
        assert!(matches!(
            parse_err("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            WebhookError::SecretPrefix
        ));
        assert!(matches!(parse_err(""), WebhookError::SecretPrefix));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_without_quoting_it() {
        let err = parse_err("whsec_not-base64!!-SECRETPART-0123456789");
        assert!(matches!(err, WebhookError::SecretEncoding));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRETPART"), "{shown}");
        assert!(!shown.contains("45"), "decoder detail leaked: {shown}");
    }

    #[test]
    fn a_secret_shorter_than_24_bytes_is_refused() {
        let short = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 23])
        );
        assert!(matches!(
            parse_err(&short),
            WebhookError::SecretTooShort { len: 23 }
        ));
        let exact = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 24])
        );
        SigningKey::parse(&SecretString::from(exact)).unwrap();
    }

    #[test]
    fn unpadded_base64_secrets_are_accepted() {
        let padded = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        let unpadded = padded.trim_end_matches('=');
        assert_ne!(padded, unpadded);
        assert_eq!(
            sign(&[key(&padded)], "m", 1, b"x"),
            sign(&[key(unpadded)], "m", 1, b"x")
        );
    }

    #[test]
    fn a_signing_key_never_shows_its_secret_in_debug() {
        let shown = format!("{:?}", key(SPEC_SECRET));
        assert_eq!(shown, "SigningKey([REDACTED])");
        assert!(!format!("{:?}", SecretString::from(SPEC_SECRET)).contains("MfKQ"));
    }

    // -- Signing --------------------------------------------------------------

    #[test]
    fn the_standard_webhooks_test_vector_reproduces() {
        let signature = sign(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn the_independent_verifier_accepts_the_spec_vector() {
        let verified = verify(
            SPEC_SECRET,
            SPEC_MSG_ID,
            "1614265330",
            SPEC_SIGNATURE,
            SPEC_PAYLOAD,
            SPEC_TIMESTAMP,
        );
        assert_eq!(verified, Ok(()));
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature_under_the_standard_names() {
        assert_eq!(HEADER_WEBHOOK_ID, "webhook-id");
        assert_eq!(HEADER_WEBHOOK_TIMESTAMP, "webhook-timestamp");
        assert_eq!(HEADER_WEBHOOK_SIGNATURE, "webhook-signature");
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        assert_eq!(
            h,
            WebhookHeaders {
                id: SPEC_MSG_ID.to_owned(),
                timestamp: "1614265330".to_owned(),
                signature: SPEC_SIGNATURE.to_owned(),
            }
        );
    }

    #[test]
    fn two_keys_give_two_space_separated_signatures_that_each_verify() {
        let old = generate_secret().unwrap();
        let new = generate_secret().unwrap();
        let keys = [
            SigningKey::parse(&old).unwrap(),
            SigningKey::parse(&new).unwrap(),
        ];
        let h = headers(&keys, "msg_rot", 1_700_000_000, b"{\"a\":1}");
        let parts: Vec<&str> = h.signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_eq!(
            verify_headers(old.expose_secret(), &h, b"{\"a\":1}", 1_700_000_000),
            Ok(())
        );
        assert_eq!(
            verify_headers(new.expose_secret(), &h, b"{\"a\":1}", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn a_signature_fails_verification_with_a_wrong_key() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let other = generate_secret().unwrap();
        assert_eq!(
            verify_headers(other.expose_secret(), &h, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
    }

    #[test]
    fn a_tampered_body_id_or_timestamp_fails_verification() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let tampered_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify_headers(SPEC_SECRET, &h, tampered_body, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
        let mut other_id = h.clone();
        other_id.id.push('x');
        assert_eq!(
            verify_headers(SPEC_SECRET, &other_id, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
        let mut other_time = h.clone();
        other_time.timestamp = "1614265331".to_owned();
        assert_eq!(
            verify_headers(SPEC_SECRET, &other_time, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_more_than_five_minutes_away_from_now_are_rejected() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let ok = |now| verify_headers(SPEC_SECRET, &h, SPEC_PAYLOAD, now);
        assert_eq!(ok(SPEC_TIMESTAMP + 300), Ok(()));
        assert_eq!(ok(SPEC_TIMESTAMP - 300), Ok(()));
        assert_eq!(ok(SPEC_TIMESTAMP + 301), Err(Rejected::TooOld));
        assert_eq!(ok(SPEC_TIMESTAMP - 301), Err(Rejected::TooNew));
    }

    #[test]
    fn signing_with_no_keys_gives_an_empty_header() {
        assert_eq!(sign(&[], "m", 1, b""), "");
    }

    proptest! {
        #[test]
        fn any_body_and_id_signed_now_verifies_and_any_flipped_byte_does_not(
            id in "[a-zA-Z0-9_]{1,40}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            timestamp in 0i64..4_000_000_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let h = headers(&[key(SPEC_SECRET)], &id, timestamp, &body);
            prop_assert_eq!(verify_headers(SPEC_SECRET, &h, &body, timestamp), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                let at = flip.index(tampered.len());
                tampered[at] ^= 0x01;
                prop_assert_eq!(
                    verify_headers(SPEC_SECRET, &h, &tampered, timestamp),
                    Err(Rejected::NoMatchingSignature)
                );
            }
        }
    }

    // -- Filters --------------------------------------------------------------

    #[test]
    fn a_lone_star_matches_every_event_type() {
        for event in ["payment.created", "card.frozen", "x"] {
            assert!(filter_matches("*", event));
        }
    }

    #[test]
    fn an_exact_filter_matches_only_that_event_type() {
        assert!(filter_matches("payment.created", "payment.created"));
        assert!(!filter_matches("payment.created", "payment.created.v2"));
        assert!(!filter_matches("payment.created", "payment"));
        assert!(!filter_matches("payment", "payment.created"));
    }

    #[test]
    fn a_prefix_wildcard_matches_descendants_but_not_the_prefix_or_lookalikes() {
        assert!(filter_matches("payment.*", "payment.created"));
        assert!(filter_matches("payment.*", "payment.refund.created"));
        assert!(!filter_matches("payment.*", "payment"));
        assert!(!filter_matches("payment.*", "payment."));
        assert!(!filter_matches("payment.*", "payments.created"));
        assert!(!filter_matches("payment.*", "card.payment.created"));
        assert!(filter_matches("payment.refund.*", "payment.refund.created"));
        assert!(!filter_matches("payment.refund.*", "payment.created"));
    }

    #[test]
    fn well_formed_filters_are_accepted() {
        for filter in [
            "*",
            "payment",
            "payment.created",
            "payment.*",
            "a_1.b2.*",
            "card_3ds.challenge_v2",
        ] {
            assert!(validate_filter(filter).is_ok(), "{filter}");
        }
        let longest = format!("{}.*", "a".repeat(MAX_FILTER_LEN - 2));
        assert!(validate_filter(&longest).is_ok());
    }

    #[test]
    fn malformed_filters_are_refused() {
        for filter in [
            "",
            ".*",
            "*.*",
            "**",
            "payment.",
            ".payment",
            "payment..created",
            "Payment.created",
            "payment.*.created",
            "payment*",
            "payment.cre-ated",
            "payment created",
            "payment.**",
            "*.created",
            "paymént",
        ] {
            assert!(
                matches!(validate_filter(filter), Err(WebhookError::InvalidFilter(_))),
                "{filter:?} was accepted"
            );
        }
    }

    #[test]
    fn filters_longer_than_100_characters_are_refused() {
        assert!(validate_filter(&"a".repeat(100)).is_ok());
        assert!(validate_filter(&"a".repeat(101)).is_err());
    }

    proptest! {
        #[test]
        fn a_valid_prefix_filter_matches_exactly_the_event_types_below_it(
            prefix in "[a-z0-9_]{1,8}(\\.[a-z0-9_]{1,8}){0,3}",
            event in "[a-z0-9_]{1,8}(\\.[a-z0-9_]{1,8}){0,4}",
        ) {
            let filter = format!("{prefix}.*");
            prop_assert!(validate_filter(&filter).is_ok());
            prop_assert!(validate_filter(&prefix).is_ok());
            let below = format!("{prefix}.{event}");
            prop_assert!(filter_matches(&filter, &below));
            prop_assert!(!filter_matches(&filter, &prefix));
            let expected = event.starts_with(&format!("{prefix}.")) && event.len() > prefix.len() + 1;
            prop_assert_eq!(filter_matches(&filter, &event), expected);
        }
    }

    // -- Retry schedule -------------------------------------------------------

    const NOMINAL_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

    fn within_ten_percent(delay: Duration, nominal_secs: u64) -> bool {
        let nominal = Duration::from_secs(nominal_secs);
        delay >= nominal - nominal / 10 && delay <= nominal + nominal / 10
    }

    #[test]
    fn the_schedule_is_5s_5m_30m_2h_5h_10h_10h_within_ten_percent() {
        for seed in [0, 1, 42, u64::MAX] {
            for (made, nominal) in (1u32..).zip(NOMINAL_SECS) {
                let delay = next_attempt_delay(made, seed).unwrap();
                assert!(
                    within_ten_percent(delay, nominal),
                    "attempt {made}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn delivery_is_given_up_after_the_eighth_failed_attempt() {
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(
            usize::try_from(MAX_ATTEMPTS - 1).unwrap(),
            RETRY_SCHEDULE_SECS.len()
        );
        assert!(next_attempt_delay(7, 3).is_some());
        assert_eq!(next_attempt_delay(8, 3), None);
        assert_eq!(next_attempt_delay(9, 3), None);
        assert_eq!(next_attempt_delay(u32::MAX, 3), None);
    }

    #[test]
    fn a_message_not_yet_attempted_goes_out_immediately() {
        assert_eq!(next_attempt_delay(0, 99), Some(Duration::ZERO));
    }

    #[test]
    fn jitter_is_deterministic_per_seed_and_varies_across_seeds() {
        assert_eq!(next_attempt_delay(3, 7), next_attempt_delay(3, 7));
        let distinct: std::collections::BTreeSet<Duration> = (0..64)
            .filter_map(|seed| next_attempt_delay(3, seed))
            .collect();
        assert!(
            distinct.len() > 32,
            "only {} distinct delays",
            distinct.len()
        );
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_ten_percent_of_its_nominal_value(made in 1u32..8, seed in any::<u64>()) {
            let nominal = NOMINAL_SECS[usize::try_from(made - 1).unwrap()];
            let delay = next_attempt_delay(made, seed).unwrap();
            prop_assert!(within_ten_percent(delay, nominal), "{:?}", delay);
        }
    }

    // -- SSRF guard -----------------------------------------------------------

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

    // -- HTTP client ----------------------------------------------------------

    /// Reads one HTTP/1.1 request (head plus Content-Length body).
    async fn read_request(stream: &TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if request_complete(&buf) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        String::from_utf8(buf).unwrap()
    }

    fn request_complete(buf: &[u8]) -> bool {
        let text = String::from_utf8_lossy(buf);
        let Some(head_end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..head_end]
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, value)| value.trim().parse::<usize>().unwrap());
        buf.len() >= head_end + 4 + length
    }

    async fn write_all(stream: &TcpStream, mut data: &[u8]) {
        while !data.is_empty() {
            stream.writable().await.unwrap();
            match stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// Serves one connection with `response` and returns the request it got.
    async fn respond_once(listener: TcpListener, response: &'static str) -> String {
        let (stream, _) = listener.accept().await.unwrap();
        let request = read_request(&stream).await;
        write_all(&stream, response.as_bytes()).await;
        request
    }

    async fn local_listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    const OK_RESPONSE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[test]
    fn the_client_builds_with_and_without_private_addresses() {
        http_client(Duration::from_secs(10), false).unwrap();
        http_client(Duration::from_secs(10), true).unwrap();
    }

    #[test]
    fn a_request_to_a_forbidden_ip_literal_is_stopped_by_check_url() {
        let err = check_url("http://127.0.0.1:8080/hook", false, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook URL points to 127.0.0.1, an address webhooks may not reach"
        );
    }

    #[tokio::test]
    async fn a_signed_post_reaches_a_local_receiver_when_private_addresses_are_allowed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(listener, OK_RESPONSE));

        let url = check_url(&format!("http://127.0.0.1:{port}/hook"), false, true).unwrap();
        let body = br#"{"type":"payment.created"}"#;
        let h = headers(&[key(SPEC_SECRET)], "msg_local", 1_700_000_000, body);
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client
            .post(url)
            .header(HEADER_WEBHOOK_ID, &h.id)
            .header(HEADER_WEBHOOK_TIMESTAMP, &h.timestamp)
            .header(HEADER_WEBHOOK_SIGNATURE, &h.signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");

        let request = server.await.unwrap();
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(
            lower.contains("user-agent: flowlet-webhooks/1\r\n"),
            "{request}"
        );
        assert!(lower.contains(&format!(
            "webhook-signature: {}\r\n",
            h.signature.to_ascii_lowercase()
        )));
        assert!(
            request.ends_with(r#"{"type":"payment.created"}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_local_receiver_is_reached_by_name_through_the_resolver_when_allowed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(listener, OK_RESPONSE));
        let url = check_url(&format!("http://localhost:{port}/"), false, true).unwrap();
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client.post(url).body("{}").send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_redirect_is_returned_as_is_and_not_followed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(
            listener,
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ));
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client
            .post(format!("http://127.0.0.1:{port}/"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_client_will_not_connect_to_localhost_when_private_addresses_are_forbidden() {
        let (_listener, port) = local_listener().await;
        // check_url cannot know where a name points; the resolver must stop it.
        let url = check_url(&format!("http://localhost:{port}/"), false, false).unwrap();
        let client = http_client(Duration::from_secs(10), false).unwrap();
        let err = client.post(url).body("{}").send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert!(
            chain
                .iter()
                .any(|m| m.contains("localhost resolves only to addresses webhooks may not reach")),
            "{chain:?}"
        );
    }
}
