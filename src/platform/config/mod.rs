//! Configuration mechanics: the layers, the [`Section`] every part of the configuration is, and
//! the errors that stop start-up. The sections themselves belong to their owners (platform's
//! own in `config/sections.rs`, each domain module's in its `settings.rs`); the composition
//! root (`src/settings.rs`) puts them together into the one `Settings` read at start-up.
//!
//! Layers, later wins: `config/default.toml` < `config/$FLOWLET_ENV.toml` < environment
//! variables `FLOWLET__SECTION__KEY`. Both files are compiled into the binary as well, so the
//! service starts with the same defaults from any working directory (a container, an operator's
//! shell); a `config/` directory next to it (or at `FLOWLET_CONFIG_DIR`) takes precedence.
//!
//! Every value is validated before anything starts: a bad value stops start-up with a message
//! that names its key, and production refuses the development secrets.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};

mod sections;
#[cfg(test)]
mod tests;

pub use sections::{
    DatabaseSettings, IdempotencySettings, LogFormat, LogSettings, RedisSettings, ServerSettings,
};

const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");
const DEVELOPMENT_TOML: &str = include_str!("../../../config/development.toml");
const TEST_TOML: &str = include_str!("../../../config/test.toml");
const PRODUCTION_TOML: &str = include_str!("../../../config/production.toml");

/// Shortest HS256 secret production accepts (RFC 7518 §3.2: at least the hash size, 256 bits).
const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// One section of the configuration (`[ledger]` in the files, `FLOWLET__LEDGER__*` in the
/// environment), owned by the module that reads it: its typed value, its raw form, its
/// validation. The composition root (`src/settings.rs`) composes every section; a module's
/// tests load their own alone with [`load_section`].
pub trait Section: Sized {
    /// The section's table: `[<KEY>]` in the files, `FLOWLET__<KEY>__*` in the environment, and
    /// its field in the composed settings.
    const KEY: &'static str;

    /// The section as the layers give it, before validation. It refuses unknown fields
    /// (`deny_unknown_fields`), so a typo (`FLOWLET__SERVER__BIDN`) fails loudly instead of
    /// silently leaving a default in place.
    type Raw: DeserializeOwned;

    /// Checks every value, naming the key at fault, and builds the typed section. `env` is
    /// where the service runs (production may shape a section, e.g. drop a development key).
    fn validate(raw: Self::Raw, env: Environment) -> Result<Self, ConfigError>;

    /// The values in this section anyone could know from the repository (the development
    /// defaults) or guess (too short). Production refuses to start with any of them, and lists
    /// every section's at once so an operator fixes them in one go.
    fn development_secrets(&self) -> Vec<InsecureKey> {
        Vec::new()
    }
}

/// Where the service runs; production turns on the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "development" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(ConfigError::invalid(
                "env",
                "FLOWLET_ENV",
                format!("`{other}` is not one of development, test, production"),
            )),
        }
    }

    /// The name used for the per-environment config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

/// Why the configuration was refused. The message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration value for `{key}` ({env_var}): {reason}")]
    Invalid {
        key: &'static str,
        env_var: &'static str,
        reason: String,
    },
    #[error(
        "FLOWLET_ENV=production refuses development secrets; set these keys: {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    DevelopmentSecrets(Vec<InsecureKey>),
}

impl ConfigError {
    /// A value its section refuses: `key` as in the files (`ledger.queue_capacity`), `env_var`
    /// as an operator sets it (`FLOWLET__LEDGER__QUEUE_CAPACITY`).
    pub fn invalid(key: &'static str, env_var: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            env_var,
            reason: reason.into(),
        }
    }
}

/// A secret that production refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureKey {
    pub key: &'static str,
    pub env_var: &'static str,
    pub reason: &'static str,
}

impl InsecureKey {
    /// Whether production refuses `value` for `key`: it is the `development` value shipped in
    /// `config/default.toml`, or shorter than an HS256 key (32 bytes).
    pub fn check_secret(
        key: &'static str,
        env_var: &'static str,
        value: &str,
        development: &str,
    ) -> Option<InsecureKey> {
        let reason = if value == development {
            "is the development default"
        } else if value.len() < MIN_PRODUCTION_SECRET_BYTES {
            "is shorter than 32 bytes"
        } else {
            return None;
        };
        Some(InsecureKey {
            key,
            env_var,
            reason,
        })
    }
}

impl fmt::Display for InsecureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}) {}", self.key, self.env_var, self.reason)
    }
}

/// Where the layers come from. `from_process` reads the real environment; tests build one
/// with their own variables so they can run in parallel without touching the process's.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_dir: Option<PathBuf>,
    pub env_vars: HashMap<String, String>,
}

impl Sources {
    /// The process environment and `FLOWLET_CONFIG_DIR` (default `config`).
    pub fn from_process() -> Self {
        let env_vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FLOWLET"))
            .collect();
        let config_dir = Some(
            env_vars
                .get("FLOWLET_CONFIG_DIR")
                .map_or_else(|| PathBuf::from("config"), PathBuf::from),
        );
        Self {
            config_dir,
            env_vars,
        }
    }

    /// No files but the compiled-in ones, plus the given variables.
    pub fn with_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            config_dir: None,
            env_vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// The layers of one load, merged, before any section reads them.
pub struct Layers {
    env: Environment,
    merged: config::Config,
}

impl Layers {
    /// Reads `FLOWLET_ENV` and merges the layers it selects.
    pub fn read(sources: &Sources) -> Result<Layers, ConfigError> {
        let env = Environment::parse(
            sources
                .env_vars
                .get("FLOWLET_ENV")
                .map_or("development", String::as_str),
        )?;
        let merged = config::Config::builder()
            .add_source(layer(
                sources.config_dir.as_deref(),
                "default",
                DEFAULT_TOML,
            ))
            .add_source(layer(
                sources.config_dir.as_deref(),
                env.as_str(),
                match env {
                    Environment::Development => DEVELOPMENT_TOML,
                    Environment::Test => TEST_TOML,
                    Environment::Production => PRODUCTION_TOML,
                },
            ))
            .add_source(
                config::Environment::with_prefix("FLOWLET")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(
                        sources
                            .env_vars
                            .iter()
                            .filter(|(k, _)| k.starts_with("FLOWLET__"))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )),
            )
            .build()?;
        Ok(Layers { env, merged })
    }

    /// Where the service runs (`FLOWLET_ENV`).
    pub fn env(&self) -> Environment {
        self.env
    }

    /// The whole configuration in one raw shape: the composed settings' sections, each under
    /// its [`Section::KEY`].
    pub fn deserialize<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        Ok(self.merged.try_deserialize()?)
    }

    /// One section alone, validated, and in production refused if it holds development
    /// secrets: what the composed load checks for this section.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        let raw = serde::Deserializer::deserialize_map(
            self.merged.clone(),
            OneSection::<S::Raw>(S::KEY, PhantomData),
        )?
        .ok_or_else(|| config::ConfigError::NotFound(S::KEY.to_owned()))?;
        let section = S::validate(raw, self.env)?;
        if self.env == Environment::Production {
            let insecure = section.development_secrets();
            if !insecure.is_empty() {
                return Err(ConfigError::DevelopmentSecrets(insecure));
            }
        }
        Ok(section)
    }
}

/// Reads the table under one key as a section's raw form, skipping the others. Read as a field
/// of the whole, like the composed load reads it, so an error names the same path
/// (`kyc.tiers.3`, not `kyc`).
struct OneSection<R>(&'static str, PhantomData<R>);

impl<'de, R: DeserializeOwned> Visitor<'de> for OneSection<R> {
    type Value = Option<R>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a configuration with a `{}` table", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<R>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                found = Some(map.next_value::<R>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Reads and validates one section from `sources`, without the rest of the configuration: a
/// module's own tests need their section, not the composition.
pub fn load_section<S: Section>(sources: &Sources) -> Result<S, ConfigError> {
    Layers::read(sources)?.section()
}

/// One layer: the file in the config directory when present, else the compiled-in copy.
fn layer(
    dir: Option<&Path>,
    name: &str,
    embedded: &'static str,
) -> config::File<config::FileSourceString, config::FileFormat> {
    if let Some(dir) = dir {
        let path = dir.join(format!("{name}.toml"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return config::File::from_str(&text, config::FileFormat::Toml);
        }
    }
    config::File::from_str(embedded, config::FileFormat::Toml)
}

/// An empty environment variable means "unset", as operators expect from `FOO=`.
pub fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}
