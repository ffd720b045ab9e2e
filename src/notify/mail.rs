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
//!   [`DEFAULT_MAIL_DIR`]), which tests read back with [`read_mail_dir`].
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

/// Directory the file transport writes to when no `smtp.url` is configured,
/// so local runs leave their mail where developers expect to find it.
pub const DEFAULT_MAIL_DIR: &str = ".flowlet/mail";

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
    /// Build an SMTP mailer with an explicit per-send `timeout`, for callers
    /// (and tests) that need a bound other than [`DEFAULT_SEND_TIMEOUT`].
    /// See [`mailer`] for the accepted URL forms.
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
/// the modification time, their names also sort in sending order; read them
/// back with [`read_mail_dir`].
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

/// A message read back from a [`FileMailer`] directory (test support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEmail {
    /// The `To` header, RFC 2047 words decoded.
    pub to: String,
    /// The `Subject` header, unfolded and RFC 2047 words decoded.
    pub subject: String,
    /// The `text/plain` body with its transfer encoding undone and line
    /// endings normalised to `\n`.
    pub text: String,
}

/// Test support (compiled always, because the service's integration tests
/// live in another crate): the messages a [`FileMailer`] wrote under `dir`,
/// oldest first (file modification time, then name), parsed just enough for
/// assertions: to, subject, and the decoded text body (quoted-printable and
/// base64 transfer encodings are undone as lettre produced them).
///
/// Only `*.eml` files are read. A missing `dir` is an error rather than an
/// empty list, so a wrong path cannot make "no mail was sent" pass.
pub fn read_mail_dir(dir: &Path) -> std::io::Result<Vec<ReceivedEmail>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_eml = path.extension().is_some_and(|ext| ext == "eml");
        if is_eml && entry.file_type()?.is_file() {
            files.push((entry.metadata()?.modified()?, entry.file_name(), path));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, _, path)| {
            let raw = std::fs::read_to_string(&path)?;
            parse_received(&raw).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: no text/plain part", path.display()),
                )
            })
        })
        .collect()
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

// ---------------------------------------------------------------------------
// Minimal MIME reading for read_mail_dir

#[derive(Debug, Default)]
struct ParsedMail {
    to: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

fn parse_received(raw: &str) -> Option<ReceivedEmail> {
    let parsed = parse_mail(raw);
    Some(ReceivedEmail {
        to: parsed.to,
        subject: parsed.subject,
        text: parsed.text?,
    })
}

fn parse_mail(raw: &str) -> ParsedMail {
    let normalised = raw.replace("\r\n", "\n");
    let (headers, body) = split_headers(&normalised);
    let mut parsed = ParsedMail {
        to: header(&headers, "to")
            .map(decode_header_words)
            .unwrap_or_default(),
        subject: header(&headers, "subject")
            .map(decode_header_words)
            .unwrap_or_default(),
        ..ParsedMail::default()
    };
    // lettre ends a single-part body with a CRLF of framing (in multipart
    // bodies that CRLF belongs to the next boundary delimiter instead).
    let body = body.strip_suffix('\n').unwrap_or(body);
    collect_bodies(&headers, body, &mut parsed);
    parsed
}

/// Unfolded `(lowercase name, value)` pairs and the body after the blank line.
fn split_headers(part: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = if let Some(body) = part.strip_prefix('\n') {
        ("", body)
    } else {
        part.split_once("\n\n").unwrap_or((part, ""))
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
}

fn collect_bodies(headers: &[(String, String)], body: &str, out: &mut ParsedMail) {
    let content_type = header(headers, "content-type").unwrap_or("text/plain");
    let mut params = content_type.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let boundary = params.find_map(|p| {
            let (key, value) = p.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| value.trim().trim_matches('"').to_owned())
        });
        if let Some(boundary) = boundary {
            for part in multipart_parts(body, &boundary) {
                let (part_headers, part_body) = split_headers(part);
                collect_bodies(&part_headers, part_body, out);
            }
        }
        return;
    }
    let slot = match mime.as_str() {
        "text/plain" => &mut out.text,
        "text/html" => &mut out.html,
        _ => return,
    };
    if slot.is_none() {
        let encoding = header(headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(body.as_bytes()),
            "base64" => decode_base64(body.as_bytes()).unwrap_or_default(),
            _ => body.as_bytes().to_vec(),
        };
        *slot = Some(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
    }
}

/// Bodies between `--boundary` lines; the newline before each delimiter
/// belongs to the delimiter (RFC 2046), so it is not part of the body.
fn multipart_parts<'b>(body: &'b str, boundary: &str) -> Vec<&'b str> {
    let delimiter = format!("\n--{boundary}");
    let mut parts = Vec::new();
    // Pretend the body starts after a newline so the first delimiter matches.
    let mut rest = match body.strip_prefix(&delimiter[1..]) {
        Some(after) => after,
        None => match body.split_once(delimiter.as_str()) {
            Some((_preamble, after)) => after,
            None => return parts,
        },
    };
    loop {
        if rest.starts_with("--") {
            break; // closing delimiter
        }
        // Skip the remainder of the delimiter line.
        let Some((_, part_and_more)) = rest.split_once('\n') else {
            break;
        };
        match part_and_more.split_once(delimiter.as_str()) {
            Some((part, after)) => {
                parts.push(part);
                rest = after;
            }
            None => {
                parts.push(part_and_more);
                break;
            }
        }
    }
    parts
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Quoted-printable (RFC 2045): `=XX` escapes and `=` soft line breaks.
fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = input.get(i + 1).copied();
        let hex = next
            .and_then(hex_value)
            .zip(input.get(i + 2).copied().and_then(hex_value));
        match (next, hex) {
            (Some(b'\n'), _) => i += 2,
            (Some(b'\r'), _) if input.get(i + 2) == Some(&b'\n') => i += 3,
            (_, Some((hi, lo))) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Standard base64, ignoring whitespace and padding; `None` on other bytes.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        if b.is_ascii_whitespace() || b == b'=' {
            continue;
        }
        acc = (acc << 6) | u32::from(base64_value(b)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let [_, _, _, byte] = (acc >> bits).to_be_bytes();
            out.push(byte);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decode RFC 2047 encoded words (`=?charset?B|Q?text?=`); whitespace
/// between adjacent encoded words is dropped, charsets are assumed UTF-8
/// (what lettre writes).
fn decode_header_words(value: &str) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    let mut rest = value;
    let mut after_word = false;
    while let Some((start, end, decoded)) = next_encoded_word(rest) {
        let (before, _) = rest.split_at(start);
        if !(after_word && before.chars().all(char::is_whitespace)) {
            out.extend_from_slice(before.as_bytes());
        }
        out.extend_from_slice(&decoded);
        after_word = true;
        rest = rest.get(end..).unwrap_or_default();
    }
    out.extend_from_slice(rest.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

/// Start and end byte offsets and the decoded bytes of the first
/// well-formed encoded word in `s`.
fn next_encoded_word(s: &str) -> Option<(usize, usize, Vec<u8>)> {
    let mut search_from = 0;
    while let Some(found) = s.get(search_from..)?.find("=?") {
        let start = search_from + found;
        search_from = start + 2;
        let Some(inner) = s.get(start + 2..) else {
            break;
        };
        let mut fields = inner.splitn(3, '?');
        let (Some(_charset), Some(encoding), Some(tail)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(text_len) = tail.find("?=") else {
            continue;
        };
        let text = tail.get(..text_len).unwrap_or_default();
        let decoded = if encoding.eq_ignore_ascii_case("b") {
            decode_base64(text.as_bytes())
        } else if encoding.eq_ignore_ascii_case("q") {
            Some(decode_quoted_printable(text.replace('_', " ").as_bytes()))
        } else {
            None
        };
        if let Some(decoded) = decoded {
            let end = s.len() - tail.len() + text_len + 2;
            return Some((start, end, decoded));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    const FROM: &str = "Flowlet <no-reply@flowlet.invalid>";
    const TOKEN_LINE: &str = "Your reset token: flr_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE";

    fn email(to: &str, subject: &str, text: &str, html: Option<&str>) -> Email {
        Email {
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
            html: html.map(Into::into),
        }
    }

    fn eml_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn the_token_fixture_is_flr_plus_43_base64url_characters() {
        let token = TOKEN_LINE.rsplit(' ').next().unwrap();
        assert_eq!(token.len(), 4 + 43);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[tokio::test]
    async fn file_mailer_writes_one_eml_file_per_send() {
        let dir = tempfile::tempdir().unwrap();
        let mail_dir = dir.path().join("nested/mail");
        let mailer = mailer(None, FROM, &mail_dir).unwrap();
        assert_eq!(mailer.kind(), "file");

        // Quick successive writes share one coarse file mtime, so this also
        // checks that names break the tie in sending order.
        for i in 0..10 {
            let msg = email("alice@example.com", &format!("n{i}"), "hi", None);
            mailer.send(&msg).await.unwrap();
        }

        assert_eq!(eml_files(&mail_dir).len(), 10);
        let subjects: Vec<String> = read_mail_dir(&mail_dir)
            .unwrap()
            .into_iter()
            .map(|m| m.subject)
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        assert_eq!(subjects, expected);
    }

    #[tokio::test]
    async fn read_mail_dir_returns_exact_to_subject_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = mailer(None, FROM, dir.path()).unwrap();
        let cases = [
            // short ASCII (7bit)
            email("alice@example.com", "Password reset", TOKEN_LINE, None),
            // token line with non-ASCII around it (quoted-printable)
            email(
                "Jürgen Groß <juergen@example.com>",
                "Grüße: reset your password",
                &format!("Hallo Jürgen,\n\n{TOKEN_LINE}\nsign=on & a = b\n\nGrüße\n"),
                None,
            ),
            // a line over 76 characters forces an encoding with soft breaks
            email(
                "bob@example.com",
                "Long line",
                &format!("{TOKEN_LINE} {TOKEN_LINE} {TOKEN_LINE}"),
                None,
            ),
            // mostly non-ASCII (base64)
            email(
                "carol@example.com",
                "Сброс пароля для вашей учётной записи Flowlet, пожалуйста, прочитайте",
                &format!("Здравствуйте! Ваш код ниже.\n{TOKEN_LINE}\nСпасибо"),
                None,
            ),
            // trailing whitespace and blank lines survive
            email("dave@example.com", "ws", "  indented \n\n\ttab\t\n", None),
        ];
        for case in &cases {
            mailer.send(case).await.unwrap();
        }

        let received = read_mail_dir(dir.path()).unwrap();
        let expected: Vec<ReceivedEmail> = cases
            .iter()
            .map(|c| ReceivedEmail {
                to: c.to.clone(),
                subject: c.subject.clone(),
                text: c.text.clone(),
            })
            .collect();
        assert_eq!(received, expected);

        let files = read_mail_dir_raw(dir.path());
        for raw in &files {
            eprintln!("----\n{raw}");
        }
        assert!(files[0].contains("Content-Transfer-Encoding: 7bit"));
        assert!(files[1].contains("Content-Transfer-Encoding: quoted-printable"));
        assert!(
            files[1].contains("sign=3Don"),
            "QP escapes '=' in the raw file"
        );
        assert!(
            files[2].contains("=\r\n"),
            "QP soft line breaks in the raw file"
        );
        assert!(files[3].contains("Content-Transfer-Encoding: base64"));
    }

    fn read_mail_dir_raw(dir: &Path) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn an_html_alternative_is_written_when_given() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = mailer(None, FROM, dir.path()).unwrap();
        let html = format!("<p>Grüße</p><p><code>{TOKEN_LINE}</code></p>");
        mailer
            .send(&email("alice@example.com", "Both", TOKEN_LINE, Some(&html)))
            .await
            .unwrap();
        mailer
            .send(&email("alice@example.com", "Text only", TOKEN_LINE, None))
            .await
            .unwrap();

        let raw = read_mail_dir_raw(dir.path());
        let both = parse_mail(&raw[0]);
        assert!(raw[0].contains("multipart/alternative"));
        assert_eq!(both.text.as_deref(), Some(TOKEN_LINE));
        assert_eq!(both.html.as_deref(), Some(html.as_str()));

        let text_only = parse_mail(&raw[1]);
        assert!(!raw[1].contains("multipart"));
        assert_eq!(text_only.html, None);
        assert_eq!(read_mail_dir(dir.path()).unwrap()[0].text, TOKEN_LINE);
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_rejected_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = mailer(None, FROM, dir.path()).unwrap();
        for to in ["", "not-an-address", "a@b.com\r\nBcc: evil@example.com"] {
            let err = mailer
                .send(&email(to, "x", "secret-body", None))
                .await
                .unwrap_err();
            assert!(
                matches!(err, MailError::InvalidRecipient(_)),
                "{to:?}: {err:?}"
            );
            assert!(!err.to_string().contains("secret-body"));
        }
        assert!(eml_files(dir.path()).is_empty());
        assert!(read_mail_dir(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn an_invalid_from_is_a_config_error_naming_smtp_from() {
        let dir = tempfile::tempdir().unwrap();
        for from in ["", "Flowlet", "Flowlet <no-reply>"] {
            let err = mailer(None, from, dir.path()).err().unwrap();
            assert!(matches!(err, MailError::Config(_)), "{err:?}");
            assert!(err.to_string().contains("smtp.from"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_subject_with_line_breaks_cannot_inject_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = mailer(None, FROM, dir.path()).unwrap();
        let subject = "hello\r\nBcc: evil@example.com";
        mailer
            .send(&email("alice@example.com", subject, "x", None))
            .await
            .unwrap();
        let raw = read_mail_dir_raw(dir.path()).remove(0);
        eprintln!("{raw}");
        assert!(!raw.to_ascii_lowercase().contains("\nbcc:"));
    }

    /// Recorded SMTP session of the fake server.
    #[derive(Debug, Default)]
    struct Transcript {
        commands: Vec<String>,
        data: String,
    }

    /// A fake SMTP server answering line by line; it advertises STARTTLS to
    /// prove a plain `smtp://` URL does not use it.
    async fn fake_smtp_server() -> (u16, mpsc::UnboundedReceiver<Transcript>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut transcript = Transcript::default();
            write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                let command = line.trim_end().to_owned();
                let verb = command.to_ascii_uppercase();
                transcript.commands.push(command);
                let reply: &[u8] = if verb.starts_with("EHLO") {
                    b"250-fake\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
                } else if verb == "DATA" {
                    write.write_all(b"354 go ahead\r\n").await.unwrap();
                    loop {
                        line.clear();
                        read.read_line(&mut line).await.unwrap();
                        if line == ".\r\n" {
                            break;
                        }
                        transcript.data.push_str(&line);
                    }
                    tx.send(std::mem::take(&mut transcript)).unwrap();
                    b"250 queued\r\n"
                } else if verb == "QUIT" {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else if verb == "STARTTLS" {
                    b"454 not really\r\n"
                } else {
                    b"250 ok\r\n"
                };
                write.write_all(reply).await.unwrap();
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn smtp_mailer_delivers_over_plain_smtp_url() {
        let (port, mut transcripts) = fake_smtp_server().await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("smtp://127.0.0.1:{port}");
        let mailer = mailer(Some(&url), FROM, dir.path()).unwrap();
        assert_eq!(mailer.kind(), "smtp");

        mailer
            .send(&email(
                "alice@example.com",
                "Password reset",
                TOKEN_LINE,
                None,
            ))
            .await
            .unwrap();

        let transcript = transcripts.recv().await.unwrap();
        assert!(
            transcript
                .commands
                .iter()
                .any(|c| c == "RCPT TO:<alice@example.com>"),
            "{transcript:?}"
        );
        assert!(
            !transcript
                .commands
                .iter()
                .any(|c| c.eq_ignore_ascii_case("STARTTLS")),
            "{transcript:?}"
        );
        assert!(transcript.data.contains("Subject: Password reset\r\n"));
        assert!(transcript.data.contains("To: alice@example.com\r\n"));
        assert!(transcript.data.contains(TOKEN_LINE));
        assert!(eml_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_smtp_server_fails_within_the_timeout_without_leaking_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let url = "smtp://flowlet:hunter2%21secret@127.0.0.1:1?tls=required";
        let mailer = mailer(Some(url), FROM, dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = mailer
            .send(&email("alice@example.com", "x", "body-secret", None))
            .await
            .unwrap_err();
        assert!(started.elapsed() < DEFAULT_SEND_TIMEOUT + Duration::from_secs(1));
        assert!(matches!(err, MailError::Send(_)), "{err:?}");
        for text in [err.to_string(), format!("{err:?}"), format!("{mailer:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("body-secret"), "{text}");
        }
        assert!(err.to_string().contains("smtp://***@127.0.0.1:1"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_smtp_server_hits_the_send_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let mailer = SmtpMailer::new(
            &format!("smtp://127.0.0.1:{port}"),
            FROM,
            Duration::from_millis(300),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = mailer
            .send(&email("alice@example.com", "x", "y", None))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, MailError::Send(_)), "{err:?}");
        server.abort();
    }

    #[test]
    fn credentials_on_a_url_that_may_run_without_tls_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "smtp://user:hunter2@mail.example.com:587",
            "smtp://user:hunter2@mail.example.com:587?tls=opportunistic",
        ] {
            let err = mailer(Some(url), FROM, dir.path()).err().unwrap();
            assert!(matches!(err, MailError::Config(_)), "{err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        for url in [
            "smtp://user:hunter2@mail.example.com:587?tls=required",
            "smtps://user:hunter2@mail.example.com",
            "smtp://localhost:1025",
        ] {
            assert!(mailer(Some(url), FROM, dir.path()).is_ok(), "{url}");
        }
    }

    #[test]
    fn an_unusable_smtp_url_is_a_config_error_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "",
            "http://user:hunter2@mail.example.com",
            "smtp://user:hunter2@mail.example.com?tls=bogus",
            "smtps://user:hunter2@[::1",
        ] {
            let err = mailer(Some(url), FROM, dir.path()).err().unwrap();
            assert!(matches!(err, MailError::Config(_)), "{url}: {err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_output_never_shows_bodies_or_passwords() {
        let message = email(
            "alice@example.com",
            "Password reset",
            "token flr_text_secret",
            Some("<b>flr_html_secret</b>"),
        );
        let debug = format!("{message:?}");
        assert!(debug.contains("alice@example.com") && debug.contains("Password reset"));
        assert!(!debug.contains("flr_text_secret") && !debug.contains("flr_html_secret"));

        let smtp = SmtpMailer::new(
            "smtps://flowlet:hunter2@mail.example.com:465",
            FROM,
            DEFAULT_SEND_TIMEOUT,
        )
        .unwrap();
        let debug = format!("{smtp:?}");
        assert!(
            debug.contains("smtps://***@mail.example.com:465"),
            "{debug}"
        );
        assert!(
            !debug.contains("hunter2") && !debug.contains("flowlet:"),
            "{debug}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = FileMailer::new(dir.path(), FROM).unwrap();
        assert!(format!("{file:?}").contains("FileMailer"));
    }

    #[test]
    fn sending_outside_a_tokio_runtime_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let smtp = mailer(Some("smtp://localhost:1025"), FROM, dir.path()).unwrap();
        let file = mailer(None, FROM, dir.path()).unwrap();
        let message = email("alice@example.com", "x", "y", None);
        for m in [smtp, file] {
            let fut = m.send(&message);
            let result = futures_lite_block_on(fut);
            assert!(matches!(result, Err(MailError::Send(_))), "{result:?}");
        }
    }

    /// Poll a future on the current thread without any Tokio context.
    fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    #[test]
    fn header_words_and_transfer_encodings_decode() {
        assert_eq!(
            decode_header_words("=?utf-8?b?R3LDvA==?= =?utf-8?b?w59l?= x"),
            "Grüße x"
        );
        assert_eq!(
            decode_header_words("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_da?="),
            "Grüße da"
        );
        assert_eq!(decode_header_words("plain =? text"), "plain =? text");
        assert_eq!(
            decode_quoted_printable(b"a=3Db=\nc=C3=BC"),
            "a=bcü".as_bytes()
        );
        assert_eq!(
            decode_base64(b"R3L\r\nDvA=="),
            Some("Grü".as_bytes().to_vec())
        );
        assert_eq!(percent_decode("a%21b%2"), "a!b%2");
    }
}
