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
