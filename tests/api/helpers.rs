//! The test harness: every test gets the real actix App on port 0, over real HTTP, backed by
//! its own PostgreSQL database (cloned from a migrated template, so tests run in parallel) and
//! its own key prefix in the real Redis.
//!
//! PostgreSQL: `FLOWLET_TEST_DATABASE_URL` when set (any database on the server; the harness
//! creates its own next to it), else the local server on 127.0.0.1:5432, else an embedded one
//! under `target/flowlet-test-pg` (left running for the next run; as root, when the `postgres`
//! user cannot reach it, a private directory under the temp dir instead). Redis:
//! `FLOWLET_TEST_REDIS_URL`, else redis://127.0.0.1:6379 when it answers, else a private
//! `redis-server` started for the run and stopped with it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{HttpResponse, web};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use flowlet::app::Application;
use flowlet::auth::{AuthService, Caller, RequestMeta};
use flowlet::kernel::{PartnerId, Role};
use flowlet::ledger::LedgerService;
use flowlet::platform::config::Sources;
use flowlet::platform::db::embedded::{EmbeddedPostgres, Placement};
use flowlet::platform::db::{Db, PoolOptions};
use flowlet::platform::error::ApiError;
use flowlet::platform::money::{Amount, Currency, Money};
use flowlet::platform::shared_state::SharedState;
use flowlet::settings::Settings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::OnceCell;

/// Databases made by the harness start with this, followed by a UUIDv7 (so their age is known).
const TEST_DB_PREFIX: &str = "flowlet_t_";
/// Databases of runs that crashed are dropped once they are this old.
const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Cross-process lock key for building the template (nextest runs tests as processes).
const TEMPLATE_LOCK_KEY: i64 =
    flowlet::platform::db::LockKey::singleton(flowlet::platform::db::namespaces::TEST_TEMPLATE)
        .value();

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// URL of this test's own database.
    pub db_url: String,
    /// The settings the app runs with.
    pub settings: Settings,
    /// Where the app's mail goes (a file transport per test).
    pub mail_dir: PathBuf,
    /// The app's drain switch (what `serve` flips on SIGTERM).
    pub drain: Arc<std::sync::atomic::AtomicBool>,
    handle: ServerHandle,
    auth: OnceCell<AuthService>,
    /// Shared with apps made by [`TestOptions::sharing`]; dropped with the last of them.
    database: Arc<TestDatabase>,
    _mail: Arc<tempfile::TempDir>,
}

/// Options for [`spawn_app_with`].
#[derive(Default)]
pub struct TestOptions {
    /// Extra `FLOWLET__...` variables, applied after the harness's own.
    pub vars: Vec<(String, String)>,
    /// Run as a second replica of this app: same database, Redis prefix and mail directory.
    share: Option<(Arc<TestDatabase>, Arc<tempfile::TempDir>, String)>,
}

impl TestOptions {
    pub fn var(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.push((key.to_owned(), value.into()));
        self
    }

    /// A second replica beside `app`.
    pub fn sharing(mut self, app: &TestApp) -> Self {
        self.share = Some((
            app.database.clone(),
            app._mail.clone(),
            app.settings.redis.key_prefix.clone(),
        ));
        self
    }
}

/// The app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

/// The app with extra configuration.
pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    flowlet::platform::tls::install_crypto_provider();
    let (database, mail, prefix) = match options.share {
        Some(shared) => shared,
        None => (
            Arc::new(test_database().await),
            Arc::new(tempfile::tempdir().expect("a mail directory")),
            format!("t:{}:", uuid::Uuid::now_v7().simple()),
        ),
    };
    let mut vars = vec![
        ("FLOWLET__REDIS__KEY_PREFIX".to_owned(), prefix),
        (
            "FLOWLET__SMTP__MAIL_DIR".to_owned(),
            mail.path().display().to_string(),
        ),
    ];
    vars.extend(options.vars);
    let settings = test_settings(&database.url, vars);
    let app = Application::build_with(settings.clone(), Some(probe_routes))
        .await
        .expect("the application starts");
    let port = app.port();
    let handle = app.server_handle();
    let drain = app.drain_switch();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client"),
        db_url: database.url.clone(),
        settings,
        mail_dir: mail.path().to_path_buf(),
        drain,
        handle,
        auth: OnceCell::new(),
        database,
        _mail: mail,
    }
}

/// Settings as the harness runs them: test env, port 0, one worker, this test's database and
/// a private Redis key prefix.
pub fn test_settings(db_url: &str, extra: Vec<(String, String)>) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
        ("FLOWLET_ENV".into(), "test".into()),
        ("FLOWLET__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("FLOWLET__SERVER__WORKERS".into(), "1".into()),
        ("FLOWLET__SERVER__SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
        ("FLOWLET__DATABASE__URL".into(), db_url.into()),
        ("FLOWLET__DATABASE__POOL_SIZE".into(), "4".into()),
        ("FLOWLET__REDIS__URL".into(), redis_url()),
        (
            "FLOWLET__REDIS__KEY_PREFIX".into(),
            format!("t:{}:", uuid::Uuid::now_v7().simple()),
        ),
        ("FLOWLET__REDIS__POOL_SIZE".into(), "4".into()),
    ];
    vars.extend(extra);
    Settings::load_from(&Sources::with_vars(vars)).expect("test settings are valid")
}

/// A loopback port nothing listens on right now (a server started on it may still lose it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits (up to 10 s) until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Redis tests use: `FLOWLET_TEST_REDIS_URL`, else 127.0.0.1:6379 when it answers, else a
/// private `redis-server` started for this run (see `tests/support/redis_server.rs`).
pub fn redis_url() -> String {
    crate::redis_server::url().to_owned()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// POST with a raw body and content type, for malformed-input tests.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    /// A connection to this test's database, for assertions on what was (not) written.
    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.db_url)
            .await
            .expect("connect to the test database")
    }

    /// Stops the server gracefully (in-flight requests finish) and waits for it.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// The auth service over this app's database, for seeding data as an operator would.
    pub async fn auth(&self) -> &AuthService {
        self.auth
            .get_or_init(|| async {
                let db = Db::connect(
                    &self.db_url,
                    &PoolOptions {
                        max_size: 2,
                        wait_timeout: Duration::from_secs(5),
                        connect_timeout: Duration::from_secs(5),
                        tx_max_retries: 3,
                        ca_file: None,
                    },
                )
                .expect("a seeding pool");
                AuthService::new(
                    db,
                    SharedState::in_process(),
                    &self.settings.auth,
                    &self.settings.rate_limit,
                    false,
                    std::sync::Arc::new(flowlet::notify::TransactionalOutbox),
                )
                .expect("the auth service")
            })
            .await
    }

    /// A new partner with a full-access API key.
    pub async fn new_partner(&self) -> TestPartner {
        let auth = self.auth().await;
        let caller = Caller::Operator("test".into());
        let meta = RequestMeta::default();
        let n = unique();
        let partner = auth
            .create_partner(
                &caller,
                &format!("Partner {n}"),
                &format!("ops{n}@partner.example"),
                &meta,
            )
            .await
            .expect("create a partner");
        let key = auth
            .create_api_key(&caller, Some(partner.id), "default", None, None, &meta)
            .await
            .expect("create a key");
        TestPartner {
            id: partner.id,
            key: key.secret.expose_secret().to_owned(),
            key_id: key.key.id.to_string(),
        }
    }

    /// A new user of `partner` (or the first platform admin when `partner` is `None`).
    pub async fn new_user(&self, partner: Option<PartnerId>, role: Role) -> TestUser {
        let auth = self.auth().await;
        let n = unique();
        let email = format!("user{n}@example.com");
        let password = format!("violet-tractor-harbor-{n}");
        let user = match partner {
            None => auth
                .bootstrap("test", &email, SecretString::from(password.clone()))
                .await
                .expect("bootstrap a platform admin"),
            Some(partner) => auth
                .create_user(
                    &Caller::Operator("test".into()),
                    Some(partner),
                    &email,
                    SecretString::from(password.clone()),
                    role,
                    &RequestMeta::default(),
                )
                .await
                .expect("create a user"),
        };
        TestUser {
            id: user.id.to_string(),
            email,
            password,
        }
    }

    /// Logs in over HTTP and returns the access token.
    pub async fn login(&self, user: &TestUser) -> String {
        let resp = self
            .post_json(
                "/v1/auth/login",
                &serde_json::json!({"email": user.email, "password": user.password}),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200, "login of {}", user.email);
        let body: serde_json::Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::DELETE, path, token)
            .send()
            .await
            .expect("request sent")
    }

    /// Rows in a table (for "nothing changed" assertions).
    pub async fn count(&self, table: &str) -> i64 {
        self.sql_count(&format!("SELECT count(*) AS n FROM {table}"))
            .await
    }

    /// Runs a query answering one `n` (a `count(*) AS n`).
    pub async fn sql_count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = self.db().await;
        diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .await
            .expect("count rows")
            .n
    }

    /// Runs a query answering one text column `t` per row (e.g. `SELECT t::text AS t ...`).
    pub async fn sql_texts(&self, sql: &str) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            t: String,
        }
        let mut conn = self.db().await;
        diesel::sql_query(sql)
            .load::<Row>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|r| r.t)
            .collect()
    }

    /// A small pool on this app's database, for recording events or other writes as a
    /// module would.
    pub fn pool(&self) -> Db {
        Db::connect(
            &self.db_url,
            &PoolOptions {
                max_size: 2,
                wait_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                tx_max_retries: 3,
                ca_file: None,
            },
        )
        .expect("a pool")
    }

    /// Transfers that posted (`ledger_transfers` also holds the ids of failed ones).
    pub async fn posted_transfers(&self) -> i64 {
        self.sql_count("SELECT count(*) AS n FROM ledger_transfers WHERE result IS NULL")
            .await
    }

    /// Transfer ids that failed on the ledger's state (their ids are burnt).
    pub async fn failed_transfers(&self) -> i64 {
        self.sql_count("SELECT count(*) AS n FROM ledger_transfers WHERE result IS NOT NULL")
            .await
    }

    /// Runs SQL on this app's database (test set-up and fault injection).
    pub async fn sql(&self, sql: &str) {
        let mut conn = self.db().await;
        conn.batch_execute(sql).await.expect("test SQL");
    }

    /// The app's services over its database, as an admin verb builds them (with their own
    /// workers, to stop when done): to call a service directly (a fake clock, the books).
    pub fn services(
        &self,
    ) -> (
        flowlet::wiring::Services,
        flowlet::platform::workers::Workers,
    ) {
        let mut workers = flowlet::platform::workers::Workers::new();
        let services = flowlet::wiring::Services::build(
            &self.settings,
            &self.pool(),
            &SharedState::in_process(),
            &mut workers,
            None,
        )
        .expect("the services");
        (services, workers)
    }

    /// Every invariant of the books holds: the ledger's, and every payment against its
    /// transfers (exactly the check behind `flowlet admin ledger verify`).
    pub async fn assert_ledger_invariants(&self) {
        let (services, workers) = self.services();
        let report = services
            .verify_books(true)
            .await
            .expect("verify the books")
            .expect("the verification lock");
        workers.stop(Duration::from_secs(5)).await;
        assert!(
            report.is_sound(),
            "ledger invariants broken: {:#?}",
            report.violations
        );
    }

    /// A ledger service over this app's database for direct reads (its engine is not run;
    /// postings go through the app or through [`spawn_engine`]).
    pub fn ledger(&self) -> LedgerService {
        let db = Db::connect(
            &self.db_url,
            &PoolOptions {
                max_size: 2,
                wait_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                tx_max_retries: 3,
                ca_file: None,
            },
        )
        .expect("a ledger pool");
        LedgerService::new(
            db,
            flowlet::wiring::engine_config(&self.settings.ledger),
            None,
        )
        .0
    }

    /// A second posting engine on this app's database (as another replica would run), with
    /// its own pool of `connections`.
    pub fn spawn_engine(
        &self,
        connections: usize,
    ) -> (LedgerService, flowlet::platform::workers::Workers) {
        let db = Db::connect(
            &self.db_url,
            &PoolOptions {
                max_size: connections,
                wait_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                tx_max_retries: 3,
                ca_file: None,
            },
        )
        .expect("an engine pool");
        let (ledger, engine) = LedgerService::new(
            db,
            flowlet::wiring::engine_config(&self.settings.ledger),
            None,
        );
        let mut workers = flowlet::platform::workers::Workers::new();
        workers.spawn("test-engine", |shutdown| engine.run(shutdown));
        (ledger, workers)
    }

    /// Mail the app has sent so far (file transport), waiting up to 5 s for `expected` messages.
    pub async fn mail(&self, expected: usize) -> Vec<crate::mailbox::ReceivedEmail> {
        let started = std::time::Instant::now();
        loop {
            let mail = crate::mailbox::read_mail_dir(&self.mail_dir).unwrap_or_default();
            if mail.len() >= expected || started.elapsed() > Duration::from_secs(5) {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A partner made by the harness, with its first (full-access) API key.
pub struct TestPartner {
    pub id: PartnerId,
    pub key: String,
    pub key_id: String,
}

/// A user made by the harness, with the password it can log in with.
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
}

/// A number unique within this test process, for emails and names.
pub fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Distinct across processes too (nextest): mix in the process id.
    u64::from(std::process::id()) * 1_000_000 + n
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Fire and forget: the runtime may be ending; dropping the database (with the last app
        // using it) forces remaining connections closed anyway.
        drop(self.handle.stop(false));
    }
}

/// Asserts a problem+json response: status, content type, `code`, and a `request_id` that
/// matches the X-Request-Id header. Returns the body for further checks.
pub async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response has X-Request-Id");
    let body: serde_json::Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(body["status"], status, "status member in {body}");
    assert_eq!(body["type"], format!("urn:flowlet:problem:{code}"));
    assert!(body["title"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    body
}

// ---------------------------------------------------------------------------------------------
// Probe routes: mounted only by the harness, to drive the platform's plumbing (JSON parsing,
// panics, internal errors, slow requests) that no product route exercises on purpose.

fn probe_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/__test/echo").route(web::post().to(echo)))
        .service(web::resource("/__test/panic").route(web::get().to(panics)))
        .service(web::resource("/__test/internal").route(web::get().to(internal)))
        .service(web::resource("/__test/slow").route(web::get().to(slow)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoBody {
    name: String,
    amount: Amount,
    currency: Currency,
}

async fn echo(body: web::Json<EchoBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let money = Money::parse_positive(&body.amount, body.currency).map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        )
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "name": body.name,
        "amount": money.format_amount(),
        "currency": money.currency().code(),
        "minor": money.minor(),
    })))
}

async fn panics() -> HttpResponse {
    #[allow(clippy::panic, reason = "the point of this probe is to panic")]
    {
        panic!("probe route panicked on purpose");
    }
}

async fn internal() -> Result<HttpResponse, ApiError> {
    Err(ApiError::internal(anyhow::anyhow!(
        "SELECT password FROM auth_users failed at postgres://flowlet:hunter2@db"
    )))
}

async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(500)).await;
    HttpResponse::Ok().body("done")
}

// ---------------------------------------------------------------------------------------------
// Databases.

/// A fresh database of this test, dropped when the value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database_blocking(&self.name);
    }
}

/// A new database cloned from the migrated template.
pub async fn test_database() -> TestDatabase {
    let template = template().await;
    let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let mut admin = admin_conn().await;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .await
        .expect("create the test database from the template");
    TestDatabase {
        url: with_database(server_url().await, &name),
        name,
    }
}

/// A new, empty database (no migrations), for migration tests.
pub async fn empty_database() -> TestDatabase {
    server_url().await;
    let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let mut admin = admin_conn().await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create an empty database");
    TestDatabase {
        url: with_database(server_url().await, &name),
        name,
    }
}

/// The server tests create their databases on, as a URL to its maintenance database.
pub async fn server_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        let url = if let Ok(url) = std::env::var("FLOWLET_TEST_DATABASE_URL") {
            url
        } else {
            let local = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
            if AsyncPgConnection::establish(&local).await.is_ok() {
                local
            } else {
                embedded_server_url().await
            }
        };
        let _ = SERVER_URL_FOR_DROP.set(url.clone());
        url
    })
    .await
}

/// No server configured or running: a private one under target/, kept for later runs.
async fn embedded_server_url() -> String {
    static EMBEDDED: OnceCell<EmbeddedPostgres> = OnceCell::const_new();
    let dir = target_dir().join("flowlet-test-pg");
    let pg = EMBEDDED
        .get_or_init(|| async {
            EmbeddedPostgres::start(&dir, Placement::Relocatable)
                .await
                .expect("no PostgreSQL for tests: set FLOWLET_TEST_DATABASE_URL, run one on 127.0.0.1:5432, or install PostgreSQL's binaries")
        })
        .await;
    pg.url()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

async fn admin_conn() -> AsyncPgConnection {
    AsyncPgConnection::establish(server_url().await)
        .await
        .expect("connect to the test PostgreSQL server")
}

/// The migrated template's name; built once per migration set, shared by all test processes.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("flowlet_tpl_{:016x}", migrations_hash());
            let mut admin = admin_conn().await;
            diesel::sql_query("SELECT pg_advisory_lock($1)")
                .bind::<BigInt, _>(TEMPLATE_LOCK_KEY)
                .execute(&mut admin)
                .await
                .expect("template lock");
            if !database_exists(&mut admin, &name).await {
                let building = format!("{name}_building");
                admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
                    ))
                    .await
                    .expect("drop a half-built template");
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{building}\""))
                    .await
                    .expect("create the template");
                flowlet::platform::db::run_migrations(&with_database(
                    server_url().await,
                    &building,
                ))
                .await
                .expect("migrate the template");
                admin
                    .batch_execute(&format!(
                        "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
                    ))
                    .await
                    .expect("publish the template");
            }
            drop_stale_databases(&mut admin).await;
            drop_old_templates(&mut admin, &name).await;
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(TEMPLATE_LOCK_KEY)
                .execute(&mut admin)
                .await
                .expect("template unlock");
            name
        })
        .await
}

/// Names of the databases matching a LIKE pattern.
async fn database_names(conn: &mut AsyncPgConnection, like: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind::<Text, _>(like)
        .load::<Row>(conn)
        .await
        .expect("query pg_database")
        .into_iter()
        .map(|r| r.datname)
        .collect()
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    // Test database names contain `_`, a LIKE wildcard, so escape it.
    !database_names(conn, &name.replace('_', "\\_"))
        .await
        .is_empty()
}

/// Test databases left by crashed runs (their UUIDv7 says when they were made).
async fn drop_stale_databases(conn: &mut AsyncPgConnection) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    for name in database_names(conn, "flowlet\\_t\\_%").await {
        let created_ms = name
            .strip_prefix(TEST_DB_PREFIX)
            .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
            .and_then(|u| u.get_timestamp())
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                u128::from(secs) * 1000 + u128::from(nanos / 1_000_000)
            });
        if created_ms.is_some_and(|ms| now_ms.saturating_sub(ms) > STALE_AFTER.as_millis()) {
            let _ = conn
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// Templates of earlier migration sets; one still being cloned from is left for next time.
async fn drop_old_templates(conn: &mut AsyncPgConnection, current: &str) {
    for name in database_names(conn, "flowlet\\_tpl\\_%").await {
        if name != current {
            let _ = conn
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
        }
    }
}

/// Drops a test database from synchronous code (Drop), on a thread with its own runtime.
pub fn drop_database_blocking(name: &str) {
    if std::env::var_os("FLOWLET_TEST_KEEP_DB").is_some() {
        return;
    }
    let Some(url) = SERVER_URL_FOR_DROP.get().cloned() else {
        return;
    };
    let name = name.to_owned();
    let joined = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            if let Ok(mut conn) = AsyncPgConnection::establish(&url).await {
                let _ = conn
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        });
    })
    .join();
    drop(joined);
}

/// A copy of the server URL reachable from synchronous code.
static SERVER_URL_FOR_DROP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_and_path = &base[scheme_end..];
    let authority = authority_and_path
        .split_once('/')
        .map_or(authority_and_path, |(a, _)| a);
    let mut out = format!("{}{}/{}", &base[..scheme_end], authority, database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Changes whenever a migration file changes, so a stale template is never reused.
fn migrations_hash() -> u64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files = Vec::new();
    collect_files(&dir, &mut files);
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.strip_prefix(&dir).unwrap_or(&file).hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect_files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
