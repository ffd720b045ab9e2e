//! Email end to end against a real SMTP server run inside the test process: `mailin`'s SMTP
//! state machine behind a tokio listener on a free port, keeping what it receives in memory.
//! The stored messages are parsed by `mail-parser` (MIME, encodings), not by anything of ours.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowlet::kernel::Role;
use flowlet::notify::{Outbox, Template, TransactionalOutbox};
use flowlet::platform::db::DbError;
use mail_parser::{MessageParser, PartType};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{TestApp, TestOptions, free_port, spawn_app_with};

/// One message as the SMTP server received it.
#[derive(Debug)]
pub struct Stored {
    /// The envelope recipients (`RCPT TO`), as the server recorded them.
    pub rcpt_to: String,
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The whole message: its header block as sent, then the subject and every part, decoded.
    pub raw: String,
}

/// A real SMTP server for one test; stops listening when dropped.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<Stored>>>,
    server: tokio::task::JoinHandle<()>,
}

/// One SMTP session's decisions: accept everything, keep each message when its DATA ends.
struct Session {
    received: Arc<Mutex<Vec<Stored>>>,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

impl mailin::Handler for Session {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _8bit: bool,
        to: &[String],
    ) -> mailin::Response {
        self.rcpt_to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin::Response {
        let stored = parse(&self.data, self.rcpt_to.join(", "));
        self.received.lock().unwrap().push(stored);
        mailin::response::OK
    }
}

/// A received message, as a mail client would read it.
fn parse(data: &[u8], rcpt_to: String) -> Stored {
    let message = MessageParser::default()
        .parse(data)
        .expect("the message parses as RFC 5322");
    let address = |a: Option<&mail_parser::Address>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned()
    };
    let (mut text, mut html, mut decoded) = (String::new(), String::new(), Vec::new());
    for part in &message.parts {
        match &part.body {
            // The first part of each type is the body, as mail clients show it.
            PartType::Text(body) => {
                if text.is_empty() {
                    text = body.to_string();
                }
                decoded.push(body.to_string());
            }
            PartType::Html(body) => {
                if html.is_empty() {
                    html = body.to_string();
                }
                decoded.push(body.to_string());
            }
            _ => {}
        }
    }
    let root = message.root_part();
    let headers = data
        .get(
            usize::try_from(root.offset_header).unwrap()
                ..usize::try_from(root.offset_body).unwrap(),
        )
        .unwrap();
    let subject = message.subject().unwrap_or_default().to_owned();
    Stored {
        rcpt_to,
        to: address(message.to()),
        from: address(message.from()),
        raw: format!(
            "{}\nSubject: {subject}\n{}",
            String::from_utf8_lossy(headers),
            decoded.join("\n")
        ),
        subject,
        text,
        html,
    }
}

/// Drives one client's SMTP session to its end.
async fn serve_session(stream: TcpStream, received: Arc<Mutex<Vec<Stored>>>) {
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let handler = Session {
        received,
        rcpt_to: Vec::new(),
        data: Vec::new(),
    };
    let mut session = mailin::SessionBuilder::new("sink.test").build(peer, handler);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    if writer
        .write_all(&session.greeting().buffer().unwrap())
        .await
        .is_err()
    {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = session.process(&line);
        match response.action {
            mailin::Action::Reply | mailin::Action::Close | mailin::Action::UpgradeTls => {
                if writer.write_all(&response.buffer().unwrap()).await.is_err()
                    || !matches!(response.action, mailin::Action::Reply)
                {
                    return;
                }
            }
            mailin::Action::NoReply => {}
        }
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the SMTP sink binds its port");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sessions = received.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_session(stream, sessions.clone()));
            }
        });
        SmtpSink {
            port,
            received,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many messages arrived so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until `n` messages arrived (or fails after 10 s) and takes them.
    pub async fn wait_for(&self, n: usize) -> Vec<Stored> {
        let started = Instant::now();
        loop {
            if self.count() >= n {
                return std::mem::take(&mut *self.received.lock().unwrap());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "only {} of {n} emails arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn app_mailing_to(sink_url: &str) -> TestApp {
    spawn_app_with(TestOptions::default().var("FLOWLET__SMTP__URL", sink_url)).await
}

/// Queues `template` to `to` in a transaction that commits, or rolls back.
async fn enqueue(app: &TestApp, to: &str, template: Template, commit: bool) {
    let to = to.to_owned();
    let result = app
        .pool()
        .in_tx(|tx| {
            let (to, template) = (to.clone(), template.clone());
            Box::pin(async move {
                TransactionalOutbox.enqueue_email(tx, &to, template).await?;
                if commit {
                    Ok(())
                } else {
                    Err(DbError::Unavailable("the change failed".into()))
                }
            })
        })
        .await;
    assert_eq!(result.is_ok(), commit);
}

#[tokio::test]
async fn a_password_reset_is_mailed_over_smtp_carrying_the_token_and_no_other_secret() {
    let sink = SmtpSink::start().await;
    let app = app_mailing_to(&sink.url()).await;
    let partner = app.new_partner().await;
    let user = app.new_user(Some(partner.id), Role::PartnerAdmin).await;
    let session = app.login(&user).await;
    let resp = app
        .post_json("/v1/auth/password-reset", &json!({"email": user.email}))
        .await;
    assert_eq!(resp.status().as_u16(), 202);

    let mail = sink.wait_for(1).await;
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert_eq!(m.rcpt_to, user.email, "sent to the user and no one else");
    assert_eq!(m.to, user.email);
    assert!(
        m.from.contains(&app.settings.smtp.from) || app.settings.smtp.from.contains(&m.from),
        "{}",
        m.from
    );
    assert_eq!(m.subject, "Reset your Flowlet password");
    let tokens: Vec<&str> = m
        .text
        .split_whitespace()
        .filter(|w| w.starts_with("flr_"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token in the text part: {}", m.text);
    let token = tokens[0].to_owned();
    assert!(
        m.html.contains(&token),
        "the HTML part carries the same token"
    );

    // The token works, so it is the real one.
    let confirm = json!({"token": token, "new_password": "quiet-harbour-lantern-77"});
    assert_eq!(
        app.post_json("/v1/auth/password-reset/confirm", &confirm)
            .await
            .status()
            .as_u16(),
        204
    );

    // No other secret: not the password, the session, the partner's API key, its stored
    // hash, the token's stored hash, nor any other recognizable secret prefix.
    let raw = &m.raw;
    for secret in [
        user.password.as_str(),
        session.as_str(),
        partner.key.as_str(),
    ] {
        assert!(!raw.contains(secret), "a secret leaked into the mail");
    }
    for prefix in ["flk_", "whsec_", "eyJ", "$argon2"] {
        assert!(!raw.contains(prefix), "{prefix} in the mail");
    }
    assert_eq!(raw.matches("flr_").count(), 2, "the token once per part");

    // Once sent, the outbox forgets the token.
    let started = Instant::now();
    loop {
        let left = app
            .sql_count("SELECT count(*) AS n FROM notify_emails WHERE template IS NOT NULL OR status <> 'sent'")
            .await;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the sent row still holds its template"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_template_arrives_with_text_and_html_and_a_rolled_back_email_is_never_sent() {
    let sink = SmtpSink::start().await;
    let app = app_mailing_to(&sink.url()).await;
    let to = "customer@example.com";
    enqueue(
        &app,
        to,
        Template::PaymentReceipt {
            payment_id: "pay_01jd".into(),
            amount: "12.50".into(),
            currency: "EUR".into(),
            direction: "sent".into(),
            counterparty: Some("Ada <script>".into()),
            description: None,
            completed_at: "2026-11-24 10:00 UTC".into(),
        },
        true,
    )
    .await;
    enqueue(
        &app,
        to,
        Template::KycDecision {
            customer_name: "Ada".into(),
            decision: "approved".into(),
            tier: Some(2),
            reason: None,
        },
        true,
    )
    .await;
    enqueue(
        &app,
        to,
        Template::CardIssued {
            card_last4: "4242".into(),
            card_type: "virtual".into(),
            expiry: "11/29".into(),
        },
        true,
    )
    .await;
    enqueue(
        &app,
        "rolled-back@example.com",
        Template::KycDecision {
            customer_name: "Bob".into(),
            decision: "rejected".into(),
            tier: None,
            reason: Some("document unreadable".into()),
        },
        false,
    )
    .await;

    let mut mail = sink.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 0, "the rolled-back email never goes out");
    mail.sort_by(|a, b| a.subject.cmp(&b.subject));
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "Payment receipt: 12.50 EUR",
            "Your identity verification: approved",
            "Your new virtual card ending 4242",
        ]
    );
    for m in &mail {
        assert_eq!(m.rcpt_to, to);
        assert!(
            !m.text.is_empty() && m.html.contains("<html"),
            "{}: both parts",
            m.subject
        );
    }
    assert!(mail[0].text.contains("pay_01jd"));
    assert!(
        !mail[0].html.contains("<script>"),
        "untrusted text is escaped in HTML"
    );
    assert_eq!(app.count("notify_emails").await, 3);
}

#[tokio::test]
async fn an_email_is_retried_until_the_smtp_server_takes_it() {
    let port = free_port();
    let app = app_mailing_to(&format!("smtp://127.0.0.1:{port}")).await;
    enqueue(
        &app,
        "customer@example.com",
        Template::CardIssued {
            card_last4: "1881".into(),
            card_type: "physical".into(),
            expiry: "01/30".into(),
        },
        true,
    )
    .await;
    // The server is down: the attempt fails and the email waits, still pending.
    let started = Instant::now();
    while app
        .sql_count("SELECT count(*) AS n FROM notify_emails WHERE attempts >= 1 AND status = 'pending' AND last_error IS NOT NULL")
        .await
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status: Value =
        crate::cli::flowlet_json(&app, &["admin", "outbox", "status", "--json"]).await;
    assert_eq!(status["emails"]["pending"], 1, "{status}");

    let sink = SmtpSink::start_on(port).await;
    app.sql("UPDATE notify_emails SET next_attempt_at = now() WHERE status = 'pending'")
        .await;
    let mail = sink.wait_for(1).await;
    assert_eq!(mail[0].subject, "Your new physical card ending 1881");
}
