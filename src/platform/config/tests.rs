//! The layers and platform's own sections, each loaded alone (`src/settings.rs` tests the
//! composition).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::platform::db::embedded::Placement;

fn load<S: Section>(vars: &[(&str, &str)]) -> Result<S, ConfigError> {
    load_section(&Sources::with_vars(vars.iter().copied()))
}

#[test]
fn environment_variables_override_files() {
    let vars = [
        ("FLOWLET__SERVER__BIND", "0.0.0.0:9000"),
        ("FLOWLET__DATABASE__URL", "postgres://u@db:5432/flowlet"),
        ("FLOWLET__DATABASE__EMBEDDED_DIR", "/tmp/x"),
        ("FLOWLET__REDIS__URL", "redis://cache:6379"),
        ("FLOWLET__LOG__FORMAT", "json"),
        ("FLOWLET__DATABASE__POOL_SIZE", "3"),
    ];
    let server: ServerSettings = load(&vars).unwrap();
    let database: DatabaseSettings = load(&vars).unwrap();
    let redis: RedisSettings = load(&vars).unwrap();
    let log: LogSettings = load(&vars).unwrap();
    assert_eq!(server.bind.port(), 9000);
    assert_eq!(database.expose_url(), Some("postgres://u@db:5432/flowlet"));
    assert_eq!(database.embedded_dir, PathBuf::from("/tmp/x"));
    assert_eq!(
        database.embedded_placement,
        Placement::Exact,
        "a directory an operator chose is never moved"
    );
    assert_eq!(redis.expose_url(), Some("redis://cache:6379"));
    assert_eq!(log.format, LogFormat::Json);
    assert_eq!(database.pool_size, 3);
}

#[test]
fn an_empty_database_url_means_embedded() {
    let s: DatabaseSettings = load(&[("FLOWLET__DATABASE__URL", "")]).unwrap();
    assert!(s.url.is_none());
}

#[test]
fn an_unparseable_bind_address_names_its_key() {
    let err = load::<ServerSettings>(&[("FLOWLET__SERVER__BIND", "localhost:http")]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("server.bind"), "{msg}");
    assert!(msg.contains("FLOWLET__SERVER__BIND"), "{msg}");
}

#[test]
fn an_unknown_log_format_names_its_key() {
    let msg = load::<LogSettings>(&[("FLOWLET__LOG__FORMAT", "xml")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("log.format"), "{msg}");
}

#[test]
fn a_bad_log_filter_names_its_key() {
    let msg = load::<LogSettings>(&[("FLOWLET__LOG__LEVEL", "info,,=[")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("log.level"), "{msg}");
}

#[test]
fn a_non_numeric_pool_size_names_its_key() {
    let msg = load::<DatabaseSettings>(&[("FLOWLET__DATABASE__POOL_SIZE", "many")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("database.pool_size"), "{msg}");
}

#[test]
fn an_unknown_environment_is_refused() {
    let msg = load::<ServerSettings>(&[("FLOWLET_ENV", "prod")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("FLOWLET_ENV"), "{msg}");
}

#[test]
fn a_database_url_of_another_scheme_is_refused() {
    let msg = load::<DatabaseSettings>(&[("FLOWLET__DATABASE__URL", "mysql://x")])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("database.url"), "{msg}");
}

#[test]
fn idempotency_keys_are_kept_a_day_and_locked_a_minute_by_default() {
    let s: IdempotencySettings = load(&[]).unwrap();
    assert_eq!(s.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(s.lock_timeout, Duration::from_secs(60));
    let s: IdempotencySettings = load(&[
        ("FLOWLET__IDEMPOTENCY__TTL_HOURS", "48"),
        ("FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS", "3600"),
    ])
    .unwrap();
    assert_eq!(s.ttl, Duration::from_secs(48 * 3600));
    assert_eq!(s.lock_timeout, Duration::from_secs(3600));
}

#[test]
fn idempotency_settings_out_of_range_are_refused_naming_the_key() {
    for (var, value, key) in [
        (
            "FLOWLET__IDEMPOTENCY__TTL_HOURS",
            "23",
            "idempotency.ttl_hours",
        ),
        (
            "FLOWLET__IDEMPOTENCY__TTL_HOURS",
            "8785",
            "idempotency.ttl_hours",
        ),
        (
            "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
            "0",
            "idempotency.lock_timeout_secs",
        ),
        (
            "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
            "3601",
            "idempotency.lock_timeout_secs",
        ),
    ] {
        let msg = match load::<IdempotencySettings>(&[(var, value)]) {
            Ok(_) => panic!("{var}={value} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(key), "{var}={value}: {msg}");
        assert!(msg.contains(var), "{var}={value}: {msg}");
    }
}

#[test]
fn files_in_the_config_directory_take_precedence_over_compiled_in_copies() {
    let dir = std::env::temp_dir().join(format!("flowlet-config-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("development.toml"),
        "[server]\nbind = \"127.0.0.1:9999\"\n",
    )
    .unwrap();
    let sources = Sources {
        config_dir: Some(dir.clone()),
        env_vars: HashMap::new(),
    };
    let s: ServerSettings = load_section(&sources).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(s.bind.port(), 9999);
}
