//! Domain newtypes that validate on `parse`: once a value has one of these types it is known good.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a raw value was refused; `field` names the input it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    /// The name of the input (path segment, header, query parameter or body field).
    pub field: &'static str,
    /// What was expected, in words a client developer can act on.
    pub message: String,
}

impl ParseError {
    /// Builds a parse error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses the canonical form — 36 characters, lower-case hexadecimal, hyphenated — and
            /// nothing else (no upper case, braces, `urn:uuid:` or hyphen-less forms): one id has
            /// one spelling, in URLs, tokens and logs alike.
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                Uuid::try_parse(raw)
                    .ok()
                    .filter(|u| u.hyphenated().to_string() == raw)
                    .map(Self)
                    .ok_or_else(|| ParseError::new($field, "expected a lower-case hyphenated UUID such as 6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A workspace's id.
    WorkspaceId, "workspace_id"
);
uuid_id!(
    /// A user's id, taken from a verified token's `sub` claim.
    UserId, "sub"
);
uuid_id!(
    /// A tenant's id: the customer organisation that owns workspaces and users.
    TenantId, "tenant_id"
);
uuid_id!(
    /// A connection row's id.
    ConnectionId, "connection_id"
);

/// A third-party provider Harbor can connect a workspace to.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// QuickBooks Online: the connection activation depends on.
    Qbo,
    /// Google Gmail.
    Gmail,
    /// Slack.
    Slack,
    /// Box.
    Box,
}

impl Provider {
    /// Every provider, in a stable order.
    pub const ALL: [Provider; 4] = [
        Provider::Qbo,
        Provider::Gmail,
        Provider::Slack,
        Provider::Box,
    ];

    /// The provider's name as stored and as written in URLs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Qbo => "qbo",
            Provider::Gmail => "gmail",
            Provider::Slack => "slack",
            Provider::Box => "box",
        }
    }

    /// Parses a provider name; unknown names are refused with the list of known ones.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| ParseError::new("provider", "expected one of qbo, gmail, slack, box"))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A member's role in a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns the workspace.
    Owner,
    /// Administers the workspace's connections.
    Admin,
    /// Uses the workspace.
    Member,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses the stored role name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(ParseError::new("role", "expected owner, admin or member")),
        }
    }

    /// Whether the role may run admin operations (disconnect, revoke).
    pub fn can_administer(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// The stored names of the roles a request lets through: every role, or with `admin` those
    /// that may administer. The statements that take the workspace lock only for such a caller
    /// bind it as their role filter.
    pub fn names_let_through(admin: bool) -> &'static [&'static str] {
        static ANY: std::sync::LazyLock<Vec<&'static str>> =
            std::sync::LazyLock::new(|| Role::ALL.iter().map(|r| r.as_str()).collect());
        static ADMINISTERING: std::sync::LazyLock<Vec<&'static str>> =
            std::sync::LazyLock::new(|| {
                Role::ALL
                    .iter()
                    .filter(|r| r.can_administer())
                    .map(|r| r.as_str())
                    .collect()
            });
        if admin {
            &ADMINISTERING
        } else {
            &ANY
        }
    }
}

/// The harness's tag for one request, honoured only when sync points are enabled. It becomes the
/// request's PostgreSQL `application_name` (`harbor:<actor>`), so the harness can find the request's
/// backend in `pg_stat_activity` and `pg_locks`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// The header that carries the tag.
    pub const HEADER: &'static str = "x-harbor-actor";

    /// Accepts 1 to 32 characters of `[A-Za-z0-9_-]`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                Self::HEADER,
                "expected 1 to 32 characters of A-Z, a-z, 0-9, _ or -",
            ))
        }
    }

    /// The tag itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of every tagged transaction's `application_name`.
    pub const APPLICATION_PREFIX: &'static str = "harbor:";

    /// The `application_name` a tagged transaction carries.
    pub fn application_name(&self) -> String {
        format!("{}{}", Self::APPLICATION_PREFIX, self.0)
    }

    /// The actor tag inside a tagged transaction's `application_name`, if it is one.
    pub fn from_application_name(application_name: &str) -> Option<&str> {
        application_name.strip_prefix(Self::APPLICATION_PREFIX)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_uuids() {
        assert!(WorkspaceId::parse("6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11").is_ok());
        let err = WorkspaceId::parse("42").unwrap_err();
        assert_eq!(err.field, "workspace_id");
        assert!(WorkspaceId::parse("' OR 1=1 --").is_err());
        for other_spelling in [
            "6F1C2A9E-0B1D-4C3E-9A57-2F0D1E8B4C11",
            "6f1c2a9e0b1d4c3e9a572f0d1e8b4c11",
            "{6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11}",
            "urn:uuid:6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11",
        ] {
            assert!(
                WorkspaceId::parse(other_spelling).is_err(),
                "{other_spelling}"
            );
        }
    }

    #[test]
    fn providers_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(Provider::parse("QBO").unwrap_err().field, "provider");
    }

    #[test]
    fn actor_tags_are_bounded() {
        assert_eq!(Actor::parse("A").unwrap().application_name(), "harbor:A");
        assert!(Actor::parse("").is_err());
        assert!(Actor::parse("a b").is_err());
        assert!(Actor::parse(&"x".repeat(33)).is_err());
    }
}
