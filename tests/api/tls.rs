//! TLS to the databases, end to end: the service against a PostgreSQL that refuses plaintext
//! (`hostnossl ... reject`) with `sslmode=verify-full` and a private CA, and against a Redis
//! that only speaks TLS (`rediss://`). Certificates are made here (rcgen), never downloaded.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use flowlet::platform::db::embedded::{EmbeddedPostgres, Placement};
use flowlet::platform::db::{PgConnector, SslMode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;

use crate::helpers::{TestOptions, spawn_app_with};

/// A private CA and the certificates it signs, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Flowlet test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses): (cert, key) PEM files.
    fn server(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_owned());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{file}.crt")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A private PostgreSQL that speaks TLS only, with `cert`/`key` as its certificate.
struct TlsPostgres {
    server: Option<EmbeddedPostgres>,
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    async fn start(cert: &Path, key: &Path) -> TlsPostgres {
        let dir = tempfile::tempdir().unwrap();
        let server = EmbeddedPostgres::start(&dir.path().join("pg"), Placement::Relocatable)
            .await
            .expect("an embedded PostgreSQL for the TLS tests");
        let data = server.dir().join("data");
        // The server's own files: owned by the user it runs as, the key private to it.
        let owner = std::fs::metadata(&data).unwrap();
        let place = |from: &Path, name: &str, mode: u32| {
            let to = data.join(name);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        };
        place(cert, "server.crt", 0o644);
        place(key, "server.key", 0o600);
        let hba = data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .unwrap();
        std::os::unix::fs::chown(&hba, Some(owner.uid()), Some(owner.gid())).unwrap();
        let mut admin = PgConnector::new(&format!("{}?sslmode=disable", server.url()), None)
            .unwrap()
            .connect()
            .await
            .expect("a plaintext admin connection before TLS is switched on");
        // One statement at a time: neither may run inside a transaction block.
        for statement in [
            "CREATE DATABASE flowlet_tls",
            "ALTER SYSTEM SET ssl = on",
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(statement).await.unwrap();
        }
        drop(admin);
        let pg = TlsPostgres {
            server: Some(server),
            _dir: dir,
        };
        // The reload is asynchronous: wait until plaintext is refused.
        let started = Instant::now();
        loop {
            let plain = PgConnector::new(&pg.url("sslmode=disable"), None).unwrap();
            if plain.connect().await.is_err() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "TLS was not switched on"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pg
    }

    fn port(&self) -> u16 {
        self.server.as_ref().unwrap().port()
    }

    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/flowlet_tls?{params}",
            self.port()
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Stopped on a runtime of its own: Drop may run outside any.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(server.stop()))
            })
            .join();
        }
    }
}

/// A partner and its API key, made in the database at `url` (the harness seeds its own).
pub(crate) async fn partner_key(
    app: &crate::helpers::TestApp,
    url: &str,
    ca: Option<&Path>,
) -> String {
    use flowlet::auth::{AuthService, Caller, RequestMeta};
    use secrecy::ExposeSecret;
    let db = flowlet::platform::db::Db::connect(
        url,
        &flowlet::platform::db::PoolOptions {
            max_size: 1,
            wait_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            tx_max_retries: 3,
            ca_file: ca.map(Path::to_path_buf),
        },
    )
    .unwrap();
    let auth = AuthService::new(
        db,
        flowlet::platform::shared_state::SharedState::in_process(),
        &app.settings.auth,
        &app.settings.rate_limit,
        false,
        std::sync::Arc::new(flowlet::notify::TransactionalOutbox),
    )
    .unwrap();
    let (operator, meta) = (Caller::Operator("tls-test".into()), RequestMeta::default());
    let partner = auth
        .create_partner(&operator, "TLS partner", "ops@tls.example", &meta)
        .await
        .unwrap();
    let key = auth
        .create_api_key(&operator, Some(partner.id), "default", None, None, &meta)
        .await
        .unwrap();
    key.secret.expose_secret().to_owned()
}

async fn can_connect(url: &str, ca: Option<&Path>) -> Result<(), String> {
    let connector = PgConnector::new(url, ca).map_err(|e| e.to_string())?;
    let mut conn = connector.connect().await.map_err(|e| e.to_string())?;
    conn.batch_execute("SELECT 1")
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_service_runs_against_a_postgresql_that_requires_tls_with_verify_full() {
    let pki = Pki::new("pg");
    let (cert, key) = pki.server("db", &["localhost", "127.0.0.1"]);
    let pg = TlsPostgres::start(&cert, &key).await;
    let ca = pki.ca_file();

    // The whole service: migrations, the pools, a partner's requests, /ready.
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__DATABASE__URL", pg.url("sslmode=verify-full"))
            .var("FLOWLET__DATABASE__CA_FILE", ca.display().to_string()),
    )
    .await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["migrations"]["status"], "up");
    let partner = partner_key(&app, &pg.url("sslmode=verify-full"), Some(&ca)).await;
    let resp = app
        .client
        .get(app.url("/v1/wallets"))
        .bearer_auth(&partner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Each connection of the service is encrypted (PostgreSQL's own view of them).
    let mut conn = PgConnector::new(&pg.url("sslmode=verify-full"), Some(&ca))
        .unwrap()
        .connect()
        .await
        .unwrap();
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        plain: i64,
    }
    let counted: Count = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) FILTER (WHERE NOT s.ssl) AS plain \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'flowlet_tls'",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(counted.plain, 0, "no plaintext connection to the database");
}

#[tokio::test]
async fn sslmodes_mean_what_libpq_says_against_a_tls_only_postgresql() {
    let pki = Pki::new("modes");
    // A certificate for another host name, signed by the trusted CA.
    let (cert, key) = pki.server("elsewhere", &["db.elsewhere.example"]);
    let pg = TlsPostgres::start(&cert, &key).await;
    let ca = pki.ca_file();
    let stranger = Pki::new("stranger");

    // Plaintext is refused by the server; prefer and require encrypt without checking.
    assert!(can_connect(&pg.url("sslmode=disable"), None).await.is_err());
    can_connect(&pg.url("sslmode=prefer"), None).await.unwrap();
    can_connect(&pg.url("sslmode=require"), None).await.unwrap();
    // verify-ca checks the chain only: the trusted CA passes, a stranger's fails.
    can_connect(&pg.url("sslmode=verify-ca"), Some(&ca))
        .await
        .unwrap();
    let err = can_connect(&pg.url("sslmode=verify-ca"), Some(&stranger.ca_file()))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // require with a CA behaves like verify-ca (libpq), so a stranger's CA fails too.
    assert!(
        can_connect(&pg.url("sslmode=require"), Some(&stranger.ca_file()))
            .await
            .is_err()
    );
    // verify-full also checks the name: this certificate is not for localhost.
    let err = can_connect(&pg.url("sslmode=verify-full"), Some(&ca))
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The URL's own sslrootcert works like database.ca_file.
    let root = format!(
        "sslmode=verify-ca&sslrootcert={}",
        ca.display().to_string().replace('/', "%2F")
    );
    can_connect(&pg.url(&root), None).await.unwrap();
    // Without any CA given, the public roots do not know this private CA.
    assert!(
        can_connect(&pg.url("sslmode=verify-ca"), None)
            .await
            .is_err()
    );
    assert_eq!(
        PgConnector::new(&pg.url("sslmode=verify-full"), None)
            .unwrap()
            .mode(),
        SslMode::VerifyFull
    );
}

/// A redis-server that speaks TLS only (`--port 0`), on a free port.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(cert: &Path, key: &Path, ca: &Path) -> TlsRedis {
        let port = crate::helpers::free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (built with TLS, as Debian's is) for this test");
        crate::helpers::wait_for_port(port, "redis-server with TLS");
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_service_uses_a_redis_that_only_speaks_tls() {
    let pki = Pki::new("redis");
    let (cert, key) = pki.server("cache", &["localhost", "127.0.0.1"]);
    let redis = TlsRedis::start(&cert, &key, &pki.ca_file());
    let app = spawn_app_with(
        TestOptions::default()
            .var(
                "FLOWLET__REDIS__URL",
                format!("rediss://localhost:{}", redis.port),
            )
            .var(
                "FLOWLET__REDIS__CA_FILE",
                pki.ca_file().display().to_string(),
            )
            .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "2"),
    )
    .await;
    let body: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "up", "{body}");
    // The limits live in that Redis: two requests, then 429.
    let partner = app.new_partner().await;
    for _ in 0..2 {
        let resp = app
            .client
            .get(app.url("/v1/auth/me"))
            .bearer_auth(&partner.key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let resp = app
        .client
        .get(app.url("/v1/auth/me"))
        .bearer_auth(&partner.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);

    // A CA that did not sign the server's certificate: Redis is unusable (degraded).
    let stranger = Pki::new("redis-stranger");
    let app = spawn_app_with(
        TestOptions::default()
            .var(
                "FLOWLET__REDIS__URL",
                format!("rediss://localhost:{}", redis.port),
            )
            .var(
                "FLOWLET__REDIS__CA_FILE",
                stranger.ca_file().display().to_string(),
            ),
    )
    .await;
    let body: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "degraded", "{body}");
}
