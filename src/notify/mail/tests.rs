//! Unit tests of the mailers: configuration errors, header injection, SMTP delivery against a
//! fake server, timeouts, and that no password or body leaks into errors or `Debug`.

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
fn smtp_url_percent_escapes_decode() {
    assert_eq!(percent_decode("a%21b%2"), "a!b%2");
}
