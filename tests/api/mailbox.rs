//! Reading back the mail the app's `FileMailer` wrote (the file transport every test app
//! uses): [`read_mail_dir`] parses each `.eml` file just enough for assertions (recipient,
//! subject, decoded text body), with the minimal MIME reading it needs; and the tests of that
//! reading against files the `FileMailer` wrote.

use std::path::{Path, PathBuf};

use flowlet::notify::{Email, MailError, mailer};

/// A message read back from a `FileMailer` directory.
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

/// The messages a `FileMailer` wrote under `dir`,
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

/// Every form of each message under `dir` a reader could see: the raw file, and its text and
/// HTML parts with their transfer encodings undone (a value encoded quoted-printable or base64
/// is not found in the raw file alone). For searches of everything that was mailed.
pub(crate) fn every_form(dir: &Path) -> Vec<String> {
    read_mail_dir_raw(dir)
        .into_iter()
        .flat_map(|raw| {
            let parsed = parse_mail(&raw);
            [Some(raw), parsed.text, parsed.html]
        })
        .flatten()
        .collect()
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

// ---------------------------------------------------------------------------
// Tests of the reading, against what the FileMailer writes

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
}
