//! `flowlet admin card freeze|unfreeze|cancel`: an operator acts on any partner's card from
//! the command line, through the same change as the partner's HTTP routes (status change kept
//! under the operator's name, `card.*` event), and every refusal changes nothing.

use std::process::Output;

use serde_json::{Value, json};

use crate::card_authorizations::{Holder, authorize, holder, message};
use crate::cli::flowlet_on_env;
use crate::helpers::{TestApp, spawn_app};
use crate::kyc::{get, load_test_list};

/// The operator the CLI runs as in these tests (`$USER`).
const OPERATOR: &str = "ops-ada";

/// `flowlet admin card ARGS` as `OPERATOR`, against `app`'s database.
async fn admin_card(app: &TestApp, args: &[&str]) -> Output {
    let args: Vec<&str> = ["admin", "card"].iter().chain(args).copied().collect();
    flowlet_on_env(app, &args, &[("USER", OPERATOR)]).await
}

/// `admin card ARGS --json`, which must succeed: the card it printed.
async fn admin_card_json(app: &TestApp, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = admin_card(app, &args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The card's last status change: [from, to, reason, actor].
async fn last_change(app: &TestApp, card: &Value) -> Vec<String> {
    let id = card_uuid(card);
    let row = app
        .sql_texts(&format!(
            "SELECT json_build_array(from_status, to_status, reason, actor)::text AS t \
             FROM card_status_changes WHERE card_id = '{id}' ORDER BY id DESC LIMIT 1"
        ))
        .await;
    serde_json::from_str(&row[0]).unwrap()
}

/// A status change made by [`OPERATOR`] from the command line.
fn by_operator(from: &str, to: &str, reason: &str) -> Vec<String> {
    vec![
        from.to_owned(),
        to.to_owned(),
        reason.to_owned(),
        format!("operator:{OPERATOR}"),
    ]
}

fn card_uuid(card: &Value) -> uuid::Uuid {
    card["id"]
        .as_str()
        .unwrap()
        .parse::<flowlet::card::CardId>()
        .unwrap()
        .uuid()
}

/// The card as its partner reads it over HTTP.
async fn read(app: &TestApp, h: &Holder) -> Value {
    let id = h.card["id"].as_str().unwrap();
    get(app, &h.partner.key, &format!("/v1/cards/{id}")).await
}

/// The partner's events of `kind`, newest first.
async fn events(app: &TestApp, h: &Holder, kind: &str) -> Vec<Value> {
    let page = get(app, &h.partner.key, &format!("/v1/events?type={kind}")).await;
    page["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_operator_freezes_any_partners_card_and_authorizations_are_declined_until_unfrozen() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let h = holder(&app, "100.00", None).await;
    let id = h.card["id"].as_str().unwrap();

    let frozen = admin_card_json(&app, &["freeze", id, "--reason", "fraud report 7781"]).await;
    assert_eq!(frozen["id"], h.card["id"]);
    assert_eq!(frozen["status"], "frozen");
    assert!(frozen.get("pan").is_none() && frozen.get("cvc").is_none());
    assert_eq!(read(&app, &h).await["status"], "frozen");
    assert_eq!(
        last_change(&app, &h.card).await,
        by_operator("active", "frozen", "fraud report 7781")
    );
    let announced = events(&app, &h, "card.frozen").await;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0]["data"]["id"], h.card["id"]);
    assert_eq!(announced[0]["data"]["status"], "frozen");
    let declined = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(declined["approved"], false);
    assert_eq!(declined["decline_code"], "card_frozen");

    // Unfrozen, printed as a table this time: the card works again.
    let out = admin_card(&app, &["unfreeze", id, "--reason", "customer confirmed"]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("CARD"), "{table}");
    assert!(table.contains(id) && table.contains("active"), "{table}");
    assert_eq!(read(&app, &h).await["status"], "active");
    assert_eq!(
        last_change(&app, &h.card).await,
        by_operator("frozen", "active", "customer confirmed")
    );
    assert_eq!(events(&app, &h, "card.unfrozen").await.len(), 1);
    let approved = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(approved["approved"], true, "{approved:#}");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_operator_cancels_a_stolen_card_for_good_keeping_the_note() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let h = holder(&app, "100.00", None).await;
    let id = h.card["id"].as_str().unwrap();

    let canceled = admin_card_json(
        &app,
        &[
            "cancel",
            id,
            "--reason",
            "stolen",
            "--note",
            "ticket OPS-12",
        ],
    )
    .await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancel_reason"], "stolen");
    let card = read(&app, &h).await;
    assert_eq!(
        (&card["status"], &card["cancel_reason"]),
        (&json!("canceled"), &json!("stolen"))
    );
    assert_eq!(
        last_change(&app, &h.card).await,
        by_operator("active", "canceled", "stolen: ticket OPS-12")
    );
    let announced = events(&app, &h, "card.canceled").await;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0]["data"]["cancel_reason"], "stolen");
    let declined = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(declined["decline_code"], "card_canceled");

    // Without a note, the reason alone is kept, as POST /v1/cards/{id}/cancel keeps it.
    let other = holder(&app, "0", None).await;
    let other_id = other.card["id"].as_str().unwrap();
    let lost = admin_card_json(&app, &["cancel", other_id, "--reason", "lost"]).await;
    assert_eq!(lost["cancel_reason"], "lost");
    assert_eq!(last_change(&app, &other.card).await[2], "lost");
}

/// What a refused change must leave as it was: status changes, events, each card's status.
async fn state(app: &TestApp) -> (i64, i64, Vec<String>) {
    (
        app.count("card_status_changes").await,
        app.count("notify_events").await,
        app.sql_texts(
            "SELECT string_agg(status || ':' || coalesce(cancel_reason, '-'), ',' ORDER BY id) \
             AS t FROM card_cards",
        )
        .await,
    )
}

#[tokio::test]
async fn every_refused_operator_change_says_why_and_changes_nothing() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let h = holder(&app, "0", None).await;
    let id = h.card["id"].as_str().unwrap().to_owned();
    let gone = holder(&app, "0", None).await;
    let gone_id = gone.card["id"].as_str().unwrap().to_owned();
    let resp = app
        .post_as(
            &gone.partner.key,
            &format!("/v1/cards/{gone_id}/cancel"),
            &json!({"reason": "lost"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let unknown = flowlet::card::CardId::new().to_string();
    let before = state(&app).await;

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["freeze", "wal_01h455vb4pex5vsknk084sn02q", "--reason", "x"],
            "not a card id (card_...)",
        ),
        (
            vec!["freeze", "card_nope", "--reason", "x"],
            "not a card id",
        ),
        (vec!["freeze", &unknown, "--reason", "x"], "No such card."),
        (
            vec!["cancel", &unknown, "--reason", "lost"],
            "No such card.",
        ),
        (vec!["freeze", &id, "--reason", "   "], "reason"),
        (vec!["freeze", &id, "--reason", "two\nlines"], "reason"),
        (
            vec!["unfreeze", &id, "--reason", "x"],
            "The card is active; only a frozen card can be unfrozen.",
        ),
        (
            vec!["cancel", &id, "--reason", "misplaced"],
            "reason: must be `canceled`, `lost` or `stolen`",
        ),
        (
            vec!["cancel", &id, "--reason", "stolen", "--note", "two\nlines"],
            "note: must be 1-500 printable characters",
        ),
        (
            vec!["freeze", &gone_id, "--reason", "x"],
            "The card is canceled; canceling is final.",
        ),
        (
            vec!["unfreeze", &gone_id, "--reason", "x"],
            "The card is canceled; canceling is final.",
        ),
        (
            vec!["cancel", &gone_id, "--reason", "stolen"],
            "The card is canceled; canceling is final.",
        ),
    ];
    for (args, says) in cases {
        let out = admin_card(&app, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A missing reason is a usage error (exit 2) before anything runs.
    let out = admin_card(&app, &["freeze", &id]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));
    assert_eq!(state(&app).await, before);
}
