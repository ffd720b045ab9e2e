//! TLS: one crypto provider for the whole process.
//!
//! rustls needs a crypto provider; the project uses `ring` everywhere (SMTP, webhooks) and
//! never aws-lc-rs, whose C build is slow on our machines. Installing it as the process
//! default keeps any HTTP client built without explicit TLS settings from panicking.

/// Installs `ring` as rustls's process-wide default provider. Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
