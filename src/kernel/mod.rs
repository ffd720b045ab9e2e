//! The kernel: what every module shares about tenancy, and no domain module owns. Partner,
//! user and API-key ids, roles and scopes, the authenticated [`Principal`] of a request, and
//! the shape of an email address. It depends only on `platform`; auth fills a `Principal` in,
//! every other module reads one.

use std::fmt;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{Ready, ready};

use crate::platform::error::ApiError;
use crate::platform::ids::define_id;

define_id!(PartnerId, PartnerIdKind, "ptn", "partner");
define_id!(UserId, UserIdKind, "usr", "user");
define_id!(ApiKeyId, ApiKeyIdKind, "key", "API key");

/// What a user is. API keys act with the partner's authority, narrowed by their scopes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An operator of the platform; belongs to no partner; created only by the CLI.
    PlatformAdmin,
    /// Manages a partner: users, API keys, and everything the partner owns.
    PartnerAdmin,
    /// Reads a partner's data; writes nothing.
    PartnerDeveloper,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::PartnerAdmin => "partner_admin",
            Self::PartnerDeveloper => "partner_developer",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "platform_admin" => Some(Self::PlatformAdmin),
            "partner_admin" => Some(Self::PartnerAdmin),
            "partner_developer" => Some(Self::PartnerDeveloper),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reading or changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Seeing a card's full number and CVC (`cards:reveal`): never implied by `write`, only
    /// granted by name to an API key, or held by a partner's admins.
    Reveal,
}

impl Access {
    /// The access as a verb, for refusals: "These credentials may not <verb> wallets."
    pub fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "change",
            Self::Reveal => "reveal the card numbers of",
        }
    }
}

/// The areas of the API a scope can grant, one per partner-facing module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// Users and API keys.
    Auth,
    /// Customers and KYC.
    Customers,
    Wallets,
    Payments,
    Cards,
    Ledger,
    /// Webhook endpoints and events.
    Webhooks,
}

impl Area {
    pub const ALL: [Area; 7] = [
        Area::Auth,
        Area::Customers,
        Area::Wallets,
        Area::Payments,
        Area::Cards,
        Area::Ledger,
        Area::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Customers => "customers",
            Self::Wallets => "wallets",
            Self::Payments => "payments",
            Self::Cards => "cards",
            Self::Ledger => "ledger",
            Self::Webhooks => "webhooks",
        }
    }

    /// The area in words, for messages: `wallets`, `webhook endpoints and events`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Auth => "users and API keys",
            Self::Customers => "customers and KYC",
            Self::Wallets => "wallets",
            Self::Payments => "payments",
            Self::Cards => "cards",
            Self::Ledger => "the ledger",
            Self::Webhooks => "webhook endpoints and events",
        }
    }

    fn parse(value: &str) -> Option<Area> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }
}

/// One grant, written `<area>:<read|write>`; write implies read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub area: Area,
    pub access: Access,
}

impl Scope {
    /// Parses `wallets:read`; anything else is `None`.
    pub fn parse(value: &str) -> Option<Scope> {
        let (area, access) = value.split_once(':')?;
        let area = Area::parse(area)?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            "reveal" if area == Area::Cards => Access::Reveal,
            _ => return None,
        };
        Some(Scope { area, access })
    }

    fn grants(self, area: Area, access: Access) -> bool {
        self.area == area
            && match access {
                // Any grant on an area lets its holder read it.
                Access::Read => true,
                Access::Write => self.access == Access::Write,
                Access::Reveal => self.access == Access::Reveal,
            }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = match self.access {
            Access::Read => "read",
            Access::Write => "write",
            Access::Reveal => "reveal",
        };
        write!(f, "{}:{access}", self.area.as_str())
    }
}

/// A key's grants. A key without scopes has the partner's full authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Parses a list, refusing unknown scopes (a typo must not silently grant nothing).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Scopes, String> {
        if values.is_empty() {
            return Err("scopes must not be empty; omit the field for full access".to_owned());
        }
        let mut scopes = Vec::with_capacity(values.len());
        for value in values {
            let value = value.as_ref();
            let scope = Scope::parse(value).ok_or_else(|| {
                format!(
                    "unknown scope `{}`; scopes are <area>:read or <area>:write with area one of {}, \
                     and cards:reveal",
                    value.chars().take(40).collect::<String>(),
                    Area::ALL.map(Area::as_str).join(", ")
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Scopes(scopes))
    }

    pub fn allows(&self, area: Area, access: Access) -> bool {
        self.0.iter().any(|s| s.grants(area, access))
    }

    /// The scopes as stored and shown: `["wallets:read", ...]`.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    ApiKey(ApiKeyId),
}

impl Actor {
    /// `user` / `api_key`, as in the audit log.
    pub fn kind(self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::ApiKey(_) => "api_key",
        }
    }

    pub fn id(self) -> String {
        match self {
            Self::User(id) => id.to_string(),
            Self::ApiKey(id) => id.to_string(),
        }
    }
}

/// The authenticated caller of a request: every handler that needs one takes it as an
/// extractor argument, and every store query filters by its partner.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` only for platform admins.
    pub partner_id: Option<PartnerId>,
    pub actor: Actor,
    pub role: Role,
    /// `None`: no narrowing (users, and keys created without scopes).
    pub scopes: Option<Scopes>,
}

impl Principal {
    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// Whether the role and the scopes both allow `access` to `area`.
    pub fn allows(&self, area: Area, access: Access) -> bool {
        if access == Access::Reveal {
            // Card numbers: a key that names `cards:reveal`, or a partner's admin; never a
            // platform operator, and never by default.
            return match self.actor {
                Actor::ApiKey(_) => self.scopes.as_ref().is_some_and(|s| s.allows(area, access)),
                Actor::User(_) => self.role == Role::PartnerAdmin,
            };
        }
        let role_allows = match self.role {
            Role::PlatformAdmin | Role::PartnerAdmin => true,
            Role::PartnerDeveloper => access == Access::Read,
        };
        role_allows && self.scopes.as_ref().is_none_or(|s| s.allows(area, access))
    }

    /// Whether this principal may see the given partner's objects (its own, or any for
    /// platform admins). Callers answer 404, never 403, when it may not.
    pub fn can_see_partner(&self, partner: PartnerId) -> bool {
        self.is_platform_admin() || self.partner_id == Some(partner)
    }

    /// 403 `forbidden` unless the role and the scopes allow `access` to `area`: the one check
    /// every handler makes before anything else.
    pub fn require(&self, area: Area, access: Access) -> Result<(), ApiError> {
        if self.allows(area, access) {
            Ok(())
        } else {
            let verb = access.verb();
            Err(forbidden(format!(
                "These credentials may not {verb} {}.",
                area.describe()
            )))
        }
    }

    /// As [`Principal::require`], for what only a partner does: the partner this caller acts
    /// for; 403 for platform admins, who act for none.
    pub fn require_partner(&self, area: Area, access: Access) -> Result<PartnerId, ApiError> {
        self.require(area, access)?;
        self.partner_id.ok_or_else(|| {
            forbidden(format!(
                "{} belong to partners; platform admins act for none.",
                capitalised(area.describe())
            ))
        })
    }
}

/// 403 `forbidden`: authenticated, but not allowed this.
pub fn forbidden(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A well-formed email address, as far as a server can tell without sending mail: one `@`,
/// non-empty local part, a dotted domain, no spaces or control characters, at most 254 bytes.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Principal, ApiError>>;

    /// The caller the authentication middleware put on the request; 401 when it carried no
    /// credentials.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Principal>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required: send a valid API key or access token as `Authorization: Bearer <token>`.",
            )
        }))
    }
}

/// What any module may ask about a partner (tenant) without depending on auth, which owns
/// partners and implements this.
#[async_trait::async_trait]
pub trait Partners: Send + Sync {
    /// The partner's contact email (operational alerts go there); 404 when `principal` may not
    /// see the partner.
    async fn contact_email(
        &self,
        principal: &Principal,
        partner: PartnerId,
    ) -> Result<String, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, scopes: Option<&[&str]>) -> Principal {
        Principal {
            partner_id: Some(PartnerId::new()),
            actor: Actor::User(UserId::new()),
            role,
            scopes: scopes.map(|s| Scopes::parse(s).unwrap()),
        }
    }

    #[test]
    fn a_developer_reads_but_never_writes() {
        let p = principal(Role::PartnerDeveloper, None);
        for area in Area::ALL {
            assert!(p.allows(area, Access::Read));
            assert!(!p.allows(area, Access::Write));
        }
    }

    #[test]
    fn a_partner_admin_without_scopes_may_do_everything() {
        let p = principal(Role::PartnerAdmin, None);
        assert!(Area::ALL.iter().all(|a| p.allows(*a, Access::Write)));
    }

    #[test]
    fn scopes_narrow_a_key_and_write_implies_read() {
        let p = principal(
            Role::PartnerAdmin,
            Some(&["wallets:write", "payments:read"]),
        );
        assert!(p.allows(Area::Wallets, Access::Write));
        assert!(p.allows(Area::Wallets, Access::Read));
        assert!(p.allows(Area::Payments, Access::Read));
        assert!(!p.allows(Area::Payments, Access::Write));
        assert!(!p.allows(Area::Auth, Access::Read));
    }

    #[test]
    fn card_numbers_are_revealed_only_to_a_key_that_names_it_or_a_partner_admin() {
        let key = |scopes: Option<&[&str]>| Principal {
            actor: Actor::ApiKey(ApiKeyId::new()),
            ..principal(Role::PartnerAdmin, scopes)
        };
        // A key with the partner's full authority, or cards:write, still may not.
        assert!(!key(None).allows(Area::Cards, Access::Reveal));
        assert!(!key(Some(&["cards:write"])).allows(Area::Cards, Access::Reveal));
        let revealer = key(Some(&["cards:reveal"]));
        assert!(revealer.allows(Area::Cards, Access::Reveal));
        assert!(
            revealer.allows(Area::Cards, Access::Read),
            "reveal implies read"
        );
        assert!(!revealer.allows(Area::Cards, Access::Write));
        // Users: a partner's admin may; a developer or a platform operator may not.
        assert!(principal(Role::PartnerAdmin, None).allows(Area::Cards, Access::Reveal));
        assert!(!principal(Role::PartnerDeveloper, None).allows(Area::Cards, Access::Reveal));
        assert!(!principal(Role::PlatformAdmin, None).allows(Area::Cards, Access::Reveal));
        // Only cards have a reveal scope.
        assert!(Scopes::parse(&["wallets:reveal"]).is_err());
        assert_eq!(
            Scopes::parse(&["cards:reveal"]).unwrap().to_strings(),
            ["cards:reveal"]
        );
    }

    #[test]
    fn unknown_or_malformed_scopes_are_refused() {
        for bad in [
            "wallet:read",
            "wallets:admin",
            "wallets",
            ":read",
            "WALLETS:READ",
        ] {
            assert!(Scopes::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(Scopes::parse::<&str>(&[]).is_err());
        assert_eq!(
            Scopes::parse(&["ledger:read", "ledger:read"])
                .unwrap()
                .to_strings(),
            ["ledger:read"]
        );
    }

    #[test]
    fn a_principal_sees_its_own_partner_and_platform_admins_see_all() {
        let p = principal(Role::PartnerAdmin, None);
        let own = p.partner_id.unwrap();
        assert!(p.can_see_partner(own));
        assert!(!p.can_see_partner(PartnerId::new()));
        let admin = Principal {
            partner_id: None,
            actor: Actor::User(UserId::new()),
            role: Role::PlatformAdmin,
            scopes: None,
        };
        assert!(admin.can_see_partner(own));
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [
            Role::PlatformAdmin,
            Role::PartnerAdmin,
            Role::PartnerDeveloper,
        ] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["a@b.co", "first.last+tag@example.com"] {
            assert!(valid_email(good), "{good}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.co.", "a b@c.co", "a@b@c.co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
