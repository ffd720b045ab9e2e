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
//! [`SecretString`](secrecy::SecretString) and [`SigningKey`] prints as redacted.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
//!
//! This file holds the constants and the error; one file per part: [`signing`] (secrets and
//! signatures), [`filters`] (event-type filters), [`retry`] (the retry schedule), [`guard`]
//! (the SSRF guard: forbidden addresses, the guarded resolver, URL checks) and [`client`]
//! (the delivery HTTP client).

mod client;
mod filters;
mod guard;
mod retry;
mod signing;

pub use client::*;
pub use filters::*;
pub use guard::*;
pub use retry::*;
pub use signing::*;

use std::net::IpAddr;

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
