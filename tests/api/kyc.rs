//! Customers and KYC over HTTP: customers and their bad inputs, every application transition
//! and automated check, manual review with four eyes, sanctions screening and re-screening
//! through the operator's CLI, personal data sealed at rest, and the tiers' limits through the
//! `Compliance` trait with a fake clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Datelike, Utc};
use flowlet::kernel::{PartnerId, Role};
use flowlet::kyc::{
    Compliance, CustomerId, Denial, Direction, KycError, KycService, LimitKind, Movement,
    OutgoingKind, system_clock,
};
use flowlet::notify::TransactionalOutbox;
use flowlet::platform::money::{Currency, Money};
use serde_json::{Value, json};

use crate::cli::{flowlet_json, flowlet_on, flowlet_on_with_stdin};
use crate::helpers::{TestApp, assert_problem, spawn_app, unique};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sanctions");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// A KYC service over the app's database, as an operator's process or another module has it.
fn kyc_of(app: &TestApp) -> KycService {
    KycService::new(
        app.pool(),
        &app.settings.kyc,
        system_clock(),
        Arc::new(TransactionalOutbox),
    )
    .unwrap()
}

/// Loads the repository's simple test list (as `flowlet admin sanctions load` does).
pub(crate) async fn load_test_list(app: &TestApp) {
    let bytes = std::fs::read(fixture("sanctions_simple.csv")).unwrap();
    kyc_of(app).load_list("test", &bytes).await.unwrap();
}

pub(crate) fn person(first: &str, last: &str, dob: &str, country: &str) -> Value {
    json!({"first_name": first, "last_name": last, "date_of_birth": dob, "country": country})
}

pub(crate) fn passport(number: &str) -> Value {
    json!({"document_type": "passport", "document_number": number, "document_country": "DE"})
}

fn address() -> Value {
    json!({"line1": "Hauptstraße 5", "city": "Berlin", "postal_code": "10115", "country": "DE"})
}

/// Creates a customer; returns its id.
pub(crate) async fn create(app: &TestApp, key: &str, body: &Value) -> String {
    let resp = app.post_as(key, "/v1/customers", body).await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let customer: Value = resp.json().await.unwrap();
    customer["id"].as_str().unwrap().to_owned()
}

/// Submits an application; it must be accepted (201). Returns the application.
pub(crate) async fn submit(app: &TestApp, key: &str, customer: &str, body: &Value) -> Value {
    let resp = app
        .post_as(key, &format!("/v1/customers/{customer}/kyc"), body)
        .await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    resp.json().await.unwrap()
}

pub(crate) async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let resp = app.get_as(token, path).await;
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    resp.json().await.unwrap()
}

/// `(from, to, actor)` of each transition.
fn transitions(application: &Value) -> Vec<(Value, String, String)> {
    application["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].clone(),
                t["to"].as_str().unwrap().to_owned(),
                t["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn check<'a>(application: &'a Value, name: &str) -> &'a Value {
    application["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {application:#}"))
}

async fn events(app: &TestApp, event_type: &str, customer: &str) -> i64 {
    app.sql_count(&format!(
        "SELECT count(*) AS n FROM notify_events \
         WHERE type = '{event_type}' AND data->>'customer_id' = '{customer}'"
    ))
    .await
}

async fn mail_to(app: &TestApp, to: &str, expected: usize) -> Vec<crate::mailbox::ReceivedEmail> {
    let started = std::time::Instant::now();
    loop {
        let mail: Vec<_> = app
            .mail(0)
            .await
            .into_iter()
            .filter(|m| m.to.contains(to))
            .collect();
        if mail.len() >= expected || started.elapsed() > std::time::Duration::from_secs(10) {
            return mail;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A second platform admin, made by an operator (four eyes needs two).
async fn second_admin(app: &TestApp) -> crate::helpers::TestUser {
    let email = format!("reviewer{}@flowlet.example", unique());
    let password = format!("quartz-lantern-meadow-{}", unique());
    let out = flowlet_on_with_stdin(
        app,
        &[
            "admin",
            "user",
            "create",
            "--email",
            &email,
            "--role",
            "platform_admin",
            "--json",
        ],
        &format!("{password}\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::helpers::TestUser {
        id: serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        email,
        password,
    }
}

// ----- customers ---------------------------------------------------------------------------------

#[tokio::test]
async fn customers_belong_to_their_partner_and_are_found_by_external_id_and_email() {
    let app = spawn_app().await;
    let (a, b) = (app.new_partner().await, app.new_partner().await);
    let mut body = person("Jane", "Doe", "1990-05-17", "DE");
    body["external_id"] = json!("crm-1");
    body["email"] = json!(" Jane.Doe@Example.com ");
    body["address"] = address();
    let resp = app.post_as(&a.key, "/v1/customers", &body).await;
    assert_eq!(resp.status().as_u16(), 201);
    let customer: Value = resp.json().await.unwrap();
    let id = customer["id"].as_str().unwrap();
    assert!(id.starts_with("cus_"), "{id}");
    assert_eq!(customer["partner_id"], a.id.to_string());
    assert_eq!(customer["email"], "jane.doe@example.com");
    assert_eq!(customer["first_name"], "Jane");
    assert_eq!(customer["date_of_birth"], "1990-05-17");
    assert_eq!(customer["address"]["line1"], "Hauptstraße 5");
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("none"), &json!(0))
    );

    let read = get(&app, &a.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(read, customer);
    let found = get(&app, &a.key, "/v1/customers?external_id=crm-1").await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["id"], id);
    let by_email = get(&app, &a.key, "/v1/customers?email=JANE.DOE%40example.com").await;
    assert_eq!(by_email["data"][0]["id"], id);

    // Partner B sees none of it.
    let resp = app.get_as(&b.key, &format!("/v1/customers/{id}")).await;
    assert_problem(resp, 404, "not_found").await;
    let found = get(&app, &b.key, "/v1/customers?external_id=crm-1").await;
    assert_eq!(found["data"], json!([]));
    let resp = app.get_as(&b.key, &format!("/v1/customers/{id}/kyc")).await;
    assert_problem(resp, 404, "not_found").await;

    // external_id is unique per partner, not across partners.
    let resp = app.post_as(&a.key, "/v1/customers", &body).await;
    assert_problem(resp, 409, "external_id_taken").await;
    assert_eq!(app.count("kyc_customers").await, 1);
    create(&app, &b.key, &body).await;
    assert_eq!(app.count("kyc_customers").await, 2);

    for path in [
        "/v1/customers/cus_nope",
        "/v1/customers/ptn_01h455vb4pex5vsknk084sn02q",
    ] {
        assert_problem(app.get_as(&a.key, path).await, 404, "not_found").await;
    }
    let resp = app.get_as(&a.key, &format!("/v1/customers/{id}/kyc")).await;
    assert_problem(resp, 404, "not_found").await;
    let resp = app
        .client
        .get(app.url("/v1/customers"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn every_bad_customer_body_is_a_400_naming_the_problem_and_nothing_is_stored() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let good = || {
        let mut body = person("Jane", "Doe", "1990-05-17", "DE");
        body["email"] = json!("jane@example.com");
        body["external_id"] = json!("crm-7");
        body["address"] = address();
        body
    };
    let without = |field: &str| {
        let mut body = good();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let with = |pointer: &str, value: Value| {
        let mut body = good();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
        (
            "missing first_name",
            without("first_name"),
            "validation_failed",
            None,
        ),
        (
            "missing last_name",
            without("last_name"),
            "validation_failed",
            None,
        ),
        (
            "missing date_of_birth",
            without("date_of_birth"),
            "validation_failed",
            None,
        ),
        (
            "missing country",
            without("country"),
            "validation_failed",
            None,
        ),
        (
            "empty first_name",
            with("/first_name", json!("  ")),
            "validation_failed",
            Some("first_name"),
        ),
        (
            "control characters",
            with("/last_name", json!("Doe\u{0}")),
            "validation_failed",
            Some("last_name"),
        ),
        (
            "future date of birth",
            with("/date_of_birth", json!("2099-01-01")),
            "validation_failed",
            Some("date_of_birth"),
        ),
        (
            "date of birth not ISO",
            with("/date_of_birth", json!("17/05/1990")),
            "validation_failed",
            Some("date_of_birth"),
        ),
        (
            "impossible date",
            with("/date_of_birth", json!("1990-02-30")),
            "validation_failed",
            Some("date_of_birth"),
        ),
        (
            "date of birth as a number",
            with("/date_of_birth", json!(19900517)),
            "validation_failed",
            None,
        ),
        (
            "unknown country",
            with("/country", json!("XX")),
            "validation_failed",
            Some("country"),
        ),
        (
            "alpha-3 country",
            with("/country", json!("DEU")),
            "validation_failed",
            Some("country"),
        ),
        (
            "lower-case country",
            with("/country", json!("de")),
            "validation_failed",
            Some("country"),
        ),
        (
            "bad email",
            with("/email", json!("jane at example")),
            "validation_failed",
            Some("email"),
        ),
        (
            "address without a city",
            {
                let mut body = good();
                body["address"].as_object_mut().unwrap().remove("city");
                body
            },
            "validation_failed",
            None,
        ),
        (
            "address in no country",
            with("/address/country", json!("QQ")),
            "validation_failed",
            Some("address.country"),
        ),
        (
            "empty external_id",
            with("/external_id", json!("")),
            "validation_failed",
            Some("external_id"),
        ),
        (
            "an unknown field",
            {
                let mut body = good();
                body["ssn"] = json!("078-05-1120");
                body
            },
            "unknown_field",
            None,
        ),
    ];
    for (what, body, code, field) in cases {
        let resp = app.post_as(&partner.key, "/v1/customers", &body).await;
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        let problem = assert_problem(resp, 400, code).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{what}: {problem:#}");
        }
    }
    let resp = app
        .request(reqwest::Method::POST, "/v1/customers", &partner.key)
        .header("content-type", "application/json")
        .body("{\"first_name\": \"Jane\",")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "malformed_json").await;
    assert_eq!(app.count("kyc_customers").await, 0);
    create(&app, &partner.key, &good()).await;
    assert_eq!(
        app.count("kyc_customers").await,
        1,
        "the good body is stored"
    );
}

#[tokio::test]
async fn the_raw_database_rows_hold_no_clear_name_birth_date_email_address_or_document_number() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let mut body = person("Wilhelmina", "Quarrington", "1987-03-29", "DE");
    body["email"] = json!("wilhelmina.q@example.com");
    body["address"] = json!({"line1": "Zinnoberweg 77", "city": "Potsdam",
                             "postal_code": "14467", "country": "DE"});
    let id = create(&app, &partner.key, &body).await;
    let application = submit(&app, &partner.key, &id, &passport("C01X00T47")).await;
    assert_eq!(application["status"], "approved");
    assert_eq!(application["document_number_last4"], "0T47");

    let rows = "(SELECT row_to_json(c)::text AS t FROM kyc_customers c \
                UNION ALL SELECT row_to_json(a)::text FROM kyc_applications a \
                UNION ALL SELECT row_to_json(t)::text FROM kyc_transitions t) r";
    let containing = |needle: &str| {
        format!("SELECT count(*) AS n FROM {rows} WHERE lower(r.t) LIKE lower('%{needle}%')")
    };
    for secret in [
        "Wilhelmina",
        "Quarrington",
        "1987-03-29",
        "wilhelmina.q",
        "Zinnoberweg",
        "Potsdam",
        "C01X00T47",
    ] {
        assert_eq!(
            app.sql_count(&containing(secret)).await,
            0,
            "{secret} in clear"
        );
    }
    // The rows are there, with each sealed value naming its key.
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM kyc_customers WHERE country = 'DE' \
             AND first_name_enc LIKE 'dev:%' AND date_of_birth_enc LIKE 'dev:%' \
             AND email_hash IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM kyc_applications \
             WHERE document_enc LIKE 'dev:%' AND document_hash IS NOT NULL"
        )
        .await,
        1
    );
    // The API still reads it back.
    let read = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(read["last_name"], "Quarrington");
}

// ----- applications --------------------------------------------------------------------------------

#[tokio::test]
async fn every_bad_submission_is_a_400_and_leaves_no_application() {
    let app = spawn_app().await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let id = create(
        &app,
        &partner.key,
        &person("Jane", "Doe", "1990-05-17", "DE"),
    )
    .await;
    let with = |key: &str, value: Value| {
        let mut body = passport("C01X00T47");
        body[key] = value;
        body
    };
    let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
        ("empty body", json!({}), "validation_failed", None),
        (
            "missing document_number",
            json!({"document_type": "passport", "document_country": "DE"}),
            "validation_failed",
            None,
        ),
        (
            "unknown document type",
            with("document_type", json!("library_card")),
            "validation_failed",
            Some("document_type"),
        ),
        (
            "blank document number",
            with("document_number", json!(" - ")),
            "validation_failed",
            Some("document_number"),
        ),
        (
            "bad document country",
            with("document_country", json!("XX")),
            "validation_failed",
            Some("document_country"),
        ),
        (
            "malformed expiry",
            with("document_expiry", json!("2030-13-01")),
            "validation_failed",
            Some("document_expiry"),
        ),
        (
            "tier 3",
            with("requested_tier", json!(3)),
            "validation_failed",
            Some("requested_tier"),
        ),
        (
            "tier 0",
            with("requested_tier", json!(0)),
            "validation_failed",
            Some("requested_tier"),
        ),
        (
            "bad address",
            with(
                "address",
                json!({"line1": "x", "city": "y", "postal_code": "z", "country": "QQ"}),
            ),
            "validation_failed",
            Some("address.country"),
        ),
        (
            "an unknown field",
            with("selfie", json!("data:...")),
            "unknown_field",
            None,
        ),
    ];
    let path = format!("/v1/customers/{id}/kyc");
    for (what, body, code, field) in cases {
        let resp = app.post_as(&partner.key, &path, &body).await;
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        let problem = assert_problem(resp, 400, code).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{what}: {problem:#}");
        }
    }
    let resp = app.post_as(&other.key, &path, &passport("C01X00T47")).await;
    assert_problem(resp, 404, "not_found").await;
    let unknown = format!("/v1/customers/{}/kyc", CustomerId::new());
    let resp = app
        .post_as(&partner.key, &unknown, &passport("C01X00T47"))
        .await;
    assert_problem(resp, 404, "not_found").await;

    assert_eq!(app.count("kyc_applications").await, 0);
    assert_eq!(app.count("kyc_transitions").await, 0);
    assert_eq!(app.count("notify_events").await, 0);
    let customer = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(customer["kyc_status"], "none");
}

#[tokio::test]
async fn a_clean_submission_is_approved_at_tier_1_with_every_check_named_announced_and_mailed() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let mut body = person("Emma", "Johnson", "1990-05-17", "DE");
    body["email"] = json!("emma.johnson@example.com");
    let id = create(&app, &partner.key, &body).await;

    let application = submit(&app, &partner.key, &id, &passport("c01x-00t47")).await;
    assert!(application["id"].as_str().unwrap().starts_with("kyc_"));
    assert_eq!(application["status"], "approved");
    assert_eq!(application["granted_tier"], 1);
    assert_eq!(application["decision_code"], "checks_passed");
    assert_eq!(application["origin"], "submission");
    let names: Vec<&str> = application["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "required_data",
            "age",
            "document_format",
            "document_expiry",
            "duplicate_identity",
            "high_risk_country",
            "sanctions"
        ]
    );
    assert!(
        application["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["result"] == "passed"),
        "{application:#}"
    );
    assert_eq!(
        transitions(&application),
        [
            (Value::Null, "pending".into(), partner.key_id.clone()),
            (
                json!("pending"),
                "approved".into(),
                "system:checks_passed".into()
            ),
        ]
    );
    assert!(application.get("screening").is_none(), "reviewers only");

    let customer = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("approved"), &json!(1))
    );
    let latest = get(&app, &partner.key, &format!("/v1/customers/{id}/kyc")).await;
    assert_eq!(latest["id"], application["id"]);
    let by_id = get(
        &app,
        &partner.key,
        &format!(
            "/v1/kyc/applications/{}",
            application["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(by_id["status"], "approved");

    assert_eq!(events(&app, "kyc.approved", &id).await, 1);
    let mail = mail_to(&app, "emma.johnson@example.com", 1).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].subject, "Your identity verification: approved");
    assert!(mail[0].text.contains("tier 1"), "{}", mail[0].text);

    // Tier 1 again: nothing to do.
    let resp = app
        .post_as(
            &partner.key,
            &format!("/v1/customers/{id}/kyc"),
            &passport("C01X00T47"),
        )
        .await;
    assert_problem(resp, 400, "validation_failed").await;
    assert_eq!(app.count("kyc_applications").await, 1);
}

#[tokio::test]
async fn a_failed_check_rejects_with_its_rule_and_a_new_application_may_follow() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let today = Utc::now().date_naive();
    let seventeen = today
        .with_year(today.year() - 17)
        .unwrap_or(today)
        .format("%Y-%m-%d")
        .to_string();
    let mut minor = person("Tim", "Young", &seventeen, "DE");
    minor["email"] = json!("tim.young@example.com");
    let cases = [
        (minor, passport("C01X00T47"), "age", "underage"),
        (
            person("Ann", "Badnumber", "1980-01-01", "DE"),
            passport("12-AB"),
            "document_format",
            "document_number_invalid",
        ),
        (
            person("Ann", "Expired", "1980-01-01", "DE"),
            {
                let mut doc = passport("C01X00T48");
                doc["document_expiry"] = json!("2020-01-01");
                doc
            },
            "document_expiry",
            "document_expired",
        ),
    ];
    for (body, document, check_name, code) in cases {
        let id = create(&app, &partner.key, &body).await;
        let application = submit(&app, &partner.key, &id, &document).await;
        assert_eq!(application["status"], "rejected", "{code}");
        assert_eq!(application["decision_code"], code);
        assert_eq!(application["granted_tier"], Value::Null);
        assert_eq!(check(&application, check_name)["result"], "failed");
        assert_eq!(check(&application, check_name)["code"], code);
        assert_eq!(
            transitions(&application)[1],
            (
                json!("pending"),
                "rejected".into(),
                format!("system:{code}")
            )
        );
        assert!(application["decided"].is_string());
        let customer = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
        assert_eq!(
            (&customer["kyc_status"], &customer["kyc_tier"]),
            (&json!("rejected"), &json!(0))
        );
        assert_eq!(events(&app, "kyc.rejected", &id).await, 1);

        if code == "document_expired" {
            // Rejected is final for that application; a new one with a valid document passes.
            let again = submit(&app, &partner.key, &id, &passport("C01X00T48")).await;
            assert_eq!(again["status"], "approved");
            assert_ne!(again["id"], application["id"]);
        }
    }
    let mail = mail_to(&app, "tim.young@example.com", 1).await;
    assert_eq!(mail[0].subject, "Your identity verification: not approved");
    assert!(
        mail[0].text.contains("at least 18 years old"),
        "{}",
        mail[0].text
    );
    assert!(
        !mail[0].text.contains("underage"),
        "rule codes stay internal"
    );
}

#[tokio::test]
async fn risky_facts_send_the_application_to_review_and_the_queue_lists_it() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let admin_token = app.login(&admin).await;

    // A resident of a high-risk country.
    let mut resident = person("Reza", "Karimi", "1985-01-01", "IR");
    resident["email"] = json!("reza.karimi@example.com");
    let high_risk = create(&app, &partner.key, &resident).await;
    let application = submit(&app, &partner.key, &high_risk, &passport("C01X00T49")).await;
    assert_eq!(application["status"], "review");
    assert_eq!(application["decision_code"], "high_risk_country");
    assert_eq!(check(&application, "high_risk_country")["result"], "review");
    assert_eq!(events(&app, "kyc.review", &high_risk).await, 1);
    let mail = mail_to(&app, "reza.karimi@example.com", 1).await;
    assert_eq!(mail[0].subject, "Your identity verification: under review");

    // The same document under a second customer of the same partner...
    let first = create(
        &app,
        &partner.key,
        &person("Ann", "First", "1980-01-01", "DE"),
    )
    .await;
    assert_eq!(
        submit(&app, &partner.key, &first, &passport("C01X00T50")).await["status"],
        "approved"
    );
    let second = create(
        &app,
        &partner.key,
        &person("Ann", "Second", "1980-01-01", "DE"),
    )
    .await;
    let duplicate = submit(&app, &partner.key, &second, &passport("c01x00t50")).await;
    assert_eq!(duplicate["status"], "review");
    assert_eq!(duplicate["decision_code"], "duplicate_identity");
    assert!(
        check(&duplicate, "duplicate_identity")["detail"]
            .as_str()
            .unwrap()
            .contains(&first)
    );
    // ...but not under another partner's customer.
    let elsewhere = create(
        &app,
        &other.key,
        &person("Ann", "First", "1980-01-01", "DE"),
    )
    .await;
    assert_eq!(
        submit(&app, &other.key, &elsewhere, &passport("C01X00T50")).await["status"],
        "approved"
    );

    // An open application blocks another submission.
    let resp = app
        .post_as(
            &partner.key,
            &format!("/v1/customers/{second}/kyc"),
            &passport("C01X00T51"),
        )
        .await;
    assert_problem(resp, 409, "application_in_progress").await;

    // The review queue: partners see their own, platform admins everyone's, with candidates.
    let queue = get(&app, &partner.key, "/v1/kyc/applications?status=review").await;
    let ids: Vec<&str> = queue["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), high_risk.as_str()], "newest first");
    assert_eq!(
        get(&app, &other.key, "/v1/kyc/applications?status=review").await["data"],
        json!([])
    );
    let all = get(&app, &admin_token, "/v1/kyc/applications?status=review").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    assert!(
        all["data"][0]["screening"].is_array(),
        "reviewers see the screening"
    );
    let approved = get(&app, &admin_token, "/v1/kyc/applications?status=approved").await;
    assert_eq!(approved["data"].as_array().unwrap().len(), 2);
    let page = get(&app, &admin_token, "/v1/kyc/applications?limit=1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &app,
        &admin_token,
        &format!("/v1/kyc/applications?limit=10&cursor={next}"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 3);
    let resp = app
        .get_as(&admin_token, "/v1/kyc/applications?status=maybe")
        .await;
    assert_problem(resp, 400, "validation_failed").await;
}

#[tokio::test]
async fn with_no_sanctions_list_loaded_nobody_is_approved_automatically() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let id = create(
        &app,
        &partner.key,
        &person("Emma", "Johnson", "1990-05-17", "DE"),
    )
    .await;
    let application = submit(&app, &partner.key, &id, &passport("C01X00T47")).await;
    assert_eq!(application["status"], "review");
    assert_eq!(application["decision_code"], "screening_unavailable");
    assert_eq!(check(&application, "sanctions")["result"], "review");
}

#[tokio::test]
async fn tier_2_waits_for_documents_then_a_reviewer_decides_and_the_decision_is_final() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let developer = app.new_user(Some(partner.id), Role::PartnerAdmin).await;
    let developer_token = app.login(&developer).await;
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let admin_token = app.login(&admin).await;
    let mut body = person("Emma", "Johnson", "1990-05-17", "DE");
    body["email"] = json!("emma.j2@example.com");
    let id = create(&app, &partner.key, &body).await;
    let path = format!("/v1/customers/{id}/kyc");

    // Tier 2 without address and expiry: awaiting documents, naming them.
    let mut document = passport("C01X00T47");
    document["requested_tier"] = json!(2);
    let waiting = submit(&app, &partner.key, &id, &document).await;
    assert_eq!(waiting["status"], "awaiting_documents");
    assert_eq!(waiting["missing"], json!(["address", "document_expiry"]));
    assert_eq!(check(&waiting, "required_data")["result"], "missing");
    assert_eq!(
        get(&app, &partner.key, &format!("/v1/customers/{id}")).await["kyc_status"],
        "awaiting_documents"
    );

    // Sending them resumes the same application: awaiting_documents -> pending -> review.
    document["address"] = address();
    document["document_expiry"] = json!("2031-06-30");
    let resp = app.post_as(&developer_token, &path, &document).await;
    assert_eq!(resp.status().as_u16(), 201);
    let review: Value = resp.json().await.unwrap();
    assert_eq!(review["id"], waiting["id"]);
    assert_eq!(
        (&review["status"], &review["decision_code"]),
        (&json!("review"), &json!("document_review"))
    );
    let steps: Vec<(Value, String)> = transitions(&review)
        .into_iter()
        .map(|(f, t, _)| (f, t))
        .collect();
    assert_eq!(
        steps,
        [
            (Value::Null, "pending".to_owned()),
            (json!("pending"), "awaiting_documents".to_owned()),
            (json!("awaiting_documents"), "pending".to_owned()),
            (json!("pending"), "review".to_owned()),
        ]
    );
    assert_eq!(transitions(&review)[2].2, developer.id);
    let app_id = review["id"].as_str().unwrap().to_owned();
    let decision = format!("/v1/kyc/applications/{app_id}/decision");
    let transitions_before = app.count("kyc_transitions").await;

    // Only platform admins decide, with a reason and a known decision.
    let approve = json!({"decision": "approve", "reason": "passport checked against the photo"});
    assert_problem(
        app.post_as(&partner.key, &decision, &approve).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post_as(&developer_token, &decision, &approve).await,
        403,
        "forbidden",
    )
    .await;
    let bad_bodies = [
        (json!({"decision": "approve"}), "validation_failed"),
        (
            json!({"decision": "approve", "reason": "   "}),
            "validation_failed",
        ),
        (
            json!({"decision": "maybe", "reason": "x"}),
            "validation_failed",
        ),
        (
            json!({"decision": "approve", "reason": "x", "tier": 3}),
            "unknown_field",
        ),
    ];
    for (body, code) in bad_bodies {
        assert_problem(app.post_as(&admin_token, &decision, &body).await, 400, code).await;
    }
    let unknown = format!(
        "/v1/kyc/applications/{}/decision",
        "kyc_01h455vb4pex5vsknk084sn02q"
    );
    assert_problem(
        app.post_as(&admin_token, &unknown, &approve).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.count("kyc_transitions").await,
        transitions_before,
        "nothing changed"
    );

    let decided = app.post_as(&admin_token, &decision, &approve).await;
    assert_eq!(decided.status().as_u16(), 200);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!(
        (&decided["status"], &decided["granted_tier"]),
        (&json!("approved"), &json!(2))
    );
    assert_eq!(decided["decision_code"], "manual_approval");
    assert_eq!(
        decided["decision_reason"],
        "passport checked against the photo"
    );
    let last = decided["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["from"], &last["to"], &last["actor"]),
        (&json!("review"), &json!("approved"), &json!(admin.id))
    );
    assert_eq!(last["reason"], "passport checked against the photo");
    let customer = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("approved"), &json!(2))
    );
    assert_eq!(events(&app, "kyc.review", &id).await, 1);
    assert_eq!(events(&app, "kyc.approved", &id).await, 1);
    let mail = mail_to(&app, "emma.j2@example.com", 2).await;
    assert!(mail.iter().any(|m| m.text.contains("tier 2")));

    // Decided is final.
    let reject = json!({"decision": "reject", "reason": "changed my mind"});
    assert_problem(
        app.post_as(&admin_token, &decision, &reject).await,
        409,
        "application_not_in_review",
    )
    .await;
    assert_eq!(
        get(&app, &partner.key, &format!("/v1/customers/{id}")).await["kyc_tier"],
        2
    );
}

#[tokio::test]
async fn four_eyes_the_admin_who_submitted_cannot_decide_another_admin_decides_on_the_cli() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let admin_token = app.login(&admin).await;
    let mut body = person("Emma", "Johnson", "1990-05-17", "DE");
    body["email"] = json!("emma.j3@example.com");
    let id = create(&app, &partner.key, &body).await;

    // Support collected the documents: a platform admin submits for tier 2.
    let mut document = passport("C01X00T47");
    document["requested_tier"] = json!(2);
    document["document_expiry"] = json!("2031-06-30");
    document["address"] = address();
    let review = submit(&app, &admin_token, &id, &document).await;
    assert_eq!(review["status"], "review");
    let app_id = review["id"].as_str().unwrap().to_owned();

    let decision = format!("/v1/kyc/applications/{app_id}/decision");
    let body = json!({"decision": "approve", "reason": "I collected it myself"});
    assert_problem(
        app.post_as(&admin_token, &decision, &body).await,
        403,
        "four_eyes_required",
    )
    .await;
    let out = flowlet_on(
        &app,
        &[
            "admin",
            "kyc",
            "decide",
            &app_id,
            "--approve",
            "--reason",
            "mine",
            "--reviewer",
            &admin.email,
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Four eyes"), "{stderr}");
    assert_eq!(
        get(
            &app,
            &admin_token,
            &format!("/v1/kyc/applications/{app_id}")
        )
        .await["status"],
        "review"
    );

    // The CLI needs a platform admin's identity and one decision.
    let out = flowlet_on(
        &app,
        &[
            "admin",
            "kyc",
            "decide",
            &app_id,
            "--approve",
            "--reason",
            "x",
            "--reviewer",
            "nobody@example.com",
        ],
    )
    .await;
    assert!(!out.status.success());
    let out = flowlet_on(
        &app,
        &[
            "admin",
            "kyc",
            "decide",
            &app_id,
            "--approve",
            "--reject",
            "--reason",
            "x",
            "--reviewer",
            &admin.email,
        ],
    )
    .await;
    assert!(!out.status.success());

    let reviewer = second_admin(&app).await;
    let decided = flowlet_json(
        &app,
        &[
            "admin",
            "kyc",
            "decide",
            &app_id,
            "--reject",
            "--reason",
            "document photo does not match",
            "--reviewer",
            &reviewer.email,
            "--json",
        ],
    )
    .await;
    assert_eq!(decided["status"], "rejected");
    assert_eq!(decided["decision_code"], "manual_rejection");
    let last = decided["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["actor"], &last["reason"]),
        (&json!(reviewer.id), &json!("document photo does not match"))
    );
    let customer = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("rejected"), &json!(0))
    );
    assert_eq!(events(&app, "kyc.rejected", &id).await, 1);
    let mail = mail_to(&app, "emma.j3@example.com", 2).await;
    assert!(mail.iter().any(|m| m.subject.ends_with("not approved")));
    // The second admin is a real login.
    app.login(&reviewer).await;
}

// ----- sanctions -------------------------------------------------------------------------------

#[tokio::test]
async fn screening_sends_exact_reordered_and_misspelt_names_to_review_and_lets_others_pass() {
    let app = spawn_app().await;
    let loaded = flowlet_json(
        &app,
        &[
            "admin",
            "sanctions",
            "load",
            &fixture("sanctions_simple.csv"),
            "--name",
            "test-simple",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        (&loaded["format"], &loaded["entries"]),
        (&json!("simple"), &json!(8))
    );
    let sdn = flowlet_json(
        &app,
        &[
            "admin",
            "sanctions",
            "load",
            &fixture("sdn_sample.csv"),
            "--json",
        ],
    )
    .await;
    assert_eq!(
        (&sdn["name"], &sdn["format"]),
        (&json!("sdn_sample"), &json!("ofac_sdn"))
    );
    let lists = flowlet_json(&app, &["admin", "sanctions", "lists", "--json"]).await;
    assert_eq!(lists.as_array().unwrap().len(), 2);

    let partner = app.new_partner().await;
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let admin_token = app.login(&admin).await;
    let screen =
        |first: &'static str, last: &'static str, dob: &'static str, country: &'static str| {
            let (app, key, token) = (&app, partner.key.clone(), admin_token.clone());
            async move {
                let id = create(app, &key, &person(first, last, dob, country)).await;
                let application = submit(
                    app,
                    &key,
                    &id,
                    &passport(&format!("C{:08}", unique() % 100_000_000)),
                )
                .await;
                let path = format!(
                    "/v1/kyc/applications/{}",
                    application["id"].as_str().unwrap()
                );
                (application, get(app, &token, &path).await)
            }
        };

    let cases = [
        (
            "exact",
            "Viktor Aleksandrovich",
            "Kovalenko",
            "1965-01-12",
            "RU",
        ),
        (
            "reordered",
            "Kovalenko",
            "Viktor Aleksandrovich",
            "1965-01-12",
            "RU",
        ),
        (
            "accents and a typo",
            "Jose María",
            "Ibara Gomez",
            "1971-06-30",
            "VE",
        ),
        (
            "an OFAC entry, surname first there",
            "Farid",
            "Hosseini Tabrizi",
            "1965-01-12",
            "DE",
        ),
    ];
    for (what, first, last, dob, country) in cases {
        let (application, reviewer_view) = screen(first, last, dob, country).await;
        assert_eq!(application["status"], "review", "{what}: {application:#}");
        assert_eq!(application["decision_code"], "sanctions_match", "{what}");
        assert_eq!(check(&application, "sanctions")["result"], "review");
        assert!(
            application.get("screening").is_none(),
            "{what}: partners never see the list entry"
        );
        let hit = &reviewer_view["screening"][0];
        assert!(hit["score"].as_f64().unwrap() >= 0.88, "{what}: {hit:#}");
        assert!(
            hit["entry_name"].is_string()
                && hit["reference"].is_string()
                && hit["list"].is_string(),
            "{what}: {hit:#}"
        );
    }

    let (clear, view) = screen("Emma", "Johnson", "1990-05-17", "DE").await;
    assert_eq!(clear["status"], "approved", "an unrelated name passes");
    assert_eq!(view["screening"], json!([]));

    // The same misspelt name, with the listed date of birth and with another one.
    let (same_dob, same_view) = screen("Viktor", "Kovalenkko", "1965-01-12", "RU").await;
    let (other_dob, other_view) = screen("Viktor", "Kovalenkko", "1980-03-04", "RU").await;
    assert_eq!(same_dob["status"], "review");
    let same_score = same_view["screening"][0]["score"].as_f64().unwrap();
    let other_score = other_view["screening"]
        .as_array()
        .unwrap()
        .first()
        .map_or(0.0, |h| h["score"].as_f64().unwrap());
    assert!(other_score < same_score, "{other_score} < {same_score}");
    assert_eq!(
        other_dob["status"], "approved",
        "below the threshold once the DOB differs"
    );
    // An exact name with a different date of birth stays a reviewer-visible candidate.
    let (_, exact_other) = screen("Viktor Aleksandrovich", "Kovalenko", "1980-03-04", "RU").await;
    let hit = &exact_other["screening"][0];
    assert!(hit["score"].as_f64().unwrap() < 1.0);
    assert!(
        hit["reasons"].to_string().contains("date of birth differs"),
        "{hit:#}"
    );
}

#[tokio::test]
async fn a_bad_list_file_is_refused_whole_and_replaces_nothing() {
    let app = spawn_app().await;
    flowlet_json(
        &app,
        &[
            "admin",
            "sanctions",
            "load",
            &fixture("sanctions_simple.csv"),
            "--name",
            "main",
            "--json",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.csv");
    std::fs::write(
        &broken,
        "name,aliases,date_of_birth,country\nJohn Smith,,1999-99-99,GB\n",
    )
    .unwrap();
    let out = flowlet_on(
        &app,
        &[
            "admin",
            "sanctions",
            "load",
            broken.to_str().unwrap(),
            "--name",
            "main",
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    assert!(
        !flowlet_on(
            &app,
            &["admin", "sanctions", "load", empty.to_str().unwrap()]
        )
        .await
        .status
        .success()
    );
    let missing = dir.path().join("missing.csv");
    assert!(
        !flowlet_on(
            &app,
            &["admin", "sanctions", "load", missing.to_str().unwrap()]
        )
        .await
        .status
        .success()
    );
    let lists = flowlet_json(&app, &["admin", "sanctions", "lists", "--json"]).await;
    assert_eq!(lists.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            &lists[0]["name"],
            &lists[0]["entries"],
            &lists[0]["version"]
        ),
        (&json!("main"), &json!(8), &json!(1))
    );
    assert_eq!(app.count("kyc_sanctions_entries").await, 8);
}

#[tokio::test]
async fn rescreening_after_a_list_load_suspends_a_matching_approved_customer_until_reviewed() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let admin_token = app.login(&admin).await;
    let mut body = person("Ivan", "Petrov", "1970-02-02", "DE");
    body["email"] = json!("ivan.petrov@example.com");
    let ivan = create(&app, &partner.key, &body).await;
    let emma = create(
        &app,
        &partner.key,
        &person("Emma", "Johnson", "1990-05-17", "DE"),
    )
    .await;
    for id in [&ivan, &emma] {
        assert_eq!(
            submit(
                &app,
                &partner.key,
                id,
                &passport(&format!("C{:08}", unique() % 100_000_000))
            )
            .await["status"],
            "approved"
        );
    }

    // A new list names Ivan Petrov.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("update.csv");
    std::fs::write(
        &file,
        "name,aliases,date_of_birth,country\nPETROV Ivan,,1970-02-02,RU\n",
    )
    .unwrap();
    flowlet_json(
        &app,
        &[
            "admin",
            "sanctions",
            "load",
            file.to_str().unwrap(),
            "--name",
            "update",
            "--json",
        ],
    )
    .await;
    let result = flowlet_json(&app, &["admin", "sanctions", "rescreen", "--json"]).await;
    assert_eq!(result, json!({"screened": 2, "flagged": 1, "skipped": 0}));

    let customer = get(&app, &partner.key, &format!("/v1/customers/{ivan}")).await;
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("review"), &json!(0))
    );
    assert_eq!(
        get(&app, &partner.key, &format!("/v1/customers/{emma}")).await["kyc_tier"],
        1
    );
    let queue = get(&app, &admin_token, "/v1/kyc/applications?status=review").await;
    assert_eq!(queue["data"].as_array().unwrap().len(), 1);
    let flagged = &queue["data"][0];
    assert_eq!(
        (&flagged["customer_id"], &flagged["origin"]),
        (&json!(ivan), &json!("rescreening"))
    );
    assert_eq!(flagged["screening"][0]["list"], "update");
    assert_eq!(
        flagged["transitions"][0]["actor"],
        "system:sanctions_rescreening"
    );
    assert_eq!(events(&app, "kyc.review", &ivan).await, 1);

    // Rescreening again flags nobody twice.
    let again = flowlet_json(&app, &["admin", "sanctions", "rescreen", "--json"]).await;
    assert_eq!(again["flagged"], 0);

    // A reviewer finds a namesake: approval restores the tier.
    let path = format!(
        "/v1/kyc/applications/{}/decision",
        flagged["id"].as_str().unwrap()
    );
    let resp = app
        .post_as(&admin_token, &path, &json!({"decision": "approve", "reason": "namesake: different nationality and passport"}))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let customer = get(&app, &partner.key, &format!("/v1/customers/{ivan}")).await;
    assert_eq!(
        (&customer["kyc_status"], &customer["kyc_tier"]),
        (&json!("approved"), &json!(1))
    );
}

// ----- tiers and compliance -------------------------------------------------------------------

#[tokio::test]
async fn partners_read_the_tiers_and_their_limits() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let developer = app.new_user(Some(partner.id), Role::PartnerDeveloper).await;
    let token = app.login(&developer).await;
    let tiers = get(&app, &token, "/v1/kyc/tiers").await;
    let tiers = tiers["data"].as_array().unwrap();
    assert_eq!(
        tiers
            .iter()
            .map(|t| t["tier"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        (&tiers[0]["outgoing"], &tiers[0]["limits"]),
        (&json!(false), &json!([]))
    );
    assert_eq!(
        (&tiers[1]["withdrawals"], &tiers[1]["cards"]),
        (&json!(true), &json!(false))
    );
    let usd = tiers[1]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["currency"] == "USD")
        .unwrap();
    assert_eq!(
        usd,
        &json!({"currency": "USD", "max_balance": "2000.00", "max_single_payment": "1000.00",
                "daily_outgoing": "1000.00", "monthly_outgoing": "3000.00"})
    );
    assert_eq!(tiers[2]["cards"], true);
    let resp = app
        .client
        .get(app.url("/v1/kyc/tiers"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;
}

/// A clock the test moves.
fn fake_clock(start: &str) -> (Arc<AtomicI64>, flowlet::kyc::Clock) {
    let now = Arc::new(AtomicI64::new(
        start.parse::<DateTime<Utc>>().unwrap().timestamp(),
    ));
    let read = now.clone();
    let clock: flowlet::kyc::Clock = Arc::new(move || {
        DateTime::from_timestamp(read.load(Ordering::SeqCst), 0).unwrap_or_default()
    });
    (now, clock)
}

fn usd(amount: &str) -> Money {
    Money::from_decimal(amount.parse().unwrap(), Currency::parse("USD").unwrap()).unwrap()
}

fn outgoing(customer: CustomerId, amount: &str, kind: OutgoingKind) -> Movement {
    Movement {
        customer_id: customer,
        amount: usd(amount),
        direction: Direction::Outgoing(kind),
        balance_after: None,
    }
}

/// Asks `Compliance::authorize` in a transaction of its own, as a mover would; `commit` false
/// rolls it back (the movement failed later in the same transaction).
async fn authorize(
    kyc: &KycService,
    app: &TestApp,
    partner: PartnerId,
    movement: Movement,
    commit: bool,
) -> Result<(), KycError> {
    let db = app.pool();
    let result = db
        .in_tx(|tx| {
            let kyc = kyc.clone();
            Box::pin(async move {
                kyc.authorize(tx, partner, &movement).await?;
                if commit {
                    Ok(())
                } else {
                    Err(KycError::Forbidden("rolled back by the test".into()))
                }
            })
        })
        .await;
    match result {
        Err(KycError::Forbidden(_)) if !commit => Ok(()),
        other => other,
    }
}

fn required_tier_of(result: Result<(), KycError>) -> (u8, Option<u8>) {
    match result {
        Err(KycError::Denied(Denial::KycRequired {
            current_tier,
            required_tier,
            ..
        })) => (current_tier, required_tier),
        other => panic!("expected kyc_required, got {other:?}"),
    }
}

fn limit_of(result: Result<(), KycError>) -> (LimitKind, String, String) {
    match result {
        Err(KycError::Denied(Denial::LimitExceeded {
            limit,
            limit_amount,
            remaining,
        })) => (
            limit,
            limit_amount.format_amount(),
            remaining.format_amount(),
        ),
        other => panic!("expected limit_exceeded, got {other:?}"),
    }
}

/// A customer approved at tier 1 and one who never applied, of the partner with `key`.
async fn approved_and_unverified(app: &TestApp, key: &str) -> (CustomerId, CustomerId) {
    let approved = create(app, key, &person("Emma", "Johnson", "1990-05-17", "DE")).await;
    submit(app, key, &approved, &passport("C01X00T47")).await;
    let unverified = create(app, key, &person("Tom", "Newman", "1990-05-17", "DE")).await;
    (approved.parse().unwrap(), unverified.parse().unwrap())
}

#[tokio::test]
async fn the_compliance_trait_enforces_tier_limits_by_day_and_month_on_a_fake_clock() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let (approved, unverified) = approved_and_unverified(&app, &partner.key).await;

    let (now, clock) = fake_clock("2026-03-30T22:00:00Z");
    let kyc = KycService::new(
        app.pool(),
        &app.settings.kyc,
        clock,
        Arc::new(TransactionalOutbox),
    )
    .unwrap();
    let day = |n: i64| now.fetch_add(n * 86_400, Ordering::SeqCst);
    let pay = |amount: &str| outgoing(approved, amount, OutgoingKind::Payment);

    // Tier 0 moves nothing out; the denial names the tier that would.
    assert_eq!(
        required_tier_of(
            authorize(
                &kyc,
                &app,
                partner.id,
                outgoing(unverified, "1.00", OutgoingKind::Payment),
                true
            )
            .await
        ),
        (0, Some(1))
    );
    // Cards need tier 2; withdrawals tier 1.
    assert_eq!(
        required_tier_of(
            authorize(
                &kyc,
                &app,
                partner.id,
                outgoing(approved, "5.00", OutgoingKind::Card),
                true
            )
            .await
        ),
        (1, Some(2))
    );
    authorize(
        &kyc,
        &app,
        partner.id,
        outgoing(approved, "100.00", OutgoingKind::Withdrawal),
        true,
    )
    .await
    .unwrap();
    // Another partner's customer does not exist for it.
    assert!(matches!(
        authorize(&kyc, &app, other.id, pay("1.00"), true).await,
        Err(KycError::NotFound(_))
    ));

    // The single-payment cap, then the daily total with what remains.
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, pay("1000.01"), true).await).0,
        LimitKind::MaxSinglePayment
    );
    authorize(&kyc, &app, partner.id, pay("600.00"), true)
        .await
        .unwrap();
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, pay("300.01"), true).await),
        (LimitKind::DailyOutgoing, "1000.00".into(), "300.00".into())
    );
    // A movement rolled back with its transaction counts nothing.
    authorize(&kyc, &app, partner.id, pay("300.00"), false)
        .await
        .unwrap();
    authorize(&kyc, &app, partner.id, pay("300.00"), true)
        .await
        .unwrap();
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, pay("0.01"), true).await).2,
        "0.00"
    );

    // 22:00 + 2h is the next UTC day (March 31): the daily total starts again.
    now.fetch_add(2 * 3600, Ordering::SeqCst);
    authorize(&kyc, &app, partner.id, pay("1000.00"), true)
        .await
        .unwrap();
    day(1); // April 1: a new month, too.
    authorize(&kyc, &app, partner.id, pay("1000.00"), true)
        .await
        .unwrap();
    day(1);
    authorize(&kyc, &app, partner.id, pay("1000.00"), true)
        .await
        .unwrap();
    day(1);
    authorize(&kyc, &app, partner.id, pay("999.00"), true)
        .await
        .unwrap();
    day(1);
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, pay("2.00"), true).await),
        (LimitKind::MonthlyOutgoing, "3000.00".into(), "1.00".into())
    );

    // A payment that failed after being allowed is given back to the day and month it used.
    let counted_at = kyc_now(&now);
    let db = app.pool();
    db.in_tx(|tx| {
        let kyc = kyc.clone();
        Box::pin(async move {
            kyc.release(
                tx,
                approved,
                usd("999.00"),
                counted_at - chrono::Duration::days(1),
            )
            .await
        })
    })
    .await
    .unwrap();
    authorize(&kyc, &app, partner.id, pay("900.00"), true)
        .await
        .unwrap();

    // Incoming money may not lift the balance over the tier's cap.
    let incoming = Movement {
        customer_id: approved,
        amount: usd("500.00"),
        direction: Direction::Incoming,
        balance_after: Some(usd("2000.01")),
    };
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, incoming, true).await).0,
        LimitKind::MaxBalance
    );

    // The tier the other modules read.
    let tier = db
        .in_tx(|tx| {
            let kyc = kyc.clone();
            Box::pin(async move { kyc.customer_tier(tx, partner.id, approved).await })
        })
        .await
        .unwrap();
    assert_eq!(tier, (1, "approved".to_owned()));
}

/// `Compliance::authorize_all` (what a batch of payments asks) answers each movement as if
/// they came one after another: a customer's later payments count after the earlier ones, a
/// refused one counts nothing, and only what was allowed is stored.
#[tokio::test]
async fn authorize_all_answers_each_movement_as_if_one_after_another() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let (approved, unverified) = approved_and_unverified(&app, &partner.key).await;
    let (_now, clock) = fake_clock("2026-03-30T12:00:00Z");
    let kyc = KycService::new(
        app.pool(),
        &app.settings.kyc,
        clock,
        Arc::new(TransactionalOutbox),
    )
    .unwrap();
    let pay = |amount: &str| outgoing(approved, amount, OutgoingKind::Payment);
    let over_cap = Movement {
        customer_id: approved,
        amount: usd("500.00"),
        direction: Direction::Incoming,
        balance_after: Some(usd("2000.01")),
    };
    let movements = vec![
        (partner.id, pay("600.00")),
        (partner.id, pay("300.00")),
        // 900 counted before it: over the daily 1000.
        (partner.id, pay("200.01")),
        (partner.id, over_cap),
        (other.id, pay("1.00")),
        (
            partner.id,
            outgoing(unverified, "1.00", OutgoingKind::Payment),
        ),
        // The refused ones counted nothing: exactly what remains.
        (partner.id, pay("100.00")),
    ];
    let db = app.pool();
    let answers = db
        .in_tx(|tx| {
            let kyc = kyc.clone();
            let movements = movements.clone();
            Box::pin(async move { kyc.authorize_all(tx, &movements).await })
        })
        .await
        .unwrap();
    assert_eq!(answers.len(), movements.len());
    let mut answers = answers.into_iter();
    let mut next = || answers.next().unwrap();
    next().unwrap();
    next().unwrap();
    assert_eq!(
        limit_of(next()),
        (LimitKind::DailyOutgoing, "1000.00".into(), "100.00".into())
    );
    assert_eq!(limit_of(next()).0, LimitKind::MaxBalance);
    assert!(matches!(next(), Err(KycError::NotFound(_))));
    assert_eq!(required_tier_of(next()), (0, Some(1)));
    next().unwrap();
    // Stored: 1000 of today's 1000 are used.
    assert_eq!(
        limit_of(authorize(&kyc, &app, partner.id, pay("0.01"), true).await),
        (LimitKind::DailyOutgoing, "1000.00".into(), "0.00".into())
    );
    assert_eq!(
        app.sql_count("SELECT count(*) AS n FROM kyc_usage WHERE day_total > 0 OR month_total > 0")
            .await,
        1,
        "only the approved customer's counters moved: the other movements were refused"
    );
    // Nothing asked, nothing read.
    let none = db
        .in_tx(|tx| {
            let kyc = kyc.clone();
            Box::pin(async move { kyc.authorize_all(tx, &[]).await })
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

fn kyc_now(now: &AtomicI64) -> DateTime<Utc> {
    DateTime::from_timestamp(now.load(Ordering::SeqCst), 0).unwrap()
}

#[tokio::test]
async fn personal_data_is_resealed_under_a_new_key_and_stays_readable() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let mut body = person("Wilhelmina", "Quarrington", "1987-03-29", "DE");
    body["email"] = json!("wilhelmina.q@example.com");
    body["address"] = address();
    let id = create(&app, &partner.key, &body).await;
    submit(&app, &partner.key, &id, &passport("C01X00T47")).await;
    let before = get(&app, &partner.key, &format!("/v1/customers/{id}")).await;

    // The operator adds key k2 and makes it active (every replica), then re-seals.
    let k2 = "azItcm90YXRpb24ta2V5LTMyLWJ5dGVzLWxvbmchISE=";
    let rotated = crate::helpers::TestOptions::default()
        .sharing(&app)
        .var("FLOWLET__KYC__ENCRYPTION_KEYS__K2", k2)
        .var("FLOWLET__KYC__ENCRYPTION_KEY_ID", "k2");
    let replica = crate::helpers::spawn_app_with(rotated).await;
    let kyc = KycService::new(
        replica.pool(),
        &replica.settings.kyc,
        system_clock(),
        Arc::new(TransactionalOutbox),
    )
    .unwrap();
    assert_eq!(
        kyc.reencrypt().await.unwrap(),
        2,
        "the customer and the application"
    );
    assert_eq!(
        kyc.reencrypt().await.unwrap(),
        0,
        "nothing left under the old key"
    );
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM kyc_customers WHERE first_name_enc LIKE 'k2:%' \
             AND last_name_enc LIKE 'k2:%' AND date_of_birth_enc LIKE 'k2:%' \
             AND email_enc LIKE 'k2:%' AND address_enc LIKE 'k2:%'"
        )
        .await,
        1
    );
    assert_eq!(
        app.sql_count("SELECT count(*) AS n FROM kyc_applications WHERE document_enc LIKE 'k2:%'")
            .await,
        1
    );
    let after = get(&replica, &partner.key, &format!("/v1/customers/{id}")).await;
    assert_eq!(after, before);
    let application = get(&replica, &partner.key, &format!("/v1/customers/{id}/kyc")).await;
    assert_eq!(application["document_number_last4"], "0T47");
    // The email's keyed hash did not change: the customer is still found by it.
    let found = get(
        &replica,
        &partner.key,
        "/v1/customers?email=wilhelmina.q%40example.com",
    )
    .await;
    assert_eq!(found["data"][0]["id"], id.as_str());
}
