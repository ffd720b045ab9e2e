//! Outgoing email for Flowlet.
//!
//! Every module that needs to mail a user (password-reset tokens today,
//! receipts and KYC decisions later) depends on the [`Mailer`] trait, so the
//! service owns exactly one sender, built once by [`mailer`] from
//! configuration:
//!
//! * `smtp.url` set: [`SmtpMailer`] speaks SMTP through lettre (TLS via
//!   rustls with the Mozilla root store from `webpki-roots`).
//! * `smtp.url` unset (a developer laptop, tests): [`FileMailer`] writes one
//!   `.eml` file per message under a directory (default
//!   [`DEFAULT_MAIL_DIR`]), which the integration tests read back
//!   (`tests/api/mailbox.rs`).
//!
//! Message bodies carry one-time secrets and SMTP URLs carry passwords, so
//! neither ever appears in `Debug` output, errors or logs.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Boxed, `Send` future returned by [`Mailer::send`], so the trait stays
/// object-safe and one `Arc<dyn Mailer>` can be shared by every module.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Upper bound on one SMTP delivery (connect, TLS, AUTH and DATA), so a
/// stalled mail server cannot hold a request handler forever.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One message to one recipient, so callers never touch MIME details.
///
/// `text` is required (every client can show it); `html` is optional and,
/// when present, is sent as the `multipart/alternative` HTML rendering.
/// `Debug` prints only `to` and `subject`, because bodies carry one-time
/// tokens that must not end up in logs.
#[derive(Clone)]
pub struct Email {
    /// Recipient mailbox: `user@example.com` or `Name <user@example.com>`.
    pub to: String,
    /// Subject line; non-ASCII is encoded by lettre (RFC 2047).
    pub subject: String,
    /// Plain-text body; line endings are sent as CRLF.
    pub text: String,
    /// Optional HTML alternative of `text`.
    pub html: Option<String>,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why mail could not be configured or sent, so callers can tell operator
/// mistakes from bad user input from delivery trouble.
///
/// Messages never contain an SMTP password or a message body.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail configuration (`smtp.url`, `smtp.from`, mail directory) is
    /// unusable; fix the configuration, retrying will not help.
    #[error("mail configuration error: {0}")]
    Config(String),
    /// The recipient is not a valid mailbox; nothing was sent.
    #[error("invalid recipient: {0}")]
    InvalidRecipient(String),
    /// The transport failed (network, TLS, SMTP rejection, timeout, disk).
    #[error("mail delivery failed: {0}")]
    Send(String),
}

/// The one sending interface every Flowlet module uses, so tests and local
/// runs can swap SMTP for files without touching callers.
pub trait Mailer: Send + Sync {
    /// Deliver `email`; resolves once the transport has accepted it.
    ///
    /// Must be awaited inside a Tokio runtime with timers enabled
    /// (`#[tokio::main]` is fine); otherwise it returns [`MailError::Send`].
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>>;

    /// "smtp" or "file", for /ready and logs.
    fn kind(&self) -> &'static str;
}

/// Lets structs holding an `Arc<dyn Mailer>` derive `Debug`; shows only the
/// kind, so no configuration detail can leak through it.
impl fmt::Debug for dyn Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailer({})", self.kind())
    }
}

/// Build the configured mailer once at startup, so every module shares it.
///
/// * `smtp_url: Some(url)` gives an [`SmtpMailer`] with
///   [`DEFAULT_SEND_TIMEOUT`]. Accepted URL forms (lettre's `from_url`):
///   - `smtp://user:pass@host:587?tls=required`: STARTTLS, must succeed.
///   - `smtps://user:pass@host:465`: implicit TLS from the first byte.
///   - `smtp://host:587?tls=opportunistic`: STARTTLS if offered, else plain.
///   - `smtp://localhost:1025`: plain text, no TLS at all, not even
///     opportunistic STARTTLS (for a dev catcher such as Mailpit).
///
///   Default ports: 25 for bare `smtp://`, 587 with `?tls=...`, 465 for
///   `smtps://`. Percent-encode reserved characters in the user and
///   password. An optional path (`smtp://host/ehlo.name`) sets the EHLO
///   name. Credentials on a URL that may run without TLS (`smtp://` without
///   `tls=required`) are rejected, because lettre would send them in clear.
/// * `smtp_url: None` gives a [`FileMailer`] writing into `mail_dir`
///   (created if missing).
///
/// `from` is an RFC 5322 mailbox such as
/// `"Flowlet <no-reply@flowlet.invalid>"`, parsed once here; an invalid one
/// is [`MailError::Config`] naming `smtp.from`.
pub fn mailer(
    smtp_url: Option<&str>,
    from: &str,
    mail_dir: &Path,
) -> Result<Arc<dyn Mailer>, MailError> {
    let from = parse_from(from)?;
    Ok(match smtp_url {
        Some(url) => Arc::new(SmtpMailer::with_from(url, from, DEFAULT_SEND_TIMEOUT)?),
        None => Arc::new(FileMailer::with_from(mail_dir, from)?),
    })
}

/// SMTP delivery through lettre's pooled async transport, for production.
///
/// The transport (and its connection pool, which needs a Tokio runtime to
/// spawn its cleanup task) is created on the first send, so constructing a
/// mailer outside a runtime is fine. `Debug` shows the URL with its
/// credentials replaced by `***`.
pub struct SmtpMailer {
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    /// `smtp.url` with userinfo replaced by `***`, for logs and errors.
    endpoint: String,
    /// Password forms (raw and percent-decoded) scrubbed from error text.
    secrets: Vec<String>,
    timeout: Duration,
}

impl SmtpMailer {
    /// An SMTP mailer with an explicit per-send `timeout` (the tests' short bounds; the
    /// product's comes from [`mailer`], with [`DEFAULT_SEND_TIMEOUT`]).
    #[cfg(test)]
    pub fn new(url: &str, from: &str, timeout: Duration) -> Result<Self, MailError> {
        Self::with_from(url, parse_from(from)?, timeout)
    }

    fn with_from(url: &str, from: Mailbox, timeout: Duration) -> Result<Self, MailError> {
        let parts = UrlParts::split(url);
        let endpoint = parts.redacted();
        let secrets = parts.secrets();
        if parts.password.is_some() && parts.may_run_without_tls() {
            return Err(MailError::Config(format!(
                "smtp.url {endpoint} carries credentials but may run without TLS; \
                 use smtps:// or add ?tls=required"
            )));
        }
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| {
                MailError::Config(scrub(
                    &format!("smtp.url {endpoint} is not usable: {e}"),
                    &secrets,
                ))
            })?
            .timeout(Some(timeout));
        tracing::info!(kind = "smtp", %endpoint, "mailer configured");
        Ok(Self {
            builder,
            transport: OnceLock::new(),
            from,
            endpoint,
            secrets,
            timeout,
        })
    }

    fn transport(&self) -> Result<&AsyncSmtpTransport<Tokio1Executor>, MailError> {
        require_runtime()?;
        Ok(self.transport.get_or_init(|| self.builder.clone().build()))
    }

    async fn deliver(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        let transport = self.transport()?;
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(MailError::Send(scrub(
                &format!("SMTP via {}: {e}", self.endpoint),
                &self.secrets,
            ))),
            Err(_elapsed) => Err(MailError::Send(format!(
                "SMTP via {} timed out after {:?}",
                self.endpoint, self.timeout
            ))),
        }
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move { log_outcome(self.kind(), self.deliver(email).await) })
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

/// Writes each message as an `.eml` file, for laptops and tests.
///
/// Files are named `<nanoseconds>-<sequence>-<uuid>.eml` so that, beyond
/// the modification time, their names also sort in sending order (the
/// integration tests read them back in that order).
pub struct FileMailer {
    dir: PathBuf,
    transport: AsyncFileTransport<Tokio1Executor>,
    from: Mailbox,
}

impl FileMailer {
    /// Build a file mailer writing into `dir`, creating it if missing, so a
    /// fresh checkout needs no setup.
    pub fn new(dir: &Path, from: &str) -> Result<Self, MailError> {
        Self::with_from(dir, parse_from(from)?)
    }

    fn with_from(dir: &Path, from: Mailbox) -> Result<Self, MailError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            MailError::Config(format!(
                "cannot create mail directory {}: {e}",
                dir.display()
            ))
        })?;
        tracing::info!(kind = "file", dir = %dir.display(), "mailer configured");
        Ok(Self {
            dir: dir.to_path_buf(),
            transport: AsyncFileTransport::new(dir),
            from,
        })
    }

    /// Directory the messages are written to, so tests can read them back.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn deliver(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        require_runtime()?;
        let io_err = |e: &dyn fmt::Display| {
            MailError::Send(format!("writing to {}: {e}", self.dir.display()))
        };
        // Recreate the directory if someone removed it since construction.
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io_err(&e))?;
        let id = self.transport.send(message).await.map_err(|e| io_err(&e))?;
        // lettre names the file `<uuid v4>.eml`; random names plus coarse
        // file timestamps would make the order of quick sends unstable.
        let written = self.dir.join(format!("{id}.eml"));
        let ordered = self.dir.join(format!("{}-{id}.eml", order_stamp()));
        tokio::fs::rename(&written, &ordered)
            .await
            .map_err(|e| io_err(&e))
    }
}

impl fmt::Debug for FileMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileMailer")
            .field("dir", &self.dir)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer for FileMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move { log_outcome(self.kind(), self.deliver(email).await) })
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

// ---------------------------------------------------------------------------
// Message building

fn parse_from(from: &str) -> Result<Mailbox, MailError> {
    from.parse::<Mailbox>().map_err(|e| {
        MailError::Config(format!(
            "smtp.from {from:?} is not an RFC 5322 mailbox \
             (expected e.g. \"Flowlet <no-reply@flowlet.invalid>\"): {e}"
        ))
    })
}

fn build_message(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    // The address itself is left out of the error: it is user input (PII)
    // and the caller already has it.
    let to = email.to.parse::<Mailbox>().map_err(|e| {
        MailError::InvalidRecipient(format!("recipient is not a valid mailbox: {e}"))
    })?;
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.as_str())
        // Derived from the sender's domain rather than lettre's default (the
        // machine hostname), so mails do not reveal internal host names.
        .message_id(Some(format!(
            "<{}.{}@{}>",
            order_stamp(),
            std::process::id(),
            from.email.domain()
        )));
    let built = match &email.html {
        None => builder.singlepart(SinglePart::plain(email.text.clone())),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
    };
    built.map_err(|e| MailError::Send(format!("cannot build message: {e}")))
}

/// Process-wide sortable stamp: nanoseconds since the epoch plus a sequence
/// number, unique per call.
fn order_stamp() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:020}-{seq:010}")
}

fn require_runtime() -> Result<(), MailError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| MailError::Send("mail must be sent from inside a Tokio runtime".into()))
}

fn log_outcome(kind: &'static str, result: Result<(), MailError>) -> Result<(), MailError> {
    match &result {
        Ok(()) => tracing::debug!(kind, "mail sent"),
        Err(error) => tracing::debug!(kind, %error, "mail not sent"),
    }
    result
}

// ---------------------------------------------------------------------------
// SMTP URL handling (only what is needed to keep secrets out of output)

/// Loose split of an SMTP URL; lettre (via the `url` crate) remains the
/// authority on validity. Everything before the last `@` is treated as
/// userinfo, which over-redacts rather than leaks on odd input.
struct UrlParts<'a> {
    scheme: Option<&'a str>,
    password: Option<&'a str>,
    /// Everything after the userinfo (or after `://` when there is none).
    host_and_rest: &'a str,
    has_userinfo: bool,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Self {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self {
                scheme: None,
                password: None,
                host_and_rest: "",
                has_userinfo: url.contains('@'),
            };
        };
        match rest.rsplit_once('@') {
            Some((userinfo, host_and_rest)) => Self {
                scheme: Some(scheme),
                password: userinfo.split_once(':').map(|(_, p)| p),
                host_and_rest,
                has_userinfo: true,
            },
            None => Self {
                scheme: Some(scheme),
                password: None,
                host_and_rest: rest,
                has_userinfo: false,
            },
        }
    }

    fn redacted(&self) -> String {
        match (self.scheme, self.has_userinfo) {
            (Some(scheme), true) => format!("{scheme}://***@{}", self.host_and_rest),
            (Some(scheme), false) => format!("{scheme}://{}", self.host_and_rest),
            (None, _) => "<unparseable URL>".to_owned(),
        }
    }

    fn secrets(&self) -> Vec<String> {
        self.password
            .filter(|p| !p.is_empty())
            .map(|p| vec![p.to_owned(), percent_decode(p)])
            .unwrap_or_default()
    }

    /// True unless TLS is guaranteed (`smtps://` or `smtp://...?tls=required`).
    fn may_run_without_tls(&self) -> bool {
        let tls = self
            .host_and_rest
            .split_once('?')
            .map(|(_, query)| query.split('#').next().unwrap_or_default())
            .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("tls=")));
        match self.scheme {
            Some(scheme) if scheme.eq_ignore_ascii_case("smtps") => false,
            _ => tls != Some("required"),
        }
    }
}

fn scrub(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_owned(), |msg, secret| msg.replace(secret, "***"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = (bytes.get(i + 1).copied().and_then(hex_value))
            .zip(bytes.get(i + 2).copied().and_then(hex_value));
        match (b, hex) {
            (b'%', Some((hi, lo))) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
