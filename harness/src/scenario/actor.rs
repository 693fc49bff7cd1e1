//! Who acts in a scenario: an actor's tag, the user it acts as and the token it presents. A leaf
//! of the scenario module: the checker, the executor and the typed scenario all name actors.

use crate::identity::TokenKind;

/// A member's role in their tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// `<tenant>.owner`.
    Owner,
    /// `<tenant>.admin`.
    Admin,
    /// `<tenant>.member`.
    Member,
}

/// A user of a declared tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRef {
    /// The tenant's name.
    pub tenant: String,
    /// Owner, admin or member.
    pub role: MemberRole,
}

/// An actor: a tag on requests and SQL sessions, and who they act as.
#[derive(Clone, Debug)]
pub struct ActorSpec {
    /// The tag (a valid [`harbor_service::domain::Actor`]).
    pub name: String,
    /// The user, if any (SQL-only actors have none).
    pub user: Option<UserRef>,
    /// The token presented; `None`: no `Authorization` header.
    pub token: Option<TokenKind>,
    /// What the actor stands for, for the trace.
    pub role: String,
}
