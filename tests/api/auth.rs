//! Auth and tenancy over HTTP: login, tokens and their attacks, API keys, roles, partner
//! isolation, password reset, the audit log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flowlet::kernel::Role;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, TestUser, assert_problem, spawn_app, spawn_app_with};

const DEV_JWT_SECRET: &[u8] = b"flowlet-development-jwt-secret-not-for-production";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a token the service issued, to forge variations of.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with any header, signed with HMAC-SHA256 over `header.payload` (whatever `alg`
/// the header claims).
fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// The one-time token a password-reset mail carries.
fn reset_token_in(mail: &crate::mailbox::ReceivedEmail) -> String {
    mail.text
        .split_whitespace()
        .find(|w| w.starts_with("flr_"))
        .expect("a reset token in the mail")
        .to_owned()
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.get_as(token, "/v1/auth/me").await.status().as_u16()
}

async fn admin_and_token(app: &TestApp) -> (TestUser, String) {
    let admin = app.new_user(None, Role::PlatformAdmin).await;
    let token = app.login(&admin).await;
    (admin, token)
}

// ----- login -----------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_bearer_token_that_authenticates_the_user() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let user = app.new_user(Some(partner.id), Role::PartnerAdmin).await;
    let resp = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": user.password}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    let token = body["access_token"].as_str().unwrap();

    let me: Value = app.get_as(token, "/v1/auth/me").await.json().await.unwrap();
    assert_eq!(me["type"], "user");
    assert_eq!(me["id"], user.id);
    assert_eq!(me["partner_id"], partner.id.to_string());
    assert_eq!(me["role"], "partner_admin");
    assert_eq!(me["email"], user.email);
}

#[tokio::test]
async fn logins_at_once_take_turns_at_hashing_and_all_get_their_answer() {
    // One hash at a time: a burst of logins (right and wrong passwords, unknown users) queues
    // for its turn instead of computing eight argon2 hashes, and their memory, at once.
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__AUTH__MAX_CONCURRENT_HASHES", "1"))
            .await;
    let partner = app.new_partner().await;
    let user = app.new_user(Some(partner.id), Role::PartnerAdmin).await;
    let attempts = (0..8).map(|n| {
        let (email, password) = match n % 3 {
            0 => (user.email.clone(), user.password.clone()),
            1 => (user.email.clone(), format!("not-the-password-{n}")),
            _ => (
                format!("nobody{n}@example.com"),
                "whatever-password".to_owned(),
            ),
        };
        let app = &app;
        async move {
            let resp = app
                .post_json(
                    "/v1/auth/login",
                    &json!({"email": email, "password": password}),
                )
                .await;
            (n % 3, resp.status().as_u16())
        }
    });
    for (kind, status) in futures_util::future::join_all(attempts).await {
        assert_eq!(
            status,
            if kind == 0 { 200 } else { 401 },
            "attempt kind {kind}"
        );
    }
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let app = spawn_app().await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    let resp = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email.to_uppercase(), "password": user.password}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_401() {
    let app = spawn_app().await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    let unknown = assert_problem(
        app.post_json(
            "/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": user.password}),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
    let wrong = assert_problem(
        app.post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": "not-the-password-1"}),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(unknown["detail"], wrong["detail"]);
    assert_eq!(unknown["title"], wrong["title"]);
}

#[tokio::test]
async fn malformed_login_requests_are_400_and_write_nothing() {
    let app = spawn_app().await;
    let before = app.count("auth_audit_log").await;
    assert_problem(
        app.post_raw("/v1/auth/login", "application/json", "{\"email\":")
            .await,
        400,
        "malformed_json",
    )
    .await;
    assert_problem(
        app.post_json("/v1/auth/login", &json!({"email": "a@b.co"}))
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.post_json(
            "/v1/auth/login",
            &json!({"email": "a@b.co", "password": "x", "otp": 1}),
        )
        .await,
        400,
        "unknown_field",
    )
    .await;
    assert_eq!(app.count("auth_audit_log").await, before);
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_then_the_lock_expires() {
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__AUTH__LOCKOUT_THRESHOLD", "3")
            .var("FLOWLET__AUTH__LOCKOUT_SECS", "2"),
    )
    .await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    let wrong = json!({"email": user.email, "password": "not-the-password-1"});
    for _ in 0..3 {
        assert_problem(
            app.post_json("/v1/auth/login", &wrong).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Locked: even the right password is refused, with the same answer.
    let right = json!({"email": user.email, "password": user.password});
    assert_problem(
        app.post_json("/v1/auth/login", &right).await,
        401,
        "invalid_credentials",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(
        app.post_json("/v1/auth/login", &right)
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn logins_are_audited_with_their_ip() {
    let app = spawn_app().await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    app.login(&user).await;
    app.post_json(
        "/v1/auth/login",
        &json!({"email": user.email, "password": "wrong-password-1"}),
    )
    .await;
    #[derive(diesel::QueryableByName, Debug)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        ip: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        actor_id: Option<String>,
    }
    let mut conn = app.db().await;
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT action, ip, actor_id FROM auth_audit_log WHERE action LIKE 'login.%' ORDER BY id",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["login.succeeded", "login.failed"]);
    assert!(
        rows.iter().all(|r| r.ip.as_deref() == Some("127.0.0.1")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.actor_id.as_deref() == Some(user.id.as_str()))
    );
}

// ----- tokens ----------------------------------------------------------------------------------

#[tokio::test]
async fn every_kind_of_bad_credentials_is_401() {
    let app = spawn_app().await;
    let (_, token) = admin_and_token(&app).await;
    assert_eq!(me_status(&app, &token).await, 200);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "dev"});
    let good = claims_of(&token);

    let mut cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".to_owned()),
        ("three dots of garbage", "a.b.c".to_owned()),
        (
            "a key-looking garbage",
            "flk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ),
    ];
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "dev"})),
            b64(&good)
        ),
    ));
    cases.push((
        "HS/RS confusion",
        hs256_token(
            &json!({"alg": "RS256", "typ": "JWT", "kid": "dev"}),
            &good,
            DEV_JWT_SECRET,
        ),
    ));
    cases.push((
        "HS512 instead of HS256",
        hs256_token(
            &json!({"alg": "HS512", "typ": "JWT", "kid": "dev"}),
            &good,
            DEV_JWT_SECRET,
        ),
    ));
    let mut tampered: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(tampered[1]).unwrap()).unwrap();
    payload["role"] = json!("platform_admin");
    payload["sub"] = json!("usr_00000000000000000000000000");
    let tampered_payload = b64(&payload);
    tampered[1] = &tampered_payload;
    cases.push(("tampered payload", tampered.join(".")));
    cases.push((
        "another secret",
        hs256_token(&header, &good, b"some-other-secret-of-enough-length!!"),
    ));
    let mut expired = good.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    cases.push(("expired", hs256_token(&header, &expired, DEV_JWT_SECRET)));
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    cases.push((
        "wrong audience",
        hs256_token(&header, &wrong_aud, DEV_JWT_SECRET),
    ));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("evil");
    cases.push((
        "wrong issuer",
        hs256_token(&header, &wrong_iss, DEV_JWT_SECRET),
    ));
    cases.push((
        "unknown kid",
        hs256_token(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "nope"}),
            &good,
            DEV_JWT_SECRET,
        ),
    ));
    cases.push((
        "missing kid",
        hs256_token(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &good,
            DEV_JWT_SECRET,
        ),
    ));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", hs256_token(&header, &no_exp, DEV_JWT_SECRET)));
    let mut unknown_user = good.clone();
    unknown_user["sub"] = json!("usr_00000000000000000000000000");
    cases.push((
        "unknown user",
        hs256_token(&header, &unknown_user, DEV_JWT_SECRET),
    ));
    let mut stale_password = good.clone();
    stale_password["pwv"] = json!(1);
    cases.push((
        "older password version",
        hs256_token(&header, &stale_password, DEV_JWT_SECRET),
    ));

    // The forged but well-formed control token is accepted: the cases fail for their flaw.
    assert_eq!(
        me_status(&app, &hs256_token(&header, &good, DEV_JWT_SECRET)).await,
        200
    );
    for (name, bad) in cases {
        let resp = app.get_as(&bad, "/v1/auth/me").await;
        assert_eq!(resp.status().as_u16(), 401, "{name}");
        assert_problem(resp, 401, "unauthorized").await;
    }
    for header in ["", "Basic dXNlcjpwYXNz", "Bearer", "Token abc"] {
        let mut req = app.client.get(app.url("/v1/auth/me"));
        if !header.is_empty() {
            req = req.header("authorization", header);
        }
        assert_problem(req.send().await.unwrap(), 401, "unauthorized").await;
    }
}

#[tokio::test]
async fn a_token_signed_with_a_previous_key_still_works_during_rotation() {
    let app = spawn_app_with(
        TestOptions::default()
            .var(
                "FLOWLET__AUTH__JWT_SECRET",
                "the-new-signing-secret-of-32-bytes!!",
            )
            .var("FLOWLET__AUTH__JWT_KID", "k2")
            .var(
                "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__K1",
                "the-old-signing-secret-of-32-bytes!!",
            ),
    )
    .await;
    let (_, fresh) = admin_and_token(&app).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["kid"], "k2",
        "new tokens are signed with the active key"
    );
    let old = hs256_token(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
        &claims_of(&fresh),
        b"the-old-signing-secret-of-32-bytes!!",
    );
    assert_eq!(me_status(&app, &old).await, 200);
    let old_kid_new_secret = hs256_token(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
        &claims_of(&fresh),
        b"the-new-signing-secret-of-32-bytes!!",
    );
    assert_eq!(me_status(&app, &old_kid_new_secret).await, 401);
}

// ----- API keys --------------------------------------------------------------------------------

#[tokio::test]
async fn an_api_key_is_shown_once_authenticates_and_is_refused_right_after_revocation() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let resp = app
        .post_as(
            &partner.key,
            "/v1/api-keys",
            &json!({"name": "backend", "scopes": ["wallets:read"]}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("flk_test_"), "{secret}");
    assert!(secret.starts_with(created["hint"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["wallets:read"]));
    let id = created["id"].as_str().unwrap().to_owned();

    let me: Value = app
        .get_as(&secret, "/v1/auth/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["type"], "api_key");
    assert_eq!(me["id"], id);
    assert_eq!(me["scopes"], json!(["wallets:read"]));

    let listed = app
        .get_as(&partner.key, "/v1/api-keys")
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&id));
    assert!(!listed.contains(&secret), "the secret is never shown again");
    assert!(!listed.contains("secret"), "{listed}");

    assert_eq!(
        app.delete_as(&partner.key, &format!("/v1/api-keys/{id}"))
            .await
            .status()
            .as_u16(),
        204
    );
    assert_problem(
        app.get_as(&secret, "/v1/auth/me").await,
        401,
        "unauthorized",
    )
    .await;
    // Revoking again is a no-op.
    assert_eq!(
        app.delete_as(&partner.key, &format!("/v1/api-keys/{id}"))
            .await
            .status()
            .as_u16(),
        204
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_on_another_replica() {
    let a = spawn_app().await;
    let b = spawn_app_with(TestOptions::default().sharing(&a)).await;
    let partner = a.new_partner().await;
    let created: Value = a
        .post_as(
            &partner.key,
            "/v1/api-keys",
            &json!({"name": "replica test"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    // Twice: the second time replica B answers from its cached check of the key.
    assert_eq!(me_status(&b, secret).await, 200, "replica B knows the key");
    assert_eq!(me_status(&b, secret).await, 200, "and still does");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        a.delete_as(&partner.key, &format!("/v1/api-keys/{id}"))
            .await
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        me_status(&b, secret).await,
        401,
        "replica B refuses it on the very next request"
    );
    assert_eq!(me_status(&a, secret).await, 401, "and so does A");

    // The operator's CLI (a process of its own) revokes just as much at once.
    let created: Value = a
        .post_as(&partner.key, "/v1/api-keys", &json!({"name": "cli test"}))
        .await
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(me_status(&b, secret).await, 200);
    assert_eq!(me_status(&b, secret).await, 200);
    let id = created["id"].as_str().unwrap();
    crate::cli::flowlet_on(&a, &["admin", "api-key", "revoke", id]).await;
    assert_eq!(
        me_status(&b, secret).await,
        401,
        "replica B refuses a key the CLI revoked on the very next request"
    );
    // Other keys stay good (their checks are read again).
    assert_eq!(me_status(&b, &partner.key).await, 200);
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let created: Value = app
        .post_as(
            &partner.key,
            "/v1/api-keys",
            &json!({"name": "short", "expires_at": expires}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(me_status(&app, secret).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(me_status(&app, secret).await, 401);
}

#[tokio::test]
async fn invalid_api_key_requests_are_400_and_create_nothing() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let before = app.count("auth_api_keys").await;
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "k", "scopes": ["wallets:admin"]}), "scopes"),
        (json!({"name": "k", "scopes": []}), "scopes"),
        (json!({"name": "k", "expires_at": past}), "expires_at"),
        (
            json!({"name": "k", "partner_id": "not-an-id"}),
            "partner_id",
        ),
    ] {
        let problem = assert_problem(
            app.post_as(&partner.key, "/v1/api-keys", &body).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["field"], field, "{body}");
    }
    assert_problem(
        app.post_as(
            &partner.key,
            "/v1/api-keys",
            &json!({"name": "k", "expires_at": "tomorrow"}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.post_as(&partner.key, "/v1/api-keys", &json!({"nmae": "k"}))
            .await,
        400,
        "unknown_field",
    )
    .await;
    assert_eq!(app.count("auth_api_keys").await, before);
}

#[tokio::test]
async fn api_keys_are_listed_newest_first_in_pages() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    for name in ["one", "two", "three"] {
        app.post_as(&partner.key, "/v1/api-keys", &json!({"name": name}))
            .await;
    }
    let first: Value = app
        .get_as(&partner.key, "/v1/api-keys?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["three", "two"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get_as(
            &partner.key,
            &format!("/v1/api-keys?limit=2&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "default"]);
    assert_eq!(second["next_cursor"], Value::Null);

    for bad in ["?limit=0", "?limit=201", "?cursor=nope"] {
        assert_problem(
            app.get_as(&partner.key, &format!("/v1/api-keys{bad}"))
                .await,
            400,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.get_as(&partner.key, "/v1/api-keys?limit=abc").await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.get_as(&partner.key, "/v1/api-keys?sort=asc").await,
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let make = |scopes: Value| {
        let app = &app;
        let key = partner.key.clone();
        async move {
            let v: Value = app
                .post_as(
                    &key,
                    "/v1/api-keys",
                    &json!({"name": "scoped", "scopes": scopes}),
                )
                .await
                .json()
                .await
                .unwrap();
            v["secret"].as_str().unwrap().to_owned()
        }
    };
    let wallets_only = make(json!(["wallets:write"])).await;
    let auth_read = make(json!(["auth:read"])).await;
    assert_problem(
        app.get_as(&wallets_only, "/v1/api-keys").await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.get_as(&auth_read, "/v1/api-keys")
            .await
            .status()
            .as_u16(),
        200
    );
    assert_problem(
        app.post_as(&auth_read, "/v1/api-keys", &json!({"name": "x"}))
            .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn unknown_or_malformed_key_ids_are_404() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    assert_problem(
        app.delete_as(&partner.key, "/v1/api-keys/key_00000000000000000000000000")
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete_as(&partner.key, "/v1/api-keys/garbage").await,
        404,
        "not_found",
    )
    .await;
}

// ----- roles and tenancy -----------------------------------------------------------------------

#[tokio::test]
async fn a_partner_developer_reads_but_cannot_write() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let dev = app.new_user(Some(partner.id), Role::PartnerDeveloper).await;
    let token = app.login(&dev).await;
    assert_eq!(
        app.get_as(&token, "/v1/api-keys").await.status().as_u16(),
        200
    );
    assert_eq!(
        app.get_as(&token, &format!("/v1/partners/{}", partner.id))
            .await
            .status()
            .as_u16(),
        200
    );
    let keys = app.count("auth_api_keys").await;
    let users = app.count("auth_users").await;
    assert_problem(
        app.post_as(&token, "/v1/api-keys", &json!({"name": "x"}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post_as(&token, "/v1/users", &json!({"email": "n@example.com", "password": "violet-tractor-harbor-9", "role": "partner_developer"}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.delete_as(&token, &format!("/v1/api-keys/{}", partner.key_id))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.count("auth_api_keys").await, keys);
    assert_eq!(app.count("auth_users").await, users);
    assert_eq!(
        me_status(&app, &partner.key).await,
        200,
        "the key was not revoked"
    );
}

#[tokio::test]
async fn a_partner_gets_404_for_every_object_of_another_partner() {
    let app = spawn_app().await;
    let a = app.new_partner().await;
    let b = app.new_partner().await;
    let a_admin = app.new_user(Some(a.id), Role::PartnerAdmin).await;
    let a_token = app.login(&a_admin).await;
    for token in [a.key.as_str(), a_token.as_str()] {
        assert_problem(
            app.get_as(token, &format!("/v1/partners/{}", b.id)).await,
            404,
            "not_found",
        )
        .await;
        assert_problem(
            app.delete_as(token, &format!("/v1/api-keys/{}", b.key_id))
                .await,
            404,
            "not_found",
        )
        .await;
        assert_problem(
            app.post_as(
                token,
                "/v1/api-keys",
                &json!({"name": "x", "partner_id": b.id.to_string()}),
            )
            .await,
            404,
            "not_found",
        )
        .await;
        assert_problem(
            app.get_as(token, &format!("/v1/api-keys?partner_id={}", b.id))
                .await,
            404,
            "not_found",
        )
        .await;
        let keys: Value = app
            .get_as(token, "/v1/api-keys")
            .await
            .json()
            .await
            .unwrap();
        assert!(!keys.to_string().contains(&b.key_id), "{keys}");
    }
    assert_problem(
        app.post_as(
            &a_token,
            "/v1/users",
            &json!({"email": "x@example.com", "password": "violet-tractor-harbor-1", "role": "partner_admin", "partner_id": b.id.to_string()}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        me_status(&app, &b.key).await,
        200,
        "B's key survived A's attempts"
    );
    assert_eq!(
        app.get_as(&a.key, &format!("/v1/partners/{}", a.id))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn only_platform_admins_create_partners() {
    let app = spawn_app().await;
    let (_, admin) = admin_and_token(&app).await;
    let resp = app
        .post_as(
            &admin,
            "/v1/partners",
            &json!({"name": "Acme Pay", "email": "ops@acme.example"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let partner: Value = resp.json().await.unwrap();
    assert!(partner["id"].as_str().unwrap().starts_with("ptn_"));
    assert_eq!(partner["status"], "active");
    let got: Value = app
        .get_as(
            &admin,
            &format!("/v1/partners/{}", partner["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Acme Pay");

    let other = app.new_partner().await;
    let before = app.count("auth_partners").await;
    assert_problem(
        app.post_as(
            &other.key,
            "/v1/partners",
            &json!({"name": "X", "email": "x@x.example"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    for (body, field) in [
        (json!({"name": "", "email": "x@x.example"}), "name"),
        (json!({"name": "X", "email": "not-an-email"}), "email"),
    ] {
        let p = assert_problem(
            app.post_as(&admin, "/v1/partners", &body).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(p["field"], field);
    }
    assert_eq!(app.count("auth_partners").await, before);
    assert_problem(
        app.post_json(
            "/v1/partners",
            &json!({"name": "X", "email": "x@x.example"}),
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn partner_admins_create_users_with_a_sound_password_and_a_free_email() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let admin = app.new_user(Some(partner.id), Role::PartnerAdmin).await;
    let token = app.login(&admin).await;
    let resp = app
        .post_as(&token, "/v1/users", &json!({"email": "dev@partner.example", "password": "violet-tractor-harbor-7", "role": "partner_developer"}))
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let user: Value = resp.json().await.unwrap();
    assert_eq!(user["role"], "partner_developer");
    assert_eq!(user["partner_id"], partner.id.to_string());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let users = app.count("auth_users").await;
    for (body, status, code) in [
        (
            json!({"email": "DEV@partner.example", "password": "violet-tractor-harbor-8", "role": "partner_admin"}),
            409,
            "email_taken",
        ),
        (
            json!({"email": "n1@partner.example", "password": "short-1", "role": "partner_admin"}),
            400,
            "password_too_short",
        ),
        (
            json!({"email": "n2@partner.example", "password": "password1234", "role": "partner_admin"}),
            400,
            "password_too_common",
        ),
        (
            json!({"email": "not-an-email", "password": "violet-tractor-harbor-8", "role": "partner_admin"}),
            400,
            "validation_failed",
        ),
        (
            json!({"email": "n3@partner.example", "password": "violet-tractor-harbor-8", "role": "superuser"}),
            400,
            "validation_failed",
        ),
        (
            json!({"email": "n4@partner.example", "password": "violet-tractor-harbor-8", "role": "platform_admin"}),
            403,
            "forbidden",
        ),
    ] {
        assert_problem(app.post_as(&token, "/v1/users", &body).await, status, code).await;
    }
    assert_problem(
        app.post_as(&partner.key, "/v1/users", &json!({"email": "k@partner.example", "password": "violet-tractor-harbor-8", "role": "partner_admin"})).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.count("auth_users").await, users);
}

// ----- password reset --------------------------------------------------------------------------

#[tokio::test]
async fn a_password_reset_mails_a_one_time_token_that_sets_a_new_password() {
    let app = spawn_app().await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    let old_token = app.login(&user).await;
    let resp = app
        .post_json("/v1/auth/password-reset", &json!({"email": user.email}))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let mail = app.mail(1).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, user.email);
    let token = reset_token_in(&mail[0]);

    let confirm = json!({"token": token, "new_password": "marble-canyon-lantern-42"});
    assert_eq!(
        app.post_json("/v1/auth/password-reset/confirm", &confirm)
            .await
            .status()
            .as_u16(),
        204
    );
    assert_problem(
        app.post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": user.password}),
        )
        .await,
        401,
        "invalid_credentials",
    )
    .await;
    let renewed = TestUser {
        password: "marble-canyon-lantern-42".into(),
        ..user
    };
    app.login(&renewed).await;
    assert_eq!(
        me_status(&app, &old_token).await,
        401,
        "sessions from before the reset end"
    );
    let again = json!({"token": token, "new_password": "another-fine-passphrase-1"});
    assert_problem(
        app.post_json("/v1/auth/password-reset/confirm", &again)
            .await,
        400,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn a_reset_for_an_unknown_email_is_202_and_sends_nothing() {
    let app = spawn_app().await;
    let resp = app
        .post_json(
            "/v1/auth/password-reset",
            &json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.mail(0).await.is_empty());
}

#[tokio::test]
async fn bad_reset_confirmations_are_400_and_change_nothing() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__AUTH__PASSWORD_RESET_TTL_SECS", "1"))
            .await;
    let user = app.new_user(None, Role::PlatformAdmin).await;
    app.post_json("/v1/auth/password-reset", &json!({"email": user.email}))
        .await;
    let token = reset_token_in(&app.mail(1).await[0]);
    for (body, code) in [
        (
            json!({"token": "flr_bogus", "new_password": "marble-canyon-lantern-42"}),
            "invalid_token",
        ),
        (
            json!({"token": token, "new_password": "short"}),
            "password_too_short",
        ),
        (
            json!({"token": token, "new_password": user.email.clone() + "-x"}),
            "password_contains_email",
        ),
    ] {
        assert_problem(
            app.post_json("/v1/auth/password-reset/confirm", &body)
                .await,
            400,
            code,
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let late = json!({"token": token, "new_password": "marble-canyon-lantern-42"});
    assert_problem(
        app.post_json("/v1/auth/password-reset/confirm", &late)
            .await,
        400,
        "invalid_token",
    )
    .await;
    app.login(&user).await;
}

// ----- audit -----------------------------------------------------------------------------------

#[tokio::test]
async fn key_and_user_changes_are_audited_and_the_log_is_append_only() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let created: Value = app
        .post_as(&partner.key, "/v1/api-keys", &json!({"name": "audited"}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    app.delete_as(&partner.key, &format!("/v1/api-keys/{id}"))
        .await;
    #[derive(diesel::QueryableByName, Debug)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        actor_type: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        target_id: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        request_id: Option<String>,
    }
    let mut conn = app.db().await;
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT action, actor_type, target_id, request_id FROM auth_audit_log WHERE target_id = '{id}' ORDER BY id"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["api_key.created", "api_key.revoked"]);
    assert!(
        rows.iter()
            .all(|r| r.actor_type == "api_key" && r.request_id.is_some()),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.target_id.as_deref() == Some(id)));
    use diesel_async::SimpleAsyncConnection;
    assert!(
        conn.batch_execute("DELETE FROM auth_audit_log")
            .await
            .is_err(),
        "append-only"
    );
    assert!(
        conn.batch_execute("UPDATE auth_audit_log SET action = 'x'")
            .await
            .is_err(),
        "append-only"
    );
}
