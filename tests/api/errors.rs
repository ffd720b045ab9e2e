//! Every error path of the HTTP platform answers RFC 9457 problem+json with a stable code.

use crate::helpers::{TestOptions, assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_unknown_route_is_404_not_found() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/nothing-here").await, 404, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_method_not_allowed_with_allow() {
    let app = spawn_app().await;
    let resp = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET");
    assert_problem(resp, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_by_its_declared_length() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__SERVER__BODY_LIMIT_BYTES", "1024"))
            .await;
    let big = format!(
        r#"{{"name":"{}","amount":"1.00","currency":"USD"}}"#,
        "x".repeat(2048)
    );
    let resp = app.post_raw("/__test/echo", "application/json", big).await;
    assert_problem(resp, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413_too() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__SERVER__BODY_LIMIT_BYTES", "1024"))
            .await;
    let big = format!(
        r#"{{"name":"{}","amount":"1.00","currency":"USD"}}"#,
        "x".repeat(2048)
    );
    // A stream has no Content-Length: the limit is enforced while reading.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let resp = app
        .client
        .post(app.url("/__test/echo"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload_too_large").await;
}

#[tokio::test]
async fn the_default_body_limit_is_one_mebibyte() {
    let app = spawn_app().await;
    let big = format!(
        r#"{{"name":"{}","amount":"1.00","currency":"USD"}}"#,
        "x".repeat(1024 * 1024)
    );
    assert_problem(
        app.post_raw("/__test/echo", "application/json", big).await,
        413,
        "payload_too_large",
    )
    .await;
    let fine = format!(
        r#"{{"name":"{}","amount":"1.00","currency":"USD"}}"#,
        "x".repeat(1000)
    );
    assert_eq!(
        app.post_raw("/__test/echo", "application/json", fine)
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app().await;
    for body in [
        r#"{"name": "a", "amount": "#,
        "not json",
        r#"{"name": "a",}"#,
        "",
    ] {
        let resp = app.post_raw("/__test/echo", "application/json", body).await;
        assert_problem(resp, 400, "malformed_json").await;
    }
}

#[tokio::test]
async fn an_unknown_field_is_400_unknown_field_naming_it() {
    let app = spawn_app().await;
    let resp = app
        .post_json(
            "/__test/echo",
            &serde_json::json!({"name": "a", "amount": "1.00", "currency": "USD", "amuont": "2"}),
        )
        .await;
    let body = assert_problem(resp, 400, "unknown_field").await;
    assert!(
        body["detail"].as_str().unwrap().contains("amuont"),
        "{body}"
    );
}

#[tokio::test]
async fn a_wrongly_typed_or_missing_field_is_400_validation_failed() {
    let app = spawn_app().await;
    for body in [
        serde_json::json!({"name": 5, "amount": "1.00", "currency": "USD"}),
        serde_json::json!({"amount": "1.00", "currency": "USD"}),
        serde_json::json!({"name": "a", "amount": "1.00", "currency": "usd"}),
        serde_json::json!({"name": "a", "amount": "1,00", "currency": "USD"}),
    ] {
        let resp = app.post_json("/__test/echo", &body).await;
        assert_problem(resp, 400, "validation_failed").await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_unsupported_media_type() {
    let app = spawn_app().await;
    let resp = app
        .post_raw(
            "/__test/echo",
            "text/plain",
            r#"{"name":"a","amount":"1","currency":"USD"}"#,
        )
        .await;
    assert_problem(resp, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn a_panicking_handler_is_500_and_the_worker_keeps_serving() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/__test/panic").await, 500, "internal_error").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("on purpose"),
        "{body}"
    );
    // The harness runs ONE worker: if the panic had killed it, nothing would answer now.
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status().as_u16(), 200);
    }
    assert_problem(app.get("/__test/panic").await, 500, "internal_error").await;
    assert_eq!(app.get("/health").await.status().as_u16(), 200);
}

#[tokio::test]
async fn an_internal_error_never_leaks_its_cause() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/__test/internal").await, 500, "internal_error").await;
    let text = body.to_string();
    for secret in ["SELECT", "password", "hunter2", "postgres://"] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
}

#[tokio::test]
async fn amounts_are_read_exactly_from_strings_and_json_numbers() {
    let app = spawn_app().await;
    for (amount, expected, minor) in [
        (serde_json::json!("100.10"), "100.10", 10010),
        (serde_json::json!("0.01"), "0.01", 1),
        (serde_json::json!("7"), "7.00", 700),
    ] {
        let resp = app
            .post_json(
                "/__test/echo",
                &serde_json::json!({"name": "a", "amount": amount, "currency": "USD"}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["amount"], expected);
        assert_eq!(body["minor"], minor);
    }
    // A JSON number straight from the wire, never through f64: 0.1 + 0.2 style values stay exact.
    for (raw, expected) in [
        ("0.30", "0.30"),
        ("12345678901234567.89", "12345678901234567.89"),
    ] {
        let resp = app
            .post_raw(
                "/__test/echo",
                "application/json",
                format!(r#"{{"name":"a","amount":{raw},"currency":"USD"}}"#),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200, "{raw}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["amount"], expected);
    }
    let jpy = app
        .post_raw(
            "/__test/echo",
            "application/json",
            r#"{"name":"a","amount":500,"currency":"JPY"}"#,
        )
        .await;
    assert_eq!(
        jpy.json::<serde_json::Value>().await.unwrap()["amount"],
        "500"
    );
}

#[tokio::test]
async fn amounts_with_too_many_decimals_zero_or_negative_are_refused() {
    let app = spawn_app().await;
    for (amount, currency, code) in [
        ("1.001", "USD", "too_many_decimals"),
        ("1.5", "JPY", "too_many_decimals"),
        ("0", "USD", "amount_not_positive"),
        ("0.00", "USD", "amount_not_positive"),
        ("-5.00", "USD", "amount_not_positive"),
        ("99999999999999999999", "USD", "amount_overflow"),
    ] {
        let resp = app
            .post_raw(
                "/__test/echo",
                "application/json",
                format!(r#"{{"name":"a","amount":"{amount}","currency":"{currency}"}}"#),
            )
            .await;
        assert_problem(resp, 400, code).await;
    }
}

#[tokio::test]
async fn an_unknown_currency_is_refused() {
    let app = spawn_app().await;
    for currency in ["ZZZ", "XAU", "US"] {
        let resp = app
            .post_json(
                "/__test/echo",
                &serde_json::json!({"name": "a", "amount": "1.00", "currency": currency}),
            )
            .await;
        assert_problem(resp, 400, "validation_failed").await;
    }
}

// ---------------------------------------------------------------------------------------------
// The contract of error codes.

/// Every error `code` the API publishes, once, with the one HTTP status it comes with. Partners
/// branch on these, so the list changes only on purpose: a code some error can answer with
/// that is missing here, a code here that nothing answers with any more, or a code whose
/// status moved all fail `every_published_code_and_only_those_can_be_answered`. A new code
/// goes here and into API.md. (Besides these, a payment the ledger refused for a reason
/// payments do not name answers 422 with the ledger's own result code; see
/// `ledger_results_refusing_a_payment_answer_422_with_their_own_code`.)
const PUBLISHED: &[(&str, u16)] = &[
    // Requests the platform cannot read.
    ("bad_request", 400),
    ("malformed_json", 400),
    ("unknown_field", 400),
    ("invalid_query", 400),
    ("validation_failed", 400),
    ("too_many_decimals", 400),
    ("amount_not_positive", 400),
    ("amount_overflow", 400),
    ("payload_too_large", 413),
    ("unsupported_media_type", 415),
    ("method_not_allowed", 405),
    ("not_acceptable", 406),
    ("request_timeout", 408),
    ("length_required", 411),
    ("uri_too_long", 414),
    ("request_header_fields_too_large", 431),
    ("unprocessable_entity", 422),
    ("conflict", 409),
    ("not_found", 404),
    // Who is asking.
    ("unauthorized", 401),
    ("invalid_credentials", 401),
    ("forbidden", 403),
    ("partner_suspended", 403),
    ("rate_limited", 429),
    ("invalid_token", 400),
    ("password_too_short", 400),
    ("password_too_long", 400),
    ("password_too_common", 400),
    ("password_contains_email", 400),
    ("email_taken", 409),
    ("already_bootstrapped", 409),
    // Idempotency.
    ("idempotency_key_reused", 422),
    ("idempotency_key_in_use", 409),
    // Customers and KYC.
    ("external_id_taken", 409),
    ("application_in_progress", 409),
    ("application_not_in_review", 409),
    ("four_eyes_required", 403),
    ("kyc_required", 403),
    ("limit_exceeded", 403),
    ("invalid_list", 400),
    // Wallets.
    ("wallet_closed", 422),
    ("wallet_frozen", 422),
    ("wallet_not_frozen", 409),
    ("wallet_already_frozen", 409),
    ("wallet_not_empty", 409),
    // Cards.
    ("card_canceled", 409),
    ("card_state_conflict", 409),
    ("reveal_limit_exceeded", 429),
    ("simulator_disabled", 404),
    ("authorization_not_pending", 409),
    ("capture_exceeds_authorization", 422),
    // Payments.
    ("insufficient_funds", 422),
    ("currency_mismatch", 422),
    ("payment_not_refundable", 422),
    ("refund_exceeds_payment", 422),
    // The server's side.
    ("internal_error", 500),
    ("database_unavailable", 503),
    ("ledger_overloaded", 503),
    ("ledger_unavailable", 503),
    ("service_unavailable", 503),
    ("not_ready", 503),
    ("gateway_timeout", 504),
];

/// Every (code, status) an error of `E` can answer with, from one example of each variant.
fn answers_of<E: flowlet::platform::error::ModuleError>(source: &str, into: &mut Answers) {
    use flowlet::platform::error::Problem;
    for example in E::examples() {
        into.push((
            example.code().to_owned(),
            example.status().as_u16(),
            source.to_owned(),
        ));
    }
}

type Answers = Vec<(String, u16, String)>;

/// The codes the platform answers with by building an `ApiError` itself (extractors,
/// idempotency, readiness, the principal): every `ApiError::new(StatusCode::X, "code", ...)` in
/// `src/`, read from the source as the architecture test reads it. A code that is not a
/// literal there fails this test: the contract must be able to see it.
fn literal_answers(into: &mut Answers) {
    fn status_of(name: &str) -> u16 {
        match name {
            "BAD_REQUEST" => 400,
            "UNAUTHORIZED" => 401,
            "FORBIDDEN" => 403,
            "NOT_FOUND" => 404,
            "CONFLICT" => 409,
            "PAYLOAD_TOO_LARGE" => 413,
            "UNSUPPORTED_MEDIA_TYPE" => 415,
            "UNPROCESSABLE_ENTITY" => 422,
            "TOO_MANY_REQUESTS" => 429,
            "INTERNAL_SERVER_ERROR" => 500,
            "SERVICE_UNAVAILABLE" => 503,
            other => panic!("StatusCode::{other}: add its number to status_of"),
        }
    }
    fn walk(dir: &std::path::Path, into: &mut Answers) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                scan(&path, &std::fs::read_to_string(&path).unwrap(), into);
            }
        }
    }
    fn scan(path: &std::path::Path, text: &str, into: &mut Answers) {
        for opening in ["ApiError::new(", "Self::new(StatusCode::"] {
            for (at, _) in text.match_indices(opening) {
                let rest = text[at + opening.len()..].trim_start();
                let rest = rest.strip_prefix("StatusCode::").unwrap_or(rest);
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                let rest = rest[name.len()..].trim_start();
                let code = rest
                    .strip_prefix(',')
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('"'))
                    .and_then(|r| r.split_once('"'))
                    .map(|(code, _)| code);
                let line = text[..at].lines().count();
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                let place = format!(
                    "{}:{line}",
                    path.strip_prefix(root).unwrap_or(path).display()
                );
                if name.is_empty() {
                    // `ApiError::new(status, code, ...)`, the constructor itself.
                    assert!(rest.starts_with("status"), "{place}: status not readable");
                    continue;
                }
                let code = code.unwrap_or_else(|| panic!("{place}: the code is not a literal"));
                into.push((code.to_owned(), status_of(&name), place));
            }
        }
    }
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        into,
    );
}

/// Everything the API can answer with: each module's errors, the platform's own problems and
/// the codes of bare statuses.
fn every_answer() -> Answers {
    let mut answers = Answers::new();
    answers_of::<flowlet::auth::AuthError>("auth", &mut answers);
    answers_of::<flowlet::kyc::KycError>("kyc", &mut answers);
    answers_of::<flowlet::ledger::LedgerError>("ledger", &mut answers);
    answers_of::<flowlet::notify::NotifyError>("notify", &mut answers);
    answers_of::<flowlet::payment::PaymentError>("payment", &mut answers);
    answers_of::<flowlet::wallet::WalletError>("wallet", &mut answers);
    answers_of::<flowlet::card::CardError>("card", &mut answers);
    literal_answers(&mut answers);
    for (status, code) in flowlet::platform::error::BARE_STATUS_CODES {
        answers.push((code.to_owned(), status, "a bare status".to_owned()));
    }
    answers
}

/// Codes that are ledger result codes, which a refused payment may answer with.
fn ledger_results() -> std::collections::BTreeSet<&'static str> {
    flowlet::ledger::ResultCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "ok")
        .collect()
}

#[test]
fn every_published_code_and_only_those_can_be_answered() {
    use std::collections::BTreeMap;
    let published: BTreeMap<&str, u16> = PUBLISHED.iter().copied().collect();
    assert_eq!(published.len(), PUBLISHED.len(), "a code is listed twice");
    let results = ledger_results();
    let mut answered = BTreeMap::new();
    let mut wrong = Vec::new();
    for (code, status, source) in every_answer() {
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{source}: code `{code}` is not snake_case"
        );
        match published.get(code.as_str()) {
            Some(expected) if *expected == status => {}
            Some(expected) => wrong.push(format!(
                "{source}: `{code}` answers {status}, published with {expected}"
            )),
            None if source == "payment" && results.contains(code.as_str()) && status == 422 => {
                continue;
            }
            None => wrong.push(format!(
                "{source}: `{code}` ({status}) is not published: add it to PUBLISHED and API.md"
            )),
        }
        answered.insert(code, status);
    }
    for code in published.keys() {
        if !answered.contains_key(*code) {
            wrong.push(format!(
                "`{code}` is published but nothing answers with it any more"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ledger_results_refusing_a_payment_answer_422_with_their_own_code() {
    use flowlet::platform::error::Problem;
    for code in flowlet::ledger::ResultCode::ALL {
        if code.as_str() == "ok" {
            continue;
        }
        let refused = flowlet::payment::PaymentError::Refused(code);
        assert_eq!(refused.status().as_u16(), 422, "{code:?}");
        assert_eq!(refused.code(), code.as_str());
        assert_eq!(
            refused.extensions().unwrap()["ledger_result"],
            code.as_str()
        );
    }
}
