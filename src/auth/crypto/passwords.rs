//! Passwords: argon2id hashing with fixed, validated cost parameters (and a dummy
//! verification of the same cost), and the policy a new password must meet.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use super::CryptoError;

/// Length of the random salt of every password hash (the PHC recommendation).
const SALT_LEN: usize = 16;

/// Length of the argon2 output stored in the PHC string.
const HASH_LEN: usize = 32;

/// Longest password accepted, in characters: long enough for any passphrase or password manager,
/// short enough that nobody uploads a novel to the login form.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Cost parameters of argon2id. Stored with every hash (in the PHC string), so raising them later
/// only affects new hashes; [`Passwords::needs_rehash`] finds the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash, KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Passes over memory (argon2 `t`).
    pub iterations: u32,
    /// Lanes (argon2 `p`); this implementation computes them on one thread.
    pub parallelism: u32,
}

#[cfg(test)]
impl PasswordParams {
    /// The OWASP Password Storage Cheat Sheet's baseline for argon2id: 19 MiB, 2 passes, 1 lane
    /// (configuration refuses less; see `auth.argon2_*`).
    pub const OWASP_MINIMUM: PasswordParams = PasswordParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

/// argon2id password hashing with fixed, validated cost parameters.
///
/// Invariant: every hash it writes is `$argon2id$v=19$m=..,t=..,p=..$<16-byte salt>$<32-byte hash>`
/// with the current params, and it always holds a dummy hash of the same cost so that
/// [`Passwords::verify_dummy`] costs the same as a real verification.
pub struct Passwords {
    argon2: Argon2<'static>,
    params: PasswordParams,
    dummy_phc: String,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("algorithm", &"argon2id")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// Validates the params with argon2 and precomputes the dummy hash (costs one hash).
    ///
    /// Does not enforce OWASP's minimum itself (configuration validation does);
    /// configuration validation does.
    pub fn new(params: PasswordParams) -> Result<Self, CryptoError> {
        let argon2_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(HASH_LEN),
        )
        .map_err(|e| CryptoError::InvalidPasswordParams(e.to_string()))?;
        let argon2 = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, argon2_params);
        let mut passwords = Passwords {
            argon2,
            params,
            dummy_phc: String::new(),
        };
        let mut dummy_password = [0u8; 32];
        getrandom::fill(&mut dummy_password).map_err(|_| CryptoError::Random)?;
        passwords.dummy_phc = passwords.hash_bytes(&dummy_password)?;
        Ok(passwords)
    }

    /// PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a random 16-byte salt.
    /// CPU- and memory-heavy: callers run it in `spawn_blocking`.
    pub fn hash(&self, password: &SecretString) -> Result<String, CryptoError> {
        self.hash_bytes(password.expose_secret().as_bytes())
    }

    fn hash_bytes(&self, password: &[u8]) -> Result<String, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| CryptoError::Random)?;
        let phc: PasswordHash = self
            .argon2
            .hash_password_with_salt(password, &salt)
            .map_err(|e| CryptoError::Hashing(e.to_string()))?;
        Ok(phc.to_string())
    }

    /// Checks a password against a stored PHC string, using the params stored in it (so hashes
    /// made under older params still verify). Constant-time comparison of the outputs.
    ///
    /// `Ok(true)` on match; `Ok(false)` on mismatch; `Err` only for an unparseable or unsupported
    /// stored hash (or an argon2 resource failure). CPU-heavy: run it in `spawn_blocking`.
    pub fn verify(&self, password: &SecretString, phc: &str) -> Result<bool, CryptoError> {
        let parsed = PasswordHash::new(phc).map_err(|_| CryptoError::MalformedHash)?;
        match self
            .argon2
            .verify_password(password.expose_secret().as_bytes(), &parsed)
        {
            Ok(()) => Ok(true),
            Err(password_hash::Error::PasswordInvalid) => Ok(false),
            Err(
                e @ (password_hash::Error::OutOfMemory
                | password_hash::Error::Internal
                | password_hash::Error::Crypto
                | password_hash::Error::RngFailure),
            ) => Err(CryptoError::Hashing(e.to_string())),
            Err(_) => Err(CryptoError::MalformedHash),
        }
    }

    /// Does the same work as [`Passwords::verify`] against a real hash (a dummy hash made in
    /// [`Passwords::new`] with the current params) and returns `false`: a login for an unknown
    /// email takes about as long as a wrong password, so timing does not reveal which emails
    /// have accounts.
    pub fn verify_dummy(&self, password: &SecretString) -> bool {
        let outcome = self.verify(password, &self.dummy_phc);
        drop(std::hint::black_box(outcome));
        false
    }

    /// True when the stored hash was made differently from how [`Passwords::hash`] would make it
    /// now (other algorithm, version, params, output or salt length, or unparseable): rehash on
    /// the next successful login, while the plaintext is at hand.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm.as_str() != Argon2Algorithm::Argon2id.as_str()
            || parsed.version != Some(u32::from(Version::V0x13))
        {
            return true;
        }
        let Ok(stored) = Params::try_from(&parsed) else {
            return true;
        };
        let salt_ok = parsed.salt.as_ref().is_some_and(|s| s.len() >= SALT_LEN);
        stored.m_cost() != self.params.memory_kib
            || stored.t_cost() != self.params.iterations
            || stored.p_cost() != self.params.parallelism
            || stored.output_len() != Some(HASH_LEN)
            || !stored.keyid().is_empty()
            || !stored.data().is_empty()
            || !salt_ok
    }
}

/// Why a new password was refused. The messages are written for API clients (no password in
/// them); [`PasswordPolicyError::code`] is the stable machine-readable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Fewer characters than the configured minimum.
    #[error("password must be at least {min} characters long")]
    TooShort {
        /// The configured minimum, in characters.
        min: usize,
    },
    /// More characters than [`MAX_PASSWORD_CHARS`].
    #[error("password must be at most {max} characters long")]
    TooLong {
        /// The maximum, in characters.
        max: usize,
    },
    /// On the list of commonly leaked passwords that attackers try first.
    #[error("password is too common; choose one that is harder to guess")]
    Common,
    /// Contains the local part of the account's email address.
    #[error("password must not contain your email address")]
    ContainsEmail,
}

impl PasswordPolicyError {
    /// Stable error code for API responses; clients branch on it, not on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "password_too_short",
            Self::TooLong { .. } => "password_too_long",
            Self::Common => "password_too_common",
            Self::ContainsEmail => "password_contains_email",
        }
    }
}

/// Shortest email local part that [`check_password_policy`] looks for in a password: shorter
/// ones ("al", "bob") occur in too many good passwords by chance.
const MIN_EMAIL_LOCAL_PART_CHARS: usize = 4;

/// The common-password list, lowercase, one per line.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common_passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Guards new passwords (sign-up, change, reset): length in chars (not bytes) `>= min_len` and
/// `<=` [`MAX_PASSWORD_CHARS`]; not in the common list (case-insensitive, after trimming); does
/// not contain the email's local part (case-insensitive, only if the local part has at least 4
/// chars). Checks run in that order and the first failure is returned.
pub fn check_password_policy(
    password: &SecretString,
    min_len: usize,
    email: &str,
) -> Result<(), PasswordPolicyError> {
    let password = password.expose_secret();
    let chars = password.chars().count();
    if chars < min_len {
        return Err(PasswordPolicyError::TooShort { min: min_len });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooLong {
            max: MAX_PASSWORD_CHARS,
        });
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS.contains(lowered.trim()) {
        return Err(PasswordPolicyError::Common);
    }
    let local_part = email
        .rsplit_once('@')
        .map_or(email, |(local, _)| local)
        .trim()
        .to_lowercase();
    if local_part.chars().count() >= MIN_EMAIL_LOCAL_PART_CHARS && lowered.contains(&local_part) {
        return Err(PasswordPolicyError::ContainsEmail);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    fn owasp() -> Passwords {
        Passwords::new(PasswordParams::OWASP_MINIMUM).unwrap()
    }

    // --- passwords ------------------------------------------------------------------------

    #[test]
    fn hashing_then_verifying_the_same_password_succeeds() {
        let passwords = owasp();
        let phc = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(
            passwords
                .verify(&secret("violet-tractor-harbor-29"), &phc)
                .unwrap()
        );
    }

    #[test]
    fn verifying_a_wrong_password_returns_false_rather_than_an_error() {
        let passwords = owasp();
        let phc = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(
            !passwords
                .verify(&secret("violet-tractor-harbor-30"), &phc)
                .unwrap()
        );
        assert!(!passwords.verify(&secret(""), &phc).unwrap());
    }

    #[test]
    fn verifying_against_an_unparseable_stored_hash_is_an_error() {
        let passwords = owasp();
        for stored in [
            "",
            "not a hash",
            "$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$argon2id$v=19$m=19456,t=2,p=1$$",
        ] {
            assert_eq!(
                passwords.verify(&secret("pw"), stored),
                Err(CryptoError::MalformedHash),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_hash_with_the_owasp_params_is_an_argon2id_phc_string_showing_m19456_t2_p1() {
        let phc = owasp().hash(&secret("violet-tractor-harbor-29")).unwrap();
        let rest = phc.strip_prefix("$argon2id$v=19$m=19456,t=2,p=1$").unwrap();
        let (salt, hash) = rest.split_once('$').unwrap();
        assert_eq!(salt.len(), 22, "16-byte salt in unpadded B64");
        assert_eq!(hash.len(), 43, "32-byte hash in unpadded B64");
    }

    #[test]
    fn two_hashes_of_the_same_password_differ_by_their_random_salt() {
        let passwords = owasp();
        let first = passwords.hash(&secret("same")).unwrap();
        let second = passwords.hash(&secret("same")).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn the_dummy_verification_returns_false_and_does_a_real_verifications_work() {
        let passwords = owasp();
        assert!(!passwords.verify_dummy(&secret("guess-1234")));
        // Same work as a real verify: a hash of the current params, verified the same way.
        assert!(!passwords.needs_rehash(&passwords.dummy_phc));
        let real = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        let prefix = |phc: &str| phc.splitn(5, '$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(prefix(&passwords.dummy_phc), prefix(&real));
    }

    #[test]
    fn the_dummy_verification_is_false_even_for_an_empty_password() {
        assert!(!owasp().verify_dummy(&secret("")));
    }

    #[test]
    fn a_hash_made_under_other_params_still_verifies_and_needs_rehash() {
        let cheap = Passwords::new(PasswordParams {
            memory_kib: 8_192,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        let old = cheap.hash(&secret("violet-tractor-harbor-29")).unwrap();
        let current = owasp();
        assert!(
            current
                .verify(&secret("violet-tractor-harbor-29"), &old)
                .unwrap()
        );
        assert!(current.needs_rehash(&old));
        let fresh = current.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(!current.needs_rehash(&fresh));
        assert!(cheap.needs_rehash(&fresh));
    }

    #[test]
    fn an_unparseable_or_non_argon2id_hash_needs_rehash() {
        let passwords = owasp();
        let argon2i = Argon2::new(
            Argon2Algorithm::Argon2i,
            Version::V0x13,
            Params::new(19_456, 2, 1, None).unwrap(),
        );
        let argon2i_phc: PasswordHash = argon2i
            .hash_password_with_salt(b"pw", b"0123456789abcdef")
            .unwrap();
        assert!(passwords.needs_rehash(&argon2i_phc.to_string()));
        assert!(passwords.needs_rehash("garbage"));
    }

    #[test]
    fn params_argon2_cannot_run_are_refused() {
        for (memory_kib, iterations, parallelism) in [(0, 2, 1), (19_456, 0, 1), (19_456, 2, 0)] {
            let result = Passwords::new(PasswordParams {
                memory_kib,
                iterations,
                parallelism,
            });
            assert!(matches!(result, Err(CryptoError::InvalidPasswordParams(_))));
        }
    }

    // --- password policy -----------------------------------------------------------------

    const EMAIL: &str = "alice.smith@example.com";

    #[test]
    fn passwords_on_the_common_list_are_refused_whatever_their_case_and_padding() {
        for password in [
            "Password123",
            "  QWERTYUIOP12 ",
            "qwertyuiop",
            "iloveyou123",
            "Passw0rd",
            "1234567890",
            "password123!",
            "Welcome123",
        ] {
            assert_eq!(
                check_password_policy(&secret(password), 8, EMAIL),
                Err(PasswordPolicyError::Common),
                "{password}"
            );
        }
    }

    #[test]
    fn the_common_list_has_about_300_lowercase_trimmed_unique_entries() {
        let lines: Vec<&str> = include_str!("common_passwords.txt").lines().collect();
        assert!((250..=400).contains(&lines.len()), "{}", lines.len());
        assert_eq!(COMMON_PASSWORDS.len(), lines.len(), "entries are unique");
        for line in lines {
            assert_eq!(line, line.trim().to_lowercase(), "{line:?}");
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn a_strong_passphrase_is_accepted() {
        for password in [
            "violet-tractor-harbor-29",
            "Zq7!mW2#pL9$",
            "correct horse battery staple",
        ] {
            assert_eq!(
                check_password_policy(&secret(password), 12, EMAIL),
                Ok(()),
                "{password}"
            );
        }
    }

    #[test]
    fn password_length_is_counted_in_characters_not_bytes() {
        let eleven = "é".repeat(11);
        assert_eq!(eleven.len(), 22);
        assert_eq!(
            check_password_policy(&secret(&eleven), 12, EMAIL),
            Err(PasswordPolicyError::TooShort { min: 12 })
        );
        assert_eq!(
            check_password_policy(&secret(&"é".repeat(12)), 12, EMAIL),
            Ok(())
        );
    }

    #[test]
    fn a_password_over_1024_characters_is_too_long_and_1024_is_fine() {
        assert_eq!(
            check_password_policy(&secret(&"xy".repeat(512)), 12, EMAIL),
            Ok(())
        );
        let too_long = check_password_policy(&secret(&"é".repeat(1025)), 12, EMAIL);
        assert_eq!(too_long, Err(PasswordPolicyError::TooLong { max: 1024 }));
    }

    #[test]
    fn a_password_containing_the_email_local_part_is_refused_case_insensitively() {
        assert_eq!(
            check_password_policy(&secret("my-ALICE.Smith-2024"), 12, EMAIL),
            Err(PasswordPolicyError::ContainsEmail)
        );
        assert_eq!(
            check_password_policy(&secret("alice.smith-rocks"), 12, "alice.smith@x.io"),
            Err(PasswordPolicyError::ContainsEmail)
        );
    }

    #[test]
    fn an_email_local_part_shorter_than_four_characters_is_not_searched_for() {
        assert_eq!(
            check_password_policy(&secret("bobsled-champion-77"), 12, "bob@example.com"),
            Ok(())
        );
        assert_eq!(
            check_password_policy(&secret("bobsled-champion-77"), 12, "bobs@example.com"),
            Err(PasswordPolicyError::ContainsEmail)
        );
    }

    #[test]
    fn policy_errors_have_stable_codes_and_messages_without_the_password() {
        let password = "Password123";
        let err = check_password_policy(&secret(password), 8, EMAIL).unwrap_err();
        assert_eq!(err.code(), "password_too_common");
        assert!(!err.to_string().contains(password));
        assert!(!format!("{err:?}").contains(password));
        assert_eq!(
            PasswordPolicyError::TooShort { min: 12 }.code(),
            "password_too_short"
        );
        assert_eq!(
            PasswordPolicyError::TooShort { min: 12 }.to_string(),
            "password must be at least 12 characters long"
        );
        assert_eq!(
            PasswordPolicyError::TooLong { max: 1024 }.code(),
            "password_too_long"
        );
        assert_eq!(
            PasswordPolicyError::ContainsEmail.code(),
            "password_contains_email"
        );
    }

    proptest! {
        #[test]
        fn the_policy_never_panics_and_rejects_only_with_a_known_code(
            password in "\\PC{0,40}", email in "\\PC{0,20}@?\\PC{0,10}", min_len in 0usize..20
        ) {
            if let Err(err) = check_password_policy(&secret(&password), min_len, &email) {
                prop_assert!(err.code().starts_with("password_"));
            }
        }
    }
}
