//! Issue 17 item 2: a full card lifecycle, then a search of everything Flowlet keeps or sends
//! for the number (PAN) and CVC of every card it issued, finding neither. API.md "Cards": the
//! PAN and CVC appear in the issuing answer and in reveals only; never stored in clear, never
//! in any other response, event, webhook, email or log.
//!
//! Searched: every row of every table (as text), the app's Redis keys, the partner's events
//! (`/v1/events`), every webhook body and partner decision request, every answer of the API
//! and the network simulator other than issuing and reveals, every email (raw and decoded), and
//! every log line the app (and the operator's CLI) wrote at debug level.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowlet::platform::config::LogFormat;
use flowlet::platform::telemetry;
use serde_json::{Value, json};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::card_authorizations::{authorize, followed, message};
use crate::card_decisions::{self, put_ok};
use crate::cards::{card_holder, key_with};
use crate::helpers::{TestApp, spawn_app};
use crate::kyc::{get, load_test_list};
use crate::payments::deposit;
use crate::webhooks::{self, Receiver};

// ---------------------------------------------------------------------------
// The logs
//
// The app logs through `tracing`'s global dispatcher (every thread: the test's, actix's
// workers, the outbox and ledger workers). The harness installs no subscriber, so this test
// installs the global one (`try_init`), formatting each line exactly as `serve` does (both
// formats: JSON shows only the current span, pretty shows every span in scope) into a buffer
// the test searches. A thread-local subscriber (`set_default`) would see the test's own
// thread only. Other tests run in this process at the same time: their lines land in the
// buffer too, which is harmless (they have other cards), and the filter lets lines through
// only while this test captures.

/// Every log line written while [`CAPTURING`].
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static CAPTURING: AtomicBool = AtomicBool::new(false);

/// Appends a formatted line to [`LOGS`] (the fmt layer writes each line in one call).
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line until dropped: debug and above from everything, and Flowlet's own
/// lines at every level.
struct CapturedLogs;

impl CapturedLogs {
    fn start() -> CapturedLogs {
        static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let installed = *INSTALLED.get_or_init(|| {
            let on = || {
                filter_fn(|meta| {
                    CAPTURING.load(Ordering::Relaxed)
                        && (*meta.level() <= tracing::Level::DEBUG
                            || meta.target().starts_with("flowlet"))
                })
            };
            tracing_subscriber::registry()
                .with(telemetry::layer(LogFormat::Json, || Capture).with_filter(on()))
                .with(telemetry::layer(LogFormat::Pretty, || Capture).with_filter(on()))
                .try_init()
                .is_ok()
        });
        assert!(
            installed,
            "another global tracing subscriber was installed first: this test would not see the logs"
        );
        CAPTURING.store(true, Ordering::SeqCst);
        CapturedLogs
    }

    /// Everything captured so far, with the pretty format's colours taken out.
    fn text(&self) -> String {
        without_ansi(&String::from_utf8_lossy(&LOGS.lock().unwrap()))
    }
}

impl Drop for CapturedLogs {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`), which could split a key from
/// its value (`cvc` ESC[0m ESC[2m = ESC[0m 123).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The search

/// A card whose secrets must appear nowhere.
struct Secrets {
    what: String,
    pan: String,
    cvc: Option<String>,
}

impl Secrets {
    fn of(what: &str, answer: &Value) -> Secrets {
        Secrets {
            what: what.to_owned(),
            pan: answer["pan"].as_str().unwrap().to_owned(),
            cvc: Some(answer["cvc"].as_str().unwrap().to_owned()),
        }
    }

    /// How the number would look if it leaked: as is, in groups of four, and as the hex of
    /// its ASCII (a `bytea` column reads back as `\x3432...`). The vault keeps it sealed and
    /// finds it by a keyed hash, so not even a substring of any of these may appear.
    fn pan_forms(&self) -> [String; 3] {
        let grouped = self
            .pan
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let hex = self.pan.bytes().map(|b| format!("{b:02x}")).collect();
        [self.pan.clone(), grouped, hex]
    }

    /// Where `haystack` (named `source`) shows these secrets.
    fn found_in(&self, source: &str, haystack: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .pan_forms()
            .iter()
            .filter(|form| haystack.contains(form.as_str()))
            .map(|form| format!("{}'s PAN ({form}) in {source}", self.what))
            .collect();
        if let Some(cvc) = &self.cvc
            && cvc_shown(haystack, cvc)
        {
            found.push(format!("{}'s CVC ({cvc}) in {source}", self.what));
        }
        found
    }
}

/// Whether `text` shows `cvc` as a CVC: after the word `cvc` or `cvv` (any case, e.g. `"cvc"`,
/// `cvc_value`, `CVV2`), past nothing but word characters, quotes, backslashes, `:`, `=`,
/// spaces and opening brackets (at most 24 of them), the CVC's digits as a whole number.
///
/// A CVC is three digits: searched everywhere, it would be found by chance in amounts, ids,
/// timestamps and ciphertext hex of any run. A leak is the value under its name (`"cvc":"123"`,
/// `\"cvc\":\"123\"` inside a stored or logged JSON string, `cvc=123` in a log line, `cvc:
/// Cvc("123")` in Debug output); that is what this finds, while `"cvc_mismatch","amount":"123"`
/// or `{"rule":"cvc","outcome":"pass"}` are not leaks and are not found.
fn cvc_shown(text: &str, cvc: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let skippable = |b: u8| b.is_ascii_alphabetic() || b"_\"'\\:= ([{".contains(&b);
    ["cvc", "cvv"].iter().any(|word| {
        lower.match_indices(word).any(|(at, _)| {
            let mut i = at + word.len();
            // `cvv2` / `cvc2`: a digit glued to the word is part of its name.
            if bytes.get(i) == Some(&b'2') && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let limit = (i + 24).min(bytes.len());
            while i < limit && skippable(bytes[i]) {
                i += 1;
            }
            let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            &lower[i..i + digits] == cvc
        })
    })
}

/// Every leak of any of `cards` in `sources` (name, text).
fn leaks(cards: &[Secrets], sources: &[(String, String)]) -> Vec<String> {
    sources
        .iter()
        .flat_map(|(source, text)| cards.iter().flat_map(|c| c.found_in(source, text)))
        .collect()
}

// ---------------------------------------------------------------------------
// What Flowlet keeps and sends

/// Every row of every table of the app's database, as text: one source per table.
async fn every_table(app: &TestApp) -> Vec<(String, String)> {
    let tables = app
        .sql_texts(
            "SELECT table_name::text AS t FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
        )
        .await;
    let mut dumps = Vec::new();
    for table in tables {
        let rows = app
            .sql_texts(&format!(
                "SELECT r::text AS t FROM \"{}\" r",
                table.replace('"', "\"\"")
            ))
            .await;
        dumps.push((format!("table {table}"), rows.join("\n")));
    }
    dumps
}

/// Every key and value this app keeps in Redis (its key prefix).
async fn redis_state(app: &TestApp) -> String {
    use deadpool_redis::redis;
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{}*", app.settings.redis.key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut read = redis::cmd(match kind.as_str() {
            "string" => "GET",
            "hash" => "HGETALL",
            "list" => "LRANGE",
            "set" => "SMEMBERS",
            "zset" => "ZRANGE",
            other => panic!("{key}: a Redis {other} this search cannot read"),
        });
        read.arg(&key);
        if matches!(kind.as_str(), "list" | "zset") {
            read.arg(0).arg(-1);
        }
        let value: redis::Value = read.query_async(&mut conn).await.unwrap();
        out.push_str(&format!("{key} {}\n", redis_text(&value)));
    }
    out
}

/// A Redis value as text: its strings as they are (bytes read as UTF-8).
fn redis_text(value: &deadpool_redis::redis::Value) -> String {
    use deadpool_redis::redis::Value;
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Array(values) | Value::Set(values) => {
            values.iter().map(redis_text).collect::<Vec<_>>().join(" ")
        }
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", redis_text(k), redis_text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

/// Every event of the partner, page by page, as `/v1/events` shows them.
async fn every_event(app: &TestApp, key: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = "/v1/events?limit=200".to_owned();
    loop {
        let page = get(app, key, &path).await;
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/events?limit=200&cursor={cursor}"),
            None => return events,
        }
    }
}

/// Waits until the outbox has delivered every webhook and sent every email.
async fn outbox_drained(app: &TestApp, receiver: &Receiver) {
    let started = Instant::now();
    loop {
        let pending = app
            .sql_count(
                "SELECT (SELECT count(*) FROM notify_deliveries WHERE status = 'pending') \
                      + (SELECT count(*) FROM notify_emails WHERE status = 'pending') AS n",
            )
            .await;
        let deliveries = app.count("notify_deliveries").await;
        if pending == 0 && receiver.received().len() >= usize::try_from(deliveries).unwrap() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the outbox did not drain: {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A number of the test BIN, Luhn-valid, that no card has: what a network sends for a card
/// Flowlet never issued.
fn unknown_number() -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    let mut digits = format!("42424242{:07}", random % 10_000_000);
    let sum: u32 = digits
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    digits.push(char::from_digit((10 - sum % 10) % 10, 10).unwrap());
    digits
}

/// POST under the idempotency key `name` (unique to this test run).
async fn once(app: &TestApp, key: &str, path: &str, body: &Value, name: &str) -> reqwest::Response {
    app.request(reqwest::Method::POST, path, key)
        .header(
            "Idempotency-Key",
            format!("{name}-{}", app.settings.redis.key_prefix.replace(':', "")),
        )
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    key: &str,
    path: &str,
    body: &Value,
) -> Value {
    let resp = app
        .request(method, path, key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{path}: {:?}",
        resp.text().await
    );
    resp.json().await.unwrap()
}

#[tokio::test]
async fn no_card_number_or_cvc_is_kept_sent_or_logged_anywhere_in_a_card_lifecycle() {
    let logs = CapturedLogs::start();
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let key = partner.key.clone();
    let hooks = Receiver::start().await;
    webhooks::endpoint(&app, &partner, &hooks.url, json!(["*"])).await;
    let decisions = card_decisions::Receiver::start().await;
    put_ok(&app, &key, &decisions.url, "approve").await;
    let (_, wallet) = card_holder(&app, &partner).await;
    deposit(&app, &key, &wallet, "500.00").await;
    // Answers that are not issuing or reveals: none may show a number.
    let mut answers: Vec<Value> = Vec::new();

    // Issued, revealed, controlled; issuing, reveals and replacing under idempotency keys, so
    // the answers kept for retries are searched too (and a retry is answered from them).
    let issuing = json!({"wallet_id": wallet, "type": "virtual"});
    let resp = once(&app, &key, "/v1/cards", &issuing, "issue").await;
    assert_eq!(resp.status().as_u16(), 201);
    let card: Value = resp.json().await.unwrap();
    let id = card["id"].as_str().unwrap().to_owned();
    let retried = once(&app, &key, "/v1/cards", &issuing, "issue").await;
    assert_eq!(retried.status().as_u16(), 201);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["id"], card["id"]);
    answers.push(retried);
    let revealer = key_with(&app, &partner, &["cards:reveal"]).await;
    let resp = once(
        &app,
        &revealer,
        &format!("/v1/cards/{id}/reveal"),
        &json!({}),
        "reveal",
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let reveal_request = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let revealed = resp.text().await.unwrap();
    answers.push(
        send(
            &app,
            reqwest::Method::PUT,
            &key,
            &format!("/v1/cards/{id}/controls"),
            &json!({"enabled": true, "blocked_categories": ["gambling"],
                    "limits": {"daily": "400.00", "per_authorization": "300.00"}}),
        )
        .await,
    );

    // Authorizations: approved, declined by the rules, by the CVC, by the partner, unknown.
    let approved = authorize(&app, &key, &message(&card, "40.00", "5411")).await;
    assert_eq!(approved["approved"], true, "{approved:#}");
    let other = authorize(&app, &key, &message(&card, "20.00", "5812")).await;
    assert_eq!(other["approved"], true, "{other:#}");
    let mut wrong_cvc = message(&card, "5.00", "5411");
    wrong_cvc["cvc"] = json!(if card["cvc"] == "000" { "001" } else { "000" });
    let stranger = unknown_number();
    let mut unknown = message(&card, "5.00", "5411");
    unknown["pan"] = json!(stranger);
    decisions.answer(
        200,
        r#"{"approved": false, "reason": "over budget"}"#,
        Duration::ZERO,
    );
    for (body, code) in [
        (message(&card, "5.00", "5411"), "partner_declined"),
        (message(&card, "5.00", "7995"), "merchant_category_blocked"),
        (wrong_cvc, "cvc_mismatch"),
        (unknown, "card_not_found"),
    ] {
        let declined = authorize(&app, &key, &body).await;
        assert_eq!(declined["decline_code"], code, "{declined:#}");
        answers.push(declined);
    }
    // Increment, partial capture, another reversed, a refund.
    let grown = followed(
        &app,
        &key,
        &approved,
        "increment",
        json!({"amount": "10.00"}),
    )
    .await;
    assert_eq!(grown["held_amount"], "50.00");
    let captured = followed(&app, &key, &approved, "capture", json!({"amount": "30.00"})).await;
    assert_eq!(captured["captured_amount"], "30.00");
    let reversed = followed(&app, &key, &other, "reverse", json!({})).await;
    assert_eq!(reversed["status"], "reversed");
    let refund = send(
        &app,
        reqwest::Method::POST,
        &key,
        "/v1/simulator/refunds",
        &json!({"pan": card["pan"], "exp_month": card["exp_month"], "exp_year": card["exp_year"],
                "amount": "7.50", "currency": "USD", "authorization_id": approved["id"],
                "merchant": {"name": "Corner Shop", "mcc": "5411", "country": "US"}}),
    )
    .await;
    answers.extend([approved.clone(), other, grown, captured, reversed, refund]);

    // Frozen and unfrozen by the partner, then by an operator (the CLI's own logs searched too).
    for verb in ["freeze", "unfreeze"] {
        answers.push(
            send(
                &app,
                reqwest::Method::POST,
                &key,
                &format!("/v1/cards/{id}/{verb}"),
                &json!({"reason": "customer asked"}),
            )
            .await,
        );
    }
    let mut cli_logs = String::new();
    for verb in ["freeze", "unfreeze"] {
        let out = crate::cli::flowlet_on_env(
            &app,
            &[
                "admin",
                "card",
                verb,
                &id,
                "--reason",
                "operator check",
                "--json",
            ],
            &[("FLOWLET__LOG__LEVEL", "debug,flowlet=trace")],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        answers.push(serde_json::from_slice(&out.stdout).unwrap());
        cli_logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // Replaced (a new number), used, canceled; both numbers then declined.
    let replacing = format!("/v1/cards/{id}/replace");
    let resp = once(
        &app,
        &key,
        &replacing,
        &json!({"reason": "lost"}),
        "replace",
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let replacement: Value = resp.json().await.unwrap();
    let new_id = replacement["id"].as_str().unwrap().to_owned();
    let used = authorize(&app, &key, &message(&replacement, "12.00", "5411")).await;
    assert_eq!(used["approved"], true, "{used:#}");
    answers.push(followed(&app, &key, &used, "capture", json!({})).await);
    answers.push(
        send(
            &app,
            reqwest::Method::POST,
            &key,
            &format!("/v1/cards/{new_id}/cancel"),
            &json!({"reason": "stolen"}),
        )
        .await,
    );
    for old in [&card, &replacement] {
        let declined = authorize(&app, &key, &message(old, "1.00", "5411")).await;
        assert_eq!(declined["decline_code"], "card_canceled", "{declined:#}");
        answers.push(declined);
    }
    for path in [
        format!("/v1/cards?wallet_id={wallet}"),
        format!("/v1/cards/{id}"),
        format!("/v1/cards/{new_id}"),
        "/v1/card-authorizations?limit=200".to_owned(),
        format!(
            "/v1/card-authorizations/{}",
            approved["id"].as_str().unwrap()
        ),
    ] {
        answers.push(get(&app, &key, &path).await);
    }

    // Everything kept and sent, once the outbox has drained.
    outbox_drained(&app, &hooks).await;
    let mut sources: Vec<(String, String)> = every_table(&app).await;
    sources.push(("Redis".to_owned(), redis_state(&app).await));
    let events = every_event(&app, &key).await;
    sources.push((
        "/v1/events".to_owned(),
        Value::from(events.clone()).to_string(),
    ));
    for (i, r) in hooks.received().iter().enumerate() {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        sources.push((format!("webhook {i} ({})", r.id), body));
    }
    for (i, r) in decisions.received().iter().enumerate() {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        sources.push((format!("decision request {i}"), body));
    }
    for (i, mail) in crate::mailbox::every_form(&app.mail_dir).iter().enumerate() {
        sources.push((format!("mail part {i}"), mail.clone()));
    }
    for (i, answer) in answers.iter().enumerate() {
        sources.push((format!("answer {i}"), answer.to_string()));
    }
    sources.push(("the CLI's logs".to_owned(), cli_logs.clone()));
    let logged = logs.text();
    drop(logs);
    sources.push(("the app's logs".to_owned(), logged.clone()));

    let cards = [
        Secrets::of("the card", &card),
        Secrets::of("the replacement", &replacement),
        Secrets {
            what: "the unknown number".to_owned(),
            pan: stranger,
            cvc: None,
        },
    ];

    // The search can fail: it finds both secrets in the reveal's answer, which must show them,
    // and it reads what it means to read.
    let sanity = leaks(&cards[..1], &[("the reveal".to_owned(), revealed)]);
    assert_eq!(
        sanity.len(),
        2,
        "the PAN and the CVC in the reveal: {sanity:?}"
    );
    let table = |name: &str| {
        sources
            .iter()
            .find(|(s, _)| s == &format!("table {name}"))
            .map(|(_, text)| text.clone())
            .unwrap_or_default()
    };
    let card_uuid = id
        .parse::<flowlet::card::CardId>()
        .unwrap()
        .uuid()
        .to_string();
    for name in [
        "card_cards",
        "card_vault",
        "card_authorizations",
        "notify_events",
    ] {
        let rows = table(name);
        assert!(
            rows.contains(&card_uuid) || rows.contains(&id),
            "{name} was read"
        );
    }
    assert!(
        app.count("platform_idempotency_keys").await >= 3,
        "the answers kept for retries were written"
    );
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "card.created",
        "card.updated",
        "card.authorization.approved",
        "card.authorization.declined",
        "card.authorization.captured",
        "card.authorization.reversed",
        "card.refund.created",
        "card.frozen",
        "card.unfrozen",
        "card.replaced",
        "card.canceled",
    ] {
        assert!(types.contains(&kind), "no {kind} in {types:?}");
    }
    let delivered: std::collections::HashSet<String> =
        hooks.received().into_iter().map(|r| r.id).collect();
    assert_eq!(delivered.len(), events.len(), "every event was delivered");
    assert!(decisions.received().len() >= 3, "the partner was asked");
    let mails = crate::mailbox::every_form(&app.mail_dir).join("\n");
    for c in [&card, &replacement] {
        let last4 = c["last4"].as_str().unwrap();
        assert!(mails.contains(last4), "a card issued mail for {last4}");
    }
    // The logs hold the app's lines from its own threads, at debug level too.
    assert!(
        logged
            .lines()
            .any(|l| l.contains(&reveal_request) && l.contains("request completed")),
        "the app's request lines were captured"
    );
    assert!(
        logged
            .lines()
            .any(|l| l.contains("partner approved the card authorization")
                && l.contains(&partner.id.to_string())),
        "the app's debug lines were captured"
    );

    let found = leaks(&cards, &sources);
    assert!(
        found.is_empty(),
        "card secrets found:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_cvc_is_found_under_its_name_and_nowhere_else() {
    for shown in [
        r#"{"pan":"x","cvc":"123"}"#,
        r#"{\"cvc\": \"123\"}"#,
        "cvc=123 card.id=card_1",
        r#"card: Card { cvc: Cvc("123") }"#,
        "CVV2: 123",
        "\"security\":{\"cvc\":{\"value\":\"123\"}}",
    ] {
        assert!(cvc_shown(shown, "123"), "{shown}");
    }
    for not_shown in [
        r#"{"decline_code":"cvc_mismatch","amount":"123.00"}"#,
        r#"{"rule":"cvc","outcome":"pass"},{"amount":"123"}"#,
        r#"{"cvc":"1234"}"#,
        r#"{"cvc":"0123"}"#,
        r#"{"amount":"123"}"#,
        "",
        "cvc",
    ] {
        assert!(!cvc_shown(not_shown, "123"), "{not_shown}");
    }
    let card = Secrets {
        what: "a card".to_owned(),
        pan: "4242424242424242".to_owned(),
        cvc: None,
    };
    for shown in [
        "x4242424242424242y",
        "4242 4242 4242 4242",
        r"\x34323432343234323432343234323432",
    ] {
        assert_eq!(card.found_in("s", shown).len(), 1, "{shown}");
    }
    assert!(card.found_in("s", "424242424242424").is_empty());
    assert_eq!(
        without_ansi("\u{1b}[3mcvc\u{1b}[0m\u{1b}[2m=\u{1b}[0m123"),
        "cvc=123"
    );
}
