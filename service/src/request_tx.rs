//! [`WorkspaceRequest`]: a member's request to a workspace route, and the one way its handler
//! opens a transaction — scoped to the member's tenant for row-level security and tagged with the
//! request's actor, so the harness can find its backend in the lock tables.
//!
//! The extractor reads nothing from the database: a handler calls [`WorkspaceRequest::begin`]
//! where its transaction starts, and learns there whether the caller is a member (404 if not),
//! with which role and in which tenant. Nothing may wait on Redis or a provider while the
//! workspace lock (taken inside the transaction) is held, so some handlers talk to them between
//! transactions — never before the caller is known to be allowed: authorize asks Redis (its rate
//! limit, its state) only for a caller this replica last read as the workspace's owner or admin
//! ([`WorkspaceRequest::take_administered_tenant`]), or once
//! [`WorkspaceRequest::member_before_transaction`] has read it so; its transaction checks again
//! before it writes, and discards the state when the check fails. Sync opens its token
//! decision's transaction before it calls the provider. Some open a second transaction after the
//! first is committed.
//!
//! A request whose database work is one statement needs no transaction block: it runs the
//! statement alone, entered the same way in the statement itself
//! ([`WorkspaceRequest::fetch_alone`] for a read, [`WorkspaceRequest::write_alone`] for a
//! write: a sync's look at its token and its store), saving the `BEGIN` and the `COMMIT`.
//!
//! Transactions that are not a member's request to a workspace route (the OAuth callback, whose
//! tenant is the caller's and whose workspace comes from the consumed state; the untagged
//! bookkeeping of a seeded flaw) call [`crate::db::begin`] directly, and say why where they do.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sqlx::PgPool;
use std::sync::Arc;

use crate::auth::{Identity, WorkspaceMember};
use crate::context::RequestContext;
use crate::db::{self, Tx};
use crate::domain::{Role, TenantId, UserId, WorkspaceId};
use crate::error::ApiError;
use crate::lifecycle::LockedConnection;
use crate::locks::{self, ActivationReads, LockFor, WorkspaceLock};
use crate::state::AppState;
use crate::syncpoints::SyncHooks;
use crate::user_tenants::UserTenants;

/// The statement that enters a workspace: the tag, the caller's membership held and read, and the
/// transaction scoped to its tenant (`harbor_enter_workspace`, migrations 0011 and 0016 to 0018).
pub const ENTER: &str = "SELECT tenant_id, role FROM harbor_enter_workspace($1, $2, $3)";

/// [`ENTER`] and then the workspace lock (`$4`, `$5`), taken only when the caller's role is one
/// of `$6`. It keeps a generic plan only because the function says it returns one row (migration
/// 0018): costed over the default 1000 rows, the role array of unknown length made every custom
/// plan look cheaper, and PostgreSQL planned it again at every call.
pub const ENTER_AND_LOCK: &str = "SELECT e.tenant_id, e.role, \
    CASE WHEN e.role = ANY($6) THEN pg_advisory_xact_lock($4, $5)::text END IS NOT NULL \
    FROM harbor_enter_workspace($1, $2, $3) AS e";

/// [`ENTER`] and then, for any member, the activation's lock and its two reads
/// (`harbor_lock_for_activation`, migration 0012, on the key `$4`, `$5`): one round trip for what
/// took two. The lock function is called in the projection, so it runs only for a row the entry
/// returned (a caller who is not a member waits for no lock), and only once the entry has run to
/// its end (PL/pgSQL, never inlined): the tag set and the membership held before the lock is
/// asked for. Its reads run after the lock is granted, each with a snapshot of its own; its
/// result is one composite column.
pub const ENTER_AND_LOCK_FOR_ACTIVATION: &str = "SELECT e.tenant_id, e.role, \
    harbor_lock_for_activation($4, $5, $1) FROM harbor_enter_workspace($1, $2, $3) AS e";

/// [`ENTER_AND_LOCK`] and then, once the lock is granted, the workspace's connection to the
/// provider `$7` ([`crate::lifecycle::CONNECTION_COLUMNS`]) with its row lock: one round trip for
/// what took two. The lock is asked for in a lateral subquery of the entry's row (run only once the
/// function has returned it, for a role of `$6`; `OFFSET 0` keeps the planner from folding it into
/// the read), and the row's read names that subquery's column, so it is the inner side of both
/// and runs after the lock is granted: the workspace lock before the row lock, the order every
/// path takes them in. A caller refused the lock reads no row and locks none. The row's columns
/// are null when the workspace has no connection to the provider.
///
/// The statement's snapshot is taken before the lock is waited for, yet what it reads of the row
/// is the newest committed version: `FOR UPDATE` under READ COMMITTED locks the latest version of
/// a row changed meanwhile (by the lock's previous holder, say) and answers it, re-checked. That
/// holds because the row exists before the statement does: connections are made with their
/// workspace (a trigger) and never deleted, so none can appear during the wait unseen. It is also
/// why a seeded flaw without the row lock (`no-row-lock`) takes the locks in steps: without `FOR
/// UPDATE` this read would answer the row as it was before the wait.
pub static ENTER_LOCK_AND_ROW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT e.tenant_id, e.role, l.taken IS NOT NULL, c.* FROM harbor_enter_workspace($1, $2, $3) AS e \
         LEFT JOIN LATERAL (SELECT pg_advisory_xact_lock($4, $5)::text AS taken \
           WHERE e.role = ANY($6) OFFSET 0) AS l ON true \
         LEFT JOIN LATERAL (SELECT {} FROM connections \
           WHERE workspace_id = $1 AND provider = $7 AND tenant_id = e.tenant_id \
             AND l.taken IS NOT NULL FOR UPDATE) AS c ON true",
        crate::lifecycle::CONNECTION_COLUMNS
    )
});

/// [`ENTER_AND_LOCK_FOR_ACTIVATION`] and then, when its reads let the activation go on (not
/// activated yet, entitled), the QuickBooks connection with its row lock: one round trip for
/// what took two. The lock function is called in a lateral subquery of the entry's row (`OFFSET
/// 0`: never folded into the join), so it runs only for a member and once the entry has
/// returned; the row's read names its columns, so it runs once the lock is granted and its reads
/// made: the workspace lock before the row lock, as on every path. The row's columns are null
/// when it was not read (or there is none).
pub static ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT e.tenant_id, e.role, a.activated_at, a.entitled, c.* \
             FROM harbor_enter_workspace($1, $2, $3) AS e \
             CROSS JOIN LATERAL (SELECT r.activated_at, r.entitled \
               FROM harbor_lock_for_activation($4, $5, $1) AS r \
               WHERE e.tenant_id IS NOT NULL OFFSET 0) AS a \
             LEFT JOIN LATERAL (SELECT {} FROM connections \
               WHERE workspace_id = $1 AND provider = 'qbo' AND tenant_id = e.tenant_id \
                 AND a.activated_at IS NULL AND a.entitled FOR UPDATE) AS c ON true",
            crate::lifecycle::CONNECTION_COLUMNS
        )
    });

/// [`ENTER`] and, in the same statement, the workspace's connection to the provider `$4`
/// ([`crate::lifecycle::CONNECTION_COLUMNS`]), for a read that needs no transaction: run alone,
/// the statement is its own, and the membership is held while it runs. The connection's read
/// names the function's row (its tenant) and is kept a subquery (`OFFSET 0`: never folded into
/// the join, where the planner could order the two either way), so the function is the outer
/// side and has returned — the tenant set — before row-level security looks at a row; a read
/// made first would see no tenant and no row.
pub static ENTER_AND_READ_CONNECTION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT e.tenant_id, e.role, c.* FROM harbor_enter_workspace($1, $2, $3) AS e \
         CROSS JOIN LATERAL (SELECT {} FROM connections \
           WHERE workspace_id = $1 AND provider = $4 AND tenant_id = e.tenant_id OFFSET 0) AS c",
            crate::lifecycle::CONNECTION_COLUMNS
        )
    });

/// A verified caller's request to a workspace route: the request's context, the caller, the
/// workspace from the path, and the pool its transactions come from. Whether the caller is a
/// member — and so the tenant and the role — is learnt inside the request's transaction
/// ([`WorkspaceRequest::begin`]): one read that is both the check and the scope, not a read
/// from the pool followed by the same read again inside the transaction.
#[derive(Clone, Debug)]
pub struct WorkspaceRequest {
    /// The request id and the harness's actor tag.
    pub ctx: RequestContext,
    /// The caller, from the verified token.
    pub caller: UserId,
    /// The workspace from the path.
    pub workspace_id: WorkspaceId,
    pool: PgPool,
    /// Told the caller's tenant by every membership read here (the callback reads it there).
    user_tenants: Arc<UserTenants>,
}

impl WorkspaceRequest {
    /// Begins a transaction of this request. Its first statement tags the transaction with the
    /// request's actor, holds the caller's membership of the workspace (a shared advisory lock
    /// that every change to a membership waits for), reads it, and scopes the transaction to the
    /// membership's tenant for row-level security (`harbor_enter_workspace`, migrations 0011,
    /// 0016 and 0017), so a removal that committed before answers 404 and one that comes later
    /// waits for this transaction. Finish it with [`crate::db::finish`].
    pub async fn begin(&self) -> Result<(Tx, WorkspaceMember), ApiError> {
        let (tx, member, _) = self.begin_needing(false, Entry::Plain).await?;
        Ok((tx, member))
    }

    /// [`WorkspaceRequest::begin`] for an operation that needs the owner or admin role, checked
    /// on the membership the transaction holds: a demotion that committed while the request
    /// waited (for a pooled connection, a lock) is not ignored: 403 `FORBIDDEN`.
    pub async fn begin_as_admin(&self) -> Result<(Tx, WorkspaceMember), ApiError> {
        let (tx, member, _) = self.begin_needing(true, Entry::Plain).await?;
        Ok((tx, member))
    }

    /// [`WorkspaceRequest::begin`] (with `admin`, [`WorkspaceRequest::begin_as_admin`]) that
    /// also takes the workspace lock `lock`, in the same statement: after the membership is held
    /// and read, and only for a caller whose membership and role let the request through — a
    /// caller refused for either waits for no lock and holds none. One round trip fewer for every
    /// request that locks its workspace first thing.
    pub async fn begin_locked(
        &self,
        admin: bool,
        lock: LockFor,
    ) -> Result<(Tx, WorkspaceMember, WorkspaceLock), ApiError> {
        let (tx, member, entered) = self.begin_needing(admin, Entry::Locked(lock)).await?;
        match entered {
            Entered::Lock(taken) => Ok((tx, member, taken)),
            _ => without_its_lock(tx).await,
        }
    }

    /// [`WorkspaceRequest::begin_locked`] that also reads the workspace's connection to
    /// `provider` with its row lock ([`crate::lifecycle::lock_connection`]), in the same
    /// statement ([`ENTER_LOCK_AND_ROW`]): the round trip of the row's read saved for authorize,
    /// disconnect and revoke, which lock their workspace and then their connection's row first
    /// thing (the callback's store and the sync's locked decision take them in steps).
    ///
    /// Between the two locks each such request has a sync point, `point` (its `locked`): there
    /// the harness decides who takes the row next when this request and a writer waiting for the
    /// row are let go together. A request the harness would park there, or one under a seeded
    /// flaw that changes a lock, takes the locks in three steps as before, parking between them
    /// ([`WorkspaceRequest::both_locks_in_the_entry`]). No connection to
    /// `provider`: 404 `NOT_FOUND`, rolled back, as [`crate::lifecycle::lock_connection`] answers.
    pub async fn begin_locked_with_row(
        &self,
        admin: bool,
        lock: LockFor,
        provider: crate::domain::Provider,
        (hooks, point): (Option<&SyncHooks>, &'static str),
    ) -> Result<(Tx, WorkspaceMember, WorkspaceLock, LockedConnection), ApiError> {
        if !self.both_locks_in_the_entry(hooks, point) {
            let (mut tx, member, taken) = self.begin_locked(admin, lock).await?;
            let read = async {
                SyncHooks::reach(hooks, &self.ctx, point).await?;
                Ok(crate::lifecycle::lock_connection(&mut tx, &taken, provider).await?)
            }
            .await;
            return match read {
                Ok(connection) => Ok((tx, member, taken, connection)),
                Err(error) => db::finish(tx, Err(error)).await,
            };
        }
        let (tx, member, entered) = self
            .begin_needing(admin, Entry::LockedWithRow(lock, provider))
            .await?;
        match entered {
            Entered::LockAndRow(taken, Some(connection)) => Ok((tx, member, taken, *connection)),
            Entered::LockAndRow(_, None) => {
                db::finish(tx, Err(crate::lifecycle::LifecycleError::NotFound.into())).await
            }
            _ => without_its_lock(tx).await,
        }
    }

    /// [`WorkspaceRequest::begin`] for an activation: any member's entry takes the workspace
    /// lock and makes the activation's two reads under it in the same statement
    /// ([`ENTER_AND_LOCK_FOR_ACTIVATION`]): one round trip fewer than the entry and the lock's
    /// call one after the other, nothing of the critical section moved (it begins where the lock
    /// is granted, as before).
    ///
    /// The QuickBooks connection's row lock comes in the same statement too
    /// ([`ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW`], [`ActivationRow::Locked`]), unless the
    /// harness would park the request at `point`, the activation's `locked` point between the two
    /// locks, or a seeded flaw changes what the activation reads or locks: the activation then
    /// reads the row itself, after that point ([`ActivationRow::NotRead`]).
    pub async fn begin_for_activation(
        &self,
        (hooks, point): (Option<&SyncHooks>, &'static str),
    ) -> Result<
        (
            Tx,
            WorkspaceMember,
            WorkspaceLock,
            ActivationReads,
            ActivationRow,
        ),
        ApiError,
    > {
        // Under `no-unique-activation` the row is read even for an activation already made.
        let with_row = self.both_locks_in_the_entry(hooks, point)
            && !crate::flaws::active(crate::flaws::Flaw::NoUniqueActivation);
        let (tx, member, entered) = self
            .begin_needing(false, Entry::Activation { with_row })
            .await?;
        match entered {
            Entered::Activation(lock, reads, row) => Ok((tx, member, lock, reads, row)),
            _ => without_its_lock(tx).await,
        }
    }

    /// Whether the request's entry may take the workspace lock and its row's lock in one
    /// statement: not when the harness would park it at `point`, its `locked` point between the
    /// two ([`SyncHooks::would_park`], asked at the entry, where the harness arms its points
    /// before it sends the request), nor under a seeded flaw that changes the membership's check
    /// or the row lock (a split lock namespace needs nothing: the key is [`LockFor::key`]'s
    /// either way).
    fn both_locks_in_the_entry(&self, hooks: Option<&SyncHooks>, point: &'static str) -> bool {
        use crate::flaws::{active, Flaw};
        !(SyncHooks::would_park(hooks, &self.ctx, &[point])
            || active(Flaw::NoMembershipCheck)
            || active(Flaw::NoRowLock))
    }

    /// The caller's membership read from the pool, outside any transaction, for a handler that
    /// needs the tenant or the role before its transaction (authorize: its state goes to Redis,
    /// bound to the tenant, before the workspace lock is taken). It proves nothing about the
    /// membership when a later transaction commits: that transaction checks again.
    pub async fn member_before_transaction(&self) -> Result<WorkspaceMember, ApiError> {
        if crate::flaws::active(crate::flaws::Flaw::NoMembershipCheck) {
            return self.any_workspace_member().await;
        }
        let (tenant_id, role) = crate::auth::membership(&self.pool, self.workspace_id, self.caller)
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(self.member(tenant_id, role))
    }

    /// The caller's membership and the workspace's connection to `provider`, read in one
    /// statement outside any transaction and under no lock but the membership's own while it
    /// runs: a sync's optimistic look at its token, which proves nothing once the statement has
    /// ended (the sync's store checks the grant again). `None` when the caller is not a member or
    /// the workspace has no such connection: the caller then takes the locked path, which says
    /// which.
    pub async fn read_connection_unlocked(
        &self,
        provider: crate::domain::Provider,
    ) -> Result<Option<(WorkspaceMember, crate::lifecycle::LockedConnection)>, ApiError> {
        let entered = self
            .fetch_alone(&ENTER_AND_READ_CONNECTION, |query| {
                query.bind(provider.as_str())
            })
            .await?;
        let Some((member, row)) = entered else {
            return Ok(None);
        };
        let connection = crate::lifecycle::connection_from_row(&row, 2, provider)?;
        Ok(Some((member, connection)))
    }

    /// Runs the read `statement` alone — no transaction around it but its own, no `BEGIN` and
    /// no `COMMIT` — with the request's workspace, caller and tag bound as its `$1`, `$2` and
    /// `$3` (for its `harbor_enter_workspace` call, the outer side of whatever it reads: the tag
    /// set and the membership held and read before row-level security looks at a row) and the
    /// rest by `bind`. Its first two columns are the entry's tenant and role; `None` when it
    /// answers no row (the caller is not a member). The membership is held while it runs.
    ///
    /// Sent on an idle connection untested, and sent again on another if that one turns out
    /// dead ([`db::retry_lost`]), as a `BEGIN` is: a read repeats harmlessly. The only wait it
    /// may meet, the membership's key while a change of it commits, ends at the session's
    /// `lock_timeout` (5 s by default: 503 `LOCK_TIMEOUT`), usually before the attempt's bound —
    /// the pool's acquire timeout, 10 s by default, counted from the wait for a connection. With
    /// the lock timeout off or not below what is left of that bound, the wait ends there
    /// instead, as 503 `DATABASE_UNAVAILABLE` (a timed-out attempt is not sent again). Testing
    /// the connection first cost a round trip before it (db-cost: sync 8.1 → 7.1).
    pub async fn fetch_alone<'q, F>(
        &'q self,
        statement: &'q str,
        bind: F,
    ) -> Result<Option<(WorkspaceMember, sqlx::postgres::PgRow)>, ApiError>
    where
        F: Fn(EnteredQuery<'q>) -> EnteredQuery<'q>,
    {
        self.run_alone(statement, bind, false).await
    }

    /// [`WorkspaceRequest::fetch_alone`] for a statement that writes and may wait for row locks
    /// (a sync's store): sent again on another connection only when its own turns out dead
    /// ([`db::retry_lost_waiting`]), so it must be one that may run twice — a repeat after a
    /// reply lost with its commit writes what the first wrote. Its attempts are not cut at the
    /// pool's acquire timeout: each lock wait ends at `lock_timeout` (with the lock timeout off,
    /// only the request's timeout ends the wait, and the statement then commits once its locks
    /// come, after the request has answered 503).
    ///
    /// Whatever ends the request while the statement runs (the request's timeout, the client
    /// gone) does not end the statement: sqlx lets it finish before it reuses the connection, and
    /// it commits, as a transaction's `COMMIT` sent before the end would have. Nor does an
    /// answer other than 200 after a repeat say the first sending wrote nothing: its reply may
    /// have been the one lost (a member removed between the two is answered 404, the documents
    /// the first stored while they were a member kept).
    pub async fn write_alone<'q, F>(
        &'q self,
        statement: &'q str,
        bind: F,
    ) -> Result<Option<(WorkspaceMember, sqlx::postgres::PgRow)>, ApiError>
    where
        F: Fn(EnteredQuery<'q>) -> EnteredQuery<'q>,
    {
        self.run_alone(statement, bind, true).await
    }

    /// [`WorkspaceRequest::fetch_alone`] (`waiting` false) and [`WorkspaceRequest::write_alone`]
    /// (true): the statement sent, and the member it entered as (its first two columns) with its
    /// row.
    async fn run_alone<'q, F>(
        &'q self,
        statement: &'q str,
        bind: F,
        waiting: bool,
    ) -> Result<Option<(WorkspaceMember, sqlx::postgres::PgRow)>, ApiError>
    where
        F: Fn(EnteredQuery<'q>) -> EnteredQuery<'q>,
    {
        use sqlx::Row;
        let send = || bind(self.entered_query(statement)).fetch_optional(&self.pool);
        let row = if waiting {
            db::retry_lost_waiting(&self.pool, send).await
        } else {
            db::retry_lost(&self.pool, send).await
        };
        let row = row.map_err(db::DbError::from)?;
        let Some(row) = row else { return Ok(None) };
        let tenant_id: TenantId = row.try_get(0).map_err(db::DbError::from)?;
        let role: String = row.try_get(1).map_err(db::DbError::from)?;
        let role = Role::parse(&role).map_err(ApiError::stored)?;
        Ok(Some((self.member(tenant_id, role), row)))
    }

    /// `statement` with the request's workspace, caller and tag bound as `$1`, `$2` and `$3`,
    /// the parameters of its entry: for [`WorkspaceRequest::fetch_alone`] and
    /// [`WorkspaceRequest::write_alone`], and for a seeded
    /// flaw's variant run inside the flaw's own transaction.
    pub fn entered_query<'q>(&self, statement: &'q str) -> EnteredQuery<'q> {
        sqlx::query(statement)
            .bind(self.workspace_id)
            .bind(self.caller)
            .bind(db::application_name(self.ctx.actor.as_ref()))
    }

    /// The workspace's tenant if this replica last read the caller as its owner or admin,
    /// without reading anything, and taken out of the replica's memory: a transaction begun
    /// afterwards that finds the caller an owner or admin puts it back. It proves nothing about
    /// the membership or role now: that transaction checks both.
    pub fn take_administered_tenant(&self) -> Option<TenantId> {
        self.user_tenants
            .take_administered(self.caller, self.workspace_id)
    }

    async fn begin_needing(
        &self,
        admin: bool,
        entry: Entry,
    ) -> Result<(Tx, WorkspaceMember, Entered), ApiError> {
        if crate::flaws::active(crate::flaws::Flaw::NoMembershipCheck) {
            let member = self.any_workspace_member().await?;
            let mut tx = db::begin(&self.pool, self.ctx.actor.as_ref(), member.tenant_id).await?;
            let taken = match entry {
                Entry::Locked(lock) => match lock.take(&mut tx, self.workspace_id).await {
                    Ok(taken) => Entered::Lock(taken),
                    Err(e) => return db::finish(tx, Err(e.into())).await,
                },
                // No entry statement to make the call in: the lock and the reads on their own.
                Entry::Activation { .. } => {
                    match locks::lock_workspace_for_activation(&mut tx, self.workspace_id).await {
                        Ok((lock, reads)) => {
                            Entered::Activation(lock, reads, ActivationRow::NotRead)
                        }
                        Err(e) => return db::finish(tx, Err(e.into())).await,
                    }
                }
                Entry::Plain => Entered::Nothing,
                // Taken in steps under this flaw ([`WorkspaceRequest::begin_locked_with_row`]).
                Entry::LockedWithRow(..) => return without_its_lock(tx).await,
            };
            return Ok((tx, member, taken));
        }
        // A bare `BEGIN` (untagged, scoped to no tenant: row-level security shows it nothing),
        // and at once the statement that tags it, holds the membership and sets the tenant.
        // Nothing may be awaited between the two: until that call no lock table names this
        // transaction, and scenarios conclude from a tag's absence that no transaction of the
        // request is open (`HRD-AUTHORIZE-NO-TRANSACTION-ON-REDIS`).
        let mut tx = db::retry_lost(&self.pool, || self.pool.begin())
            .await
            .map_err(db::DbError::from)?;
        let entered = self.enter(&mut tx, admin, entry).await;
        let mut taken = Entered::Nothing;
        let member = match entered {
            Ok(Some((tenant_id, role, entered))) => match Role::parse(&role) {
                Ok(role) => {
                    taken = entered;
                    Ok(self.member(tenant_id, role))
                }
                Err(e) => Err(ApiError::stored(e)),
            },
            Ok(None) => Err(ApiError::NotFound),
            Err(e) => Err(e),
        };
        let member = member.and_then(|member| {
            if admin && !member.role.can_administer() {
                Err(ApiError::Forbidden(
                    "this operation needs the owner or admin role",
                ))
            } else {
                Ok(member)
            }
        });
        match member {
            Ok(member) => Ok((tx, member, taken)),
            Err(error) => db::finish(tx, Err(error)).await,
        }
    }

    /// The statement that enters the workspace: `harbor_enter_workspace` (the tag, the
    /// membership held and read, the tenant), and with [`Entry::Locked`] the workspace lock after
    /// it — taken only when the caller's role lets the request through (every role, or with
    /// `admin` those that may administer), and said so in the row's third column; with
    /// [`Entry::Activation`], the activation's lock and reads for any member. The function runs to
    /// completion before its rows are projected (PL/pgSQL, `SECURITY DEFINER`: never inlined),
    /// so the lock is asked for only once the tag is set and the membership held.
    async fn enter(
        &self,
        tx: &mut Tx,
        admin: bool,
        entry: Entry,
    ) -> Result<Option<(TenantId, String, Entered)>, ApiError> {
        let tag = db::application_name(self.ctx.actor.as_ref());
        // Without a lock, the statement without its clause. One text for both, with a null key
        // and no role allowed, was planned again at every call before migration 0018 (activation,
        // alternated: 8 % fewer requests a second on one hot workspace); two texts leave each
        // plan to be what it looks like, whatever PostgreSQL's costing does.
        let workspace_id = self.workspace_id;
        match entry {
            Entry::Plain => {
                let entered: Option<(TenantId, String)> = sqlx::query_as(ENTER)
                    .bind(workspace_id)
                    .bind(self.caller)
                    .bind(tag)
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(entered.map(|(tenant, role)| (tenant, role, Entered::Nothing)))
            }
            Entry::Locked(lock) => {
                let key = lock.key(workspace_id);
                let entered: Option<(TenantId, String, bool)> = sqlx::query_as(ENTER_AND_LOCK)
                    .bind(workspace_id)
                    .bind(self.caller)
                    .bind(tag)
                    .bind(key.classid)
                    .bind(key.objid)
                    .bind(Role::names_let_through(admin))
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(entered.map(|(tenant, role, locked)| {
                    let taken = if locked {
                        Entered::Lock(lock.taken_by_statement(workspace_id))
                    } else {
                        Entered::Nothing
                    };
                    (tenant, role, taken)
                }))
            }
            Entry::LockedWithRow(lock, provider) => {
                use sqlx::Row;
                let key = lock.key(workspace_id);
                let row = sqlx::query(&ENTER_LOCK_AND_ROW)
                    .bind(workspace_id)
                    .bind(self.caller)
                    .bind(tag)
                    .bind(key.classid)
                    .bind(key.objid)
                    .bind(Role::names_let_through(admin))
                    .bind(provider.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let tenant: TenantId = row.try_get(0)?;
                let role: String = row.try_get(1)?;
                let locked: bool = row.try_get(2)?;
                if !locked {
                    return Ok(Some((tenant, role, Entered::Nothing)));
                }
                let connection = crate::lifecycle::connection_if_read(&row, 3, provider)?;
                let taken = lock.taken_by_statement(workspace_id);
                Ok(Some((
                    tenant,
                    role,
                    Entered::LockAndRow(taken, connection.map(Box::new)),
                )))
            }
            Entry::Activation { with_row: true } => {
                use sqlx::Row;
                let key = LockFor::Workspace.key(workspace_id);
                let row = sqlx::query(&ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW)
                    .bind(workspace_id)
                    .bind(self.caller)
                    .bind(tag)
                    .bind(key.classid)
                    .bind(key.objid)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let tenant: TenantId = row.try_get(0)?;
                let role: String = row.try_get(1)?;
                let reads = ActivationReads {
                    activated_at: row.try_get(2)?,
                    entitled: row.try_get(3)?,
                };
                let qbo =
                    crate::lifecycle::connection_if_read(&row, 4, crate::domain::Provider::Qbo)?
                        .map(Box::new);
                let lock = LockFor::Workspace.taken_by_statement(workspace_id);
                let entered = Entered::Activation(lock, reads, ActivationRow::Locked(qbo));
                Ok(Some((tenant, role, entered)))
            }
            Entry::Activation { with_row: false } => {
                let key = LockFor::Workspace.key(workspace_id);
                type Reads = (Option<chrono::DateTime<chrono::Utc>>, Option<bool>);
                let entered: Option<(TenantId, String, Reads)> =
                    sqlx::query_as(ENTER_AND_LOCK_FOR_ACTIVATION)
                        .bind(workspace_id)
                        .bind(self.caller)
                        .bind(tag)
                        .bind(key.classid)
                        .bind(key.objid)
                        .fetch_optional(&mut **tx)
                        .await?;
                Ok(entered.map(|(tenant, role, (activated_at, entitled))| {
                    let lock = LockFor::Workspace.taken_by_statement(workspace_id);
                    let reads = ActivationReads {
                        activated_at,
                        entitled,
                    };
                    (
                        tenant,
                        role,
                        Entered::Activation(lock, reads, ActivationRow::NotRead),
                    )
                }))
            }
        }
    }

    /// Seeded flaw `no-membership-check`: the v1 "fail-open" posture of the audit's finding
    /// 7.2. Any caller is taken for the workspace's owner; row-level security still scopes the
    /// request to the caller's own tenant.
    async fn any_workspace_member(&self) -> Result<WorkspaceMember, ApiError> {
        let tenant = self.user_tenants.tenant_of(&self.pool, self.caller).await?;
        let tenant_id = tenant.ok_or(ApiError::NotFound)?;
        Ok(self.member(tenant_id, Role::Owner))
    }

    fn member(&self, tenant_id: TenantId, role: Role) -> WorkspaceMember {
        // `tenant_id` scopes row-level security for the request. It is the caller's own tenant
        // (the membership's foreign key makes the two equal), never something taken from the URL.
        self.user_tenants
            .remember_membership(self.caller, self.workspace_id, tenant_id, role);
        WorkspaceMember {
            user_id: self.caller,
            workspace_id: self.workspace_id,
            tenant_id,
            role,
        }
    }
}

/// A statement whose first three parameters are bound by [`WorkspaceRequest::entered_query`].
pub type EnteredQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Ends `tx` and answers for an entry that let the caller through without the lock it was asked
/// for: a statement that contradicts itself, not a refusal.
async fn without_its_lock<T>(tx: Tx) -> Result<T, ApiError> {
    let inconsistent = sqlx::Error::Protocol(
        "the entry into the workspace let the caller through without its lock".into(),
    );
    db::finish(tx, Err(ApiError::Database(inconsistent))).await
}

/// What an activation's entry did with the QuickBooks connection's row.
#[derive(Debug)]
pub enum ActivationRow {
    /// Nothing: the activation reads it with its row lock itself, after its `locked` point.
    NotRead,
    /// Read with its row lock in the entry, if the entry's reads let the activation go on (not
    /// activated yet, entitled); `None` when they did not, or there is no such row.
    Locked(Option<Box<LockedConnection>>),
}

/// What a request's first statement takes besides the membership.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// Nothing: [`ENTER`].
    Plain,
    /// The workspace lock on this key, for a role the request lets through: [`ENTER_AND_LOCK`].
    Locked(LockFor),
    /// The activation's lock and reads: [`ENTER_AND_LOCK_FOR_ACTIVATION`], and `with_row` the
    /// QuickBooks row's lock after them ([`ENTER_AND_LOCK_FOR_ACTIVATION_WITH_ROW`]).
    Activation {
        /// Whether the row is read in the entry.
        with_row: bool,
    },
    /// The workspace lock on this key for a role the request lets through, then the connection
    /// to this provider with its row lock: [`ENTER_LOCK_AND_ROW`].
    LockedWithRow(LockFor, crate::domain::Provider),
}

/// What the first statement took.
#[derive(Debug)]
enum Entered {
    /// No lock (none asked for, or the caller's role was refused it).
    Nothing,
    /// The workspace lock.
    Lock(WorkspaceLock),
    /// The activation's lock, what it read under it, and the QuickBooks row if it was read.
    Activation(WorkspaceLock, ActivationReads, ActivationRow),
    /// The workspace lock, and the connection read with its row lock (`None`: no such row).
    LockAndRow(WorkspaceLock, Option<Box<LockedConnection>>),
}

impl FromRequestParts<AppState> for WorkspaceRequest {
    /// Whatever the context's, the identity's or the path's extractor answers, unchanged.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Extension(ctx) = Extension::<RequestContext>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // Authentication first: an anonymous caller learns nothing, not even that an id is malformed.
        let identity = Identity::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let workspace_id = crate::auth::workspace_path(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WorkspaceRequest {
            ctx,
            caller: identity.user_id,
            workspace_id,
            pool: state.db.clone(),
            user_tenants: state.user_tenants.clone(),
        })
    }
}
