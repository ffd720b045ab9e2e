//! Advisory lock keys: one scheme for every PostgreSQL advisory lock the product takes.
//!
//! A key is a namespace (one per kind of thing locked, each with a 64-bit tag) and which thing
//! within it. Keys of one thing are its id's last 8 bytes XOR the namespace's tag (random
//! UUIDv7 tails, so two things of a kind share a key only by chance, which costs a wait, never
//! correctness); a namespace that locks one thing has one key, its tag. The tags of the
//! namespaces that existed before this type are kept bit for bit, so replicas of the previous
//! release and of this one exclude each other during a rolling update.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A kind of thing locked. Declare one as a `const` next to the code that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockNamespace {
    name: &'static str,
    tag: i64,
}

impl LockNamespace {
    /// `name` is for people (logs, docs/architecture.md); `tag` spreads the namespace over the
    /// key space and must differ from every other namespace's.
    pub const fn new(name: &'static str, tag: i64) -> LockNamespace {
        LockNamespace { name, tag }
    }

    pub const fn name(self) -> &'static str {
        self.name
    }
}

/// A transaction- or session-scoped advisory lock key (PostgreSQL's one-`bigint` form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey(i64);

impl LockKey {
    /// The key of the thing `id` in `namespace`.
    pub fn new(namespace: LockNamespace, id: Uuid) -> LockKey {
        let bytes = id.into_bytes();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&bytes[8..]);
        LockKey(i64::from_le_bytes(tail) ^ namespace.tag)
    }

    /// The key of a thing named by text (a currency's rail account, say).
    pub fn named(namespace: LockNamespace, name: &str) -> LockKey {
        let digest = Sha256::new()
            .chain_update(namespace.name.as_bytes())
            .chain_update([0u8])
            .chain_update(name.as_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        LockKey(i64::from_le_bytes(head) ^ namespace.tag)
    }

    /// The one key of a namespace that locks a single thing (migrations, verification).
    pub const fn singleton(namespace: LockNamespace) -> LockKey {
        LockKey(namespace.tag)
    }

    /// The value PostgreSQL's `pg_advisory_*lock(bigint)` takes.
    pub const fn value(self) -> i64 {
        self.0
    }
}

/// The platform's own namespaces. `0x0066_6c6f_776c_6574` is "flowlet" in ASCII.
pub mod namespaces {
    use super::LockNamespace;

    /// One replica migrates at a time.
    pub const MIGRATIONS: LockNamespace =
        LockNamespace::new("platform.migrations", 0x0066_6c6f_776c_6574 + 1);
    /// The test harness builds its template database once across processes.
    pub const TEST_TEMPLATE: LockNamespace =
        LockNamespace::new("platform.test_template", 0x0066_6c6f_776c_6574 + 2);
    /// One replica (or operator) verifies the books at a time.
    pub const VERIFICATION: LockNamespace =
        LockNamespace::new("platform.verification", 0x0066_6c6f_776c_6574 + 3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_values_replicas_of_the_previous_release_take() {
        let id = Uuid::parse_str("0191c0de-0000-7000-8000-0123456789ab").unwrap();
        let tail = i64::from_le_bytes([0x80, 0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
        let kyc = LockNamespace::new("kyc.limits", 0x6b79_635f_6c69_6d74);
        assert_eq!(LockKey::new(kyc, id).value(), tail ^ 0x6b79_635f_6c69_6d74);
        assert_eq!(
            LockKey::singleton(namespaces::MIGRATIONS).value(),
            0x0066_6c6f_776c_6574 + 1
        );
    }

    #[test]
    fn namespaces_and_things_get_different_keys() {
        let a = LockNamespace::new("a", 1);
        let b = LockNamespace::new("b", 2);
        let id = Uuid::now_v7();
        assert_ne!(LockKey::new(a, id), LockKey::new(b, id));
        assert_ne!(LockKey::new(a, id), LockKey::new(a, Uuid::now_v7()));
        assert_ne!(LockKey::named(a, "USD"), LockKey::named(a, "EUR"));
        assert_eq!(LockKey::named(a, "USD"), LockKey::named(a, "USD"));
        assert_ne!(LockKey::named(a, "x"), LockKey::named(b, "x"));
    }
}
