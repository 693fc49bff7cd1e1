//! [`UserTenants`]: which tenant each user belongs to, and which workspaces they administer, as
//! this replica has learnt it.
//!
//! The OAuth callback needs its caller's tenant before its first transaction (the tenant's rate
//! limit is charged, and the state's binding checked, before the state is consumed), and it used
//! to read it from the database on every call: one transaction of the three a callback made. A
//! user's row keeps its tenant — migration 0014 refuses an update of `users.tenant_id`, and the
//! memberships' foreign key to `(tenant_id, id)` already refused one for any user with a
//! membership — so what a replica has read stays true while the row lives. Every membership a
//! workspace request reads tells it the caller's tenant too (the foreign key makes the two
//! equal), so a callback whose caller has already made a workspace request to this replica (their
//! authorize, most often) reads nothing.
//!
//! What it may not decide: whether the user still exists or is still a member. It only names the
//! tenant a request is scoped to: the callback's write-ahead transaction, scoped to it, sees the
//! connection row only in that tenant (row-level security) and answers 404 without it or without
//! a membership; the store checks the membership again, in that tenant, with the row locked.
//!
//! Authorize needs the tenant before its transaction too (its state, bound to the tenant, goes to
//! Redis first), and it may charge the tenant's rate limit only for a caller allowed to connect:
//! a plain member refused with 403, or an outsider with 404, must not spend the budget of the
//! tenant's admins. So it relies on a narrower memory: the workspaces a user was last read to
//! administer (owner or admin), with the workspace's tenant. A workspace request's membership
//! read as an owner or admin puts an entry in, one that finds another role takes it out, and
//! authorize takes it out when it relies on it ([`UserTenants::take_administered`]): only a
//! transaction that finds the caller an admin again puts it back. So a caller demoted or removed
//! since spends at most one charge per replica, however many authorizes they send at once.
//! Authorize's transaction checks the membership, the role and the tenant before anything is
//! written to the database, and a refused request's state is discarded.
//!
//! What the trigger cannot stop is a user's row deleted and its id provisioned again in another
//! tenant. So a callback whose state does not bind to the caller on the remembered tenant reads
//! it again ([`UserTenants::read_again`]) before it refuses or audits, and one answered 404
//! forgets it, for the next callback to read. What is still decided on a remembered tenant: the
//! tenant rate-limit bucket charged (and a 429 from it), and the 404 itself. A deleted user still
//! remembered has their own state consumed and answered 404 (401 before consuming where not
//! remembered); nothing reaches the provider either way.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sqlx::PgPool;

use crate::domain::{Role, TenantId, UserId, WorkspaceId};

/// Most users remembered at once; the map is emptied when it is full (as the JWT verifier's is).
const REMEMBERED_LIMIT: usize = 100_000;

/// The tenants of the users this replica has seen, by user, and the workspaces they were last
/// read to administer.
#[derive(Debug, Default)]
pub struct UserTenants {
    known: Mutex<HashMap<UserId, TenantId>>,
    administered: Mutex<HashMap<(UserId, WorkspaceId), TenantId>>,
}

impl UserTenants {
    /// The map; a panic elsewhere while it was held left it whole (every change is one insert,
    /// remove or clear), so a poisoned lock is taken anyway.
    fn known(&self) -> MutexGuard<'_, HashMap<UserId, TenantId>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workspaces users administer, as [`Self::known`] is taken.
    fn administered_map(&self) -> MutexGuard<'_, HashMap<(UserId, WorkspaceId), TenantId>> {
        self.administered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `user` belongs to `tenant` (read from a membership or from the user's row).
    pub fn remember(&self, user: UserId, tenant: TenantId) {
        let mut known = self.known();
        if known.get(&user) == Some(&tenant) {
            return;
        }
        if known.len() >= REMEMBERED_LIMIT && !known.contains_key(&user) {
            known.clear();
        }
        known.insert(user, tenant);
    }

    /// Remembers what a membership read said: the user's tenant, and whether the user
    /// administers the workspace (an owner or admin is remembered, any other role forgotten).
    pub fn remember_membership(
        &self,
        user: UserId,
        workspace: WorkspaceId,
        tenant: TenantId,
        role: Role,
    ) {
        self.remember(user, tenant);
        let mut administered = self.administered_map();
        if role.can_administer() {
            if administered.len() >= REMEMBERED_LIMIT {
                administered.clear();
            }
            administered.insert((user, workspace), tenant);
        } else {
            administered.remove(&(user, workspace));
        }
    }

    /// The workspace's tenant if the user was last read to administer it, taken out: until a
    /// membership read finds the user an admin again, the next caller gets `None`. Reads
    /// nothing, and proves nothing about the membership or role now.
    pub fn take_administered(&self, user: UserId, workspace: WorkspaceId) -> Option<TenantId> {
        self.administered_map().remove(&(user, workspace))
    }

    /// Forgets the user's tenant: the next [`Self::tenant_of`] reads it again.
    pub fn forget(&self, user: UserId) {
        self.known().remove(&user);
    }

    /// The user's tenant read from the database whatever is remembered, and remembered (or
    /// forgotten, when there is no such user any more).
    pub async fn read_again(
        &self,
        pool: &PgPool,
        user: UserId,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        let tenant = Self::look_up(pool, user).await?;
        match tenant {
            Some(tenant) => self.remember(user, tenant),
            None => self.forget(user),
        }
        Ok(tenant)
    }

    async fn look_up(pool: &PgPool, user: UserId) -> Result<Option<TenantId>, sqlx::Error> {
        crate::db::retry_lost(pool, || {
            sqlx::query_scalar("SELECT harbor_user_tenant($1)")
                .bind(user)
                .fetch_one(pool)
        })
        .await
    }

    /// The user's tenant: remembered, or read through the owner's look-up function (row-level
    /// security hides `users` from a session with no tenant yet, migration 0006) and remembered.
    /// `None`: no such user.
    pub async fn tenant_of(
        &self,
        pool: &PgPool,
        user: UserId,
    ) -> Result<Option<TenantId>, sqlx::Error> {
        let remembered = self.known().get(&user).copied();
        if let Some(tenant) = remembered {
            return Ok(Some(tenant));
        }
        let tenant = Self::look_up(pool, user).await?;
        if let Some(tenant) = tenant {
            self.remember(user, tenant);
        }
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_starts_again_and_keeps_the_newest() {
        let tenants = UserTenants::default();
        let tenant = TenantId(uuid::Uuid::new_v4());
        let first = UserId(uuid::Uuid::new_v4());
        tenants.remember(first, tenant);
        for _ in 1..REMEMBERED_LIMIT {
            tenants.remember(UserId(uuid::Uuid::new_v4()), tenant);
        }
        assert_eq!(tenants.known.lock().unwrap().len(), REMEMBERED_LIMIT);
        let newest = UserId(uuid::Uuid::new_v4());
        tenants.remember(newest, tenant);
        let known = tenants.known.lock().unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known.get(&newest), Some(&tenant));
        assert!(!known.contains_key(&first));
    }
}
