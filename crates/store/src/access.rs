//! Persistence of access control: users, sessions, API tokens and the audit log.
//!
//! This module only stores and finds; what a role may see, how passwords are hashed, when a
//! session expires and who may do what is decided in the `access` crate. Secrets never reach
//! the database in the clear: passwords are argon2 PHC strings, session and API tokens are
//! kept as their SHA-256 (hex), so a copy of the catalog opens no session.
//!
//! The audit log is append-only (database triggers refuse UPDATE and DELETE on it) and hash
//! chained (see [`crate::audit`]); [`Catalog::audit_append`] serializes appends on the chain
//! head: `BEGIN IMMEDIATE` in SQLite, `SELECT ... FOR UPDATE` on the head row in PostgreSQL.

use serde::Serialize;
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::types::Json;
use sqlx::QueryBuilder;

use crate::audit::{entry_hash, AuditEntry, ChainBreak, ChainVerifier, NewAudit};
use crate::catalog::{Catalog, PostgresCatalog, SqliteCatalog};
use crate::error::StoreError;

/// A user as stored. `role` is `agent`, `supervisor` or `admin` (checked by the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: String,
    /// The agent id as it appears in recordings (`Entry::agent`).
    pub agent_id: Option<String>,
    pub teams: Vec<String>,
    /// The argon2 PHC string.
    #[serde(skip)]
    pub password_hash: String,
    pub disabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A user to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub agent_id: Option<String>,
    pub teams: Vec<String>,
    pub password_hash: String,
}

/// Changes to a user; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub display_name: Option<String>,
    pub role: Option<String>,
    pub agent_id: Option<Option<String>>,
    pub teams: Option<Vec<String>>,
}

/// A login session, found by the SHA-256 of its cookie token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: String,
    pub user_id: i64,
    /// The synchronizer token that state-changing requests of this session must carry.
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// The absolute end of the session, whatever its activity.
    pub expires_ms: i64,
    pub from_addr: Option<String>,
}

/// An API token as stored. `scopes` are space separated (`read control admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    #[serde(skip)]
    pub token_hash: String,
    pub scopes: String,
    pub created_ms: i64,
    pub created_by: String,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A token to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub token_hash: String,
    pub scopes: String,
    pub created_by: String,
}

/// Which end of the log a listing starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditOrder {
    /// Newest first (for reading).
    #[default]
    NewestFirst,
    /// Oldest first (for export and verification).
    OldestFirst,
}

/// A listing of the audit log; every field set narrows it. Times are half-open
/// (`from_ms` included, `to_ms` excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub order: AuditOrder,
    /// From a previous page's `next`: the listing goes on past this seq.
    pub cursor: Option<i64>,
    /// 1..=[`crate::MAX_LIMIT`]; 0 means [`crate::DEFAULT_LIMIT`].
    pub limit: u32,
}

/// One page of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<i64>,
}

/// The outcome of checking the stored chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Intact: `entries` checked, the head's hash.
    Intact {
        entries: i64,
        head_hash: String,
    },
    Broken(ChainBreak),
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    username: String,
    display_name: String,
    role: String,
    agent_id: Option<String>,
    teams: Json<Vec<String>>,
    password_hash: String,
    disabled: bool,
    created_ms: i64,
    updated_ms: i64,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> UserRecord {
        UserRecord {
            id: r.id,
            username: r.username,
            display_name: r.display_name,
            role: r.role,
            agent_id: r.agent_id,
            teams: r.teams.0,
            password_hash: r.password_hash,
            disabled: r.disabled,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    token_hash: String,
    user_id: i64,
    csrf: String,
    created_ms: i64,
    last_seen_ms: i64,
    expires_ms: i64,
    from_addr: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> SessionRecord {
        SessionRecord {
            token_hash: r.token_hash,
            user_id: r.user_id,
            csrf: r.csrf,
            created_ms: r.created_ms,
            last_seen_ms: r.last_seen_ms,
            expires_ms: r.expires_ms,
            from_addr: r.from_addr,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    token_hash: String,
    scopes: String,
    created_ms: i64,
    created_by: String,
    last_used_ms: Option<i64>,
    revoked_ms: Option<i64>,
}

impl From<TokenRow> for TokenRecord {
    fn from(r: TokenRow) -> TokenRecord {
        TokenRecord {
            id: r.id,
            name: r.name,
            token_hash: r.token_hash,
            scopes: r.scopes,
            created_ms: r.created_ms,
            created_by: r.created_by,
            last_used_ms: r.last_used_ms,
            revoked_ms: r.revoked_ms,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: Option<String>,
    detail: String,
    from_addr: Option<String>,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<AuditEntry, StoreError> {
        let detail = serde_json::from_str(&r.detail).map_err(|e| StoreError::Corrupt {
            contact_id: format!("audit seq {}", r.seq),
            reason: format!("detail is not JSON: {e}"),
        })?;
        Ok(AuditEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail,
            from: r.from_addr,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

macro_rules! user_cols {
    () => {
        "id, username, display_name, role, agent_id, teams, password_hash, disabled, \
         created_ms, updated_ms"
    };
}
macro_rules! session_cols {
    () => {
        "token_hash, user_id, csrf, created_ms, last_seen_ms, expires_ms, from_addr"
    };
}
macro_rules! token_cols {
    () => {
        "id, name, token_hash, scopes, created_ms, created_by, last_used_ms, revoked_ms"
    };
}
macro_rules! audit_cols {
    () => {
        "seq, at_ms, actor, action, target, detail, from_addr, prev_hash, hash"
    };
}

const ADD_USER: &str = "INSERT INTO users (username, display_name, role, agent_id, teams, \
     password_hash, disabled, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, FALSE, \
     $7, $7) RETURNING id";
const USER_BY_NAME: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE username = $1");
const USER_BY_ID: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
const LIST_USERS: &str = concat!("SELECT ", user_cols!(), " FROM users ORDER BY username");
const SET_PASSWORD: &str =
    "UPDATE users SET password_hash = $2, updated_ms = $3 WHERE username = $1 RETURNING id";
const SET_DISABLED: &str =
    "UPDATE users SET disabled = $2, updated_ms = $3 WHERE username = $1 RETURNING id";
const UPDATE_USER: &str = "UPDATE users SET display_name = COALESCE($2, display_name), \
     role = COALESCE($3, role), \
     agent_id = CASE WHEN $4 THEN $5 ELSE agent_id END, \
     teams = COALESCE($6, teams), updated_ms = $7 WHERE username = $1 RETURNING id";
const DELETE_SESSIONS_OF: &str = "DELETE FROM sessions WHERE user_id = $1";

const ADD_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);
const GET_SESSION: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE token_hash = $1"
);
const TOUCH_SESSION: &str = "UPDATE sessions SET last_seen_ms = $2 WHERE token_hash = $1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_hash = $1";
const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_ms <= $1 OR last_seen_ms <= $2";

const ADD_TOKEN: &str = "INSERT INTO api_tokens (name, token_hash, scopes, created_ms, \
     created_by) VALUES ($1, $2, $3, $4, $5) RETURNING id";
const TOKEN_BY_HASH: &str = concat!(
    "SELECT ",
    token_cols!(),
    " FROM api_tokens WHERE token_hash = $1 AND revoked_ms IS NULL"
);
const LIST_TOKENS: &str = concat!("SELECT ", token_cols!(), " FROM api_tokens ORDER BY name");
const REVOKE_TOKEN: &str =
    "UPDATE api_tokens SET revoked_ms = $2 WHERE name = $1 AND revoked_ms IS NULL";
const TOUCH_TOKEN: &str = "UPDATE api_tokens SET last_used_ms = $2 WHERE id = $1";

const AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
const AUDIT_INSERT: &str = concat!(
    "INSERT INTO audit_log (",
    audit_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
const AUDIT_SET_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
const AUDIT_CHAIN: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
);

/// Maps a unique violation to [`StoreError::Exists`].
fn exists<'a>(what: &'static str, name: &'a str) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists {
            what,
            name: name.to_string(),
        },
        _ => StoreError::Db(e),
    }
}

/// `$begin` starts the appending transaction (SQLite takes its write lock at once with
/// `BEGIN IMMEDIATE`, so two appenders never both read the same head); `$lock_head` reads
/// the head, locking its row in PostgreSQL.
macro_rules! access_backend {
    ($name:ident, $db:ty, $begin:literal, $lock_head:expr) => {
        impl $name {
            async fn add_user(&self, u: &NewUser, now_ms: i64) -> Result<i64, StoreError> {
                sqlx::query_scalar(ADD_USER)
                    .bind(&u.username)
                    .bind(&u.display_name)
                    .bind(&u.role)
                    .bind(&u.agent_id)
                    .bind(Json(&u.teams))
                    .bind(&u.password_hash)
                    .bind(now_ms)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(exists("user", &u.username))
            }

            async fn user(
                &self,
                sql: &'static str,
                key: impl for<'q> sqlx::Encode<'q, $db> + sqlx::Type<$db> + Send,
            ) -> Result<Option<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<_, UserRow>(sql)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(UserRecord::from))
            }

            async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<_, UserRow>(LIST_USERS)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(UserRecord::from)
                    .collect())
            }

            /// Runs a user update returning the id, and ends the user's sessions with it
            /// when `end_sessions`, in one transaction.
            async fn change_user(
                &self,
                q: sqlx::query::QueryScalar<'_, $db, i64, <$db as sqlx::Database>::Arguments>,
                end_sessions: bool,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let Some(id) = q.fetch_optional(&mut *tx).await? else {
                    return Ok(false);
                };
                if end_sessions {
                    sqlx::query(DELETE_SESSIONS_OF)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn add_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
                sqlx::query(ADD_SESSION)
                    .bind(&s.token_hash)
                    .bind(s.user_id)
                    .bind(&s.csrf)
                    .bind(s.created_ms)
                    .bind(s.last_seen_ms)
                    .bind(s.expires_ms)
                    .bind(&s.from_addr)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session(
                &self,
                token_hash: &str,
            ) -> Result<Option<(SessionRecord, UserRecord)>, StoreError> {
                let Some(s) = sqlx::query_as::<_, SessionRow>(GET_SESSION)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let user = self.user(USER_BY_ID, s.user_id).await?;
                Ok(user.map(|u| (SessionRecord::from(s), u)))
            }

            async fn exec(
                &self,
                q: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>,
            ) -> Result<u64, StoreError> {
                Ok(q.execute(&self.pool).await?.rows_affected())
            }

            async fn add_token(&self, t: &NewToken, now_ms: i64) -> Result<i64, StoreError> {
                sqlx::query_scalar(ADD_TOKEN)
                    .bind(&t.name)
                    .bind(&t.token_hash)
                    .bind(&t.scopes)
                    .bind(now_ms)
                    .bind(&t.created_by)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(exists("token", &t.name))
            }

            async fn token_by_hash(
                &self,
                token_hash: &str,
            ) -> Result<Option<TokenRecord>, StoreError> {
                Ok(sqlx::query_as::<_, TokenRow>(TOKEN_BY_HASH)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TokenRecord::from))
            }

            async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
                Ok(sqlx::query_as::<_, TokenRow>(LIST_TOKENS)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TokenRecord::from)
                    .collect())
            }

            async fn audit_append(&self, a: &NewAudit) -> Result<AuditEntry, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let (head_seq, head_hash): (i64, String) =
                    sqlx::query_as($lock_head).fetch_one(&mut *tx).await?;
                let seq = head_seq + 1;
                let hash = entry_hash(
                    &head_hash,
                    seq,
                    a.at_ms,
                    &a.actor,
                    &a.action,
                    a.target.as_deref(),
                    &a.detail,
                    a.from.as_deref(),
                )
                .ok_or_else(|| StoreError::Corrupt {
                    contact_id: "audit_head".into(),
                    reason: format!("head hash {head_hash:?} is not a SHA-256"),
                })?;
                sqlx::query(AUDIT_INSERT)
                    .bind(seq)
                    .bind(a.at_ms)
                    .bind(&a.actor)
                    .bind(&a.action)
                    .bind(&a.target)
                    .bind(crate::audit::canonical_json(&a.detail))
                    .bind(&a.from)
                    .bind(&head_hash)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(AUDIT_SET_HEAD)
                    .bind(seq)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(AuditEntry {
                    seq,
                    at_ms: a.at_ms,
                    actor: a.actor.clone(),
                    action: a.action.clone(),
                    target: a.target.clone(),
                    detail: a.detail.clone(),
                    from: a.from.clone(),
                    prev_hash: head_hash,
                    hash,
                })
            }

            async fn audit_head(&self) -> Result<(i64, String), StoreError> {
                Ok(sqlx::query_as(AUDIT_HEAD).fetch_one(&self.pool).await?)
            }

            async fn audit_chain(
                &self,
                after_seq: i64,
                max: u32,
            ) -> Result<Vec<AuditEntry>, StoreError> {
                sqlx::query_as::<_, AuditRow>(AUDIT_CHAIN)
                    .bind(after_seq)
                    .bind(i64::from(max))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(AuditEntry::try_from)
                    .collect()
            }

            async fn audit_list(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
                let limit = match q.limit {
                    0 => crate::DEFAULT_LIMIT,
                    n if n > crate::MAX_LIMIT => {
                        return Err(StoreError::BadQuery {
                            param: "limit",
                            reason: "above 1000".into(),
                        })
                    }
                    n => n,
                };
                if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
                    if f > t {
                        return Err(StoreError::BadQuery {
                            param: "to",
                            reason: "ends before from".into(),
                        });
                    }
                }
                let mut qb = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    audit_cols!(),
                    " FROM audit_log WHERE 1 = 1"
                ));
                for (col, v) in [
                    ("actor", &q.actor),
                    ("action", &q.action),
                    ("target", &q.target),
                ] {
                    if let Some(v) = v {
                        qb.push(" AND ").push(col).push(" = ").push_bind(v.clone());
                    }
                }
                if let Some(v) = q.from_ms {
                    qb.push(" AND at_ms >= ").push_bind(v);
                }
                if let Some(v) = q.to_ms {
                    qb.push(" AND at_ms < ").push_bind(v);
                }
                let (cmp, dir) = match q.order {
                    AuditOrder::NewestFirst => (" AND seq < ", " DESC"),
                    AuditOrder::OldestFirst => (" AND seq > ", " ASC"),
                };
                if let Some(c) = q.cursor {
                    qb.push(cmp).push_bind(c);
                }
                qb.push(" ORDER BY seq")
                    .push(dir)
                    .push(" LIMIT ")
                    .push_bind(i64::from(limit) + 1);
                let mut entries = qb
                    .build_query_as::<AuditRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(AuditEntry::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                let next = if entries.len() > limit as usize {
                    entries.truncate(limit as usize);
                    entries.last().map(|e| e.seq)
                } else {
                    None
                };
                Ok(AuditPage { entries, next })
            }
        }
    };
}

access_backend!(SqliteCatalog, Sqlite, "BEGIN IMMEDIATE", AUDIT_HEAD);
access_backend!(
    PostgresCatalog,
    Postgres,
    "BEGIN",
    "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
);

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Catalog::Sqlite($c) => $e,
            Catalog::Postgres($c) => $e,
        }
    };
}

impl Catalog {
    /// Adds a user; [`StoreError::Exists`] when the username is taken. Returns its id.
    pub async fn add_user(&self, u: &NewUser, now_ms: i64) -> Result<i64, StoreError> {
        dispatch!(self, c => c.add_user(u, now_ms).await)
    }

    /// The user with this username.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        dispatch!(self, c => c.user(USER_BY_NAME, username.to_string()).await)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        dispatch!(self, c => c.user(USER_BY_ID, id).await)
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        dispatch!(self, c => c.list_users().await)
    }

    /// Replaces the password hash and ends every session of the user (a changed password
    /// logs out everywhere). False when there is no such user.
    pub async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.change_user(
            sqlx::query_scalar(SET_PASSWORD).bind(username).bind(password_hash).bind(now_ms),
            true,
        ).await)
    }

    /// Disables (ending its sessions) or enables a user. False when there is no such user.
    pub async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, c => c.change_user(
            sqlx::query_scalar(SET_DISABLED).bind(username).bind(disabled).bind(now_ms),
            disabled,
        ).await)
    }

    /// Changes a user's name, role, agent id or teams. A change of role, agent id or teams
    /// ends the user's sessions, so what they see changes at once. False when no such user.
    pub async fn update_user(
        &self,
        username: &str,
        u: &UserUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let end_sessions = u.role.is_some() || u.agent_id.is_some() || u.teams.is_some();
        let agent = u.agent_id.clone().flatten();
        let teams = u.teams.as_ref().map(Json);
        dispatch!(self, c => c.change_user(
            sqlx::query_scalar(UPDATE_USER)
                .bind(username)
                .bind(&u.display_name)
                .bind(&u.role)
                .bind(u.agent_id.is_some())
                .bind(&agent)
                .bind(teams)
                .bind(now_ms),
            end_sessions,
        ).await)
    }

    /// Stores a new session.
    pub async fn add_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        dispatch!(self, c => c.add_session(s).await)
    }

    /// The session with this token hash and its user. Expiry is the caller's to check.
    pub async fn session(
        &self,
        token_hash: &str,
    ) -> Result<Option<(SessionRecord, UserRecord)>, StoreError> {
        dispatch!(self, c => c.session(token_hash).await)
    }

    /// Records activity on a session (for its idle expiry).
    pub async fn touch_session(&self, token_hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self, c => c.exec(sqlx::query(TOUCH_SESSION).bind(token_hash).bind(now_ms)).await)
            .map(|n| n == 1)
    }

    /// Ends a session (logout); false when there was none.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        dispatch!(self, c => c.exec(sqlx::query(DELETE_SESSION).bind(token_hash)).await)
            .map(|n| n == 1)
    }

    /// Deletes sessions past their absolute end or idle since `idle_before_ms` or earlier;
    /// returns how many.
    pub async fn purge_sessions(
        &self,
        now_ms: i64,
        idle_before_ms: i64,
    ) -> Result<u64, StoreError> {
        dispatch!(self, c => c.exec(
            sqlx::query(PURGE_SESSIONS).bind(now_ms).bind(idle_before_ms)
        ).await)
    }

    /// Adds an API token; [`StoreError::Exists`] when the name is taken. Returns its id.
    pub async fn add_token(&self, t: &NewToken, now_ms: i64) -> Result<i64, StoreError> {
        dispatch!(self, c => c.add_token(t, now_ms).await)
    }

    /// The live (not revoked) token with this hash.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, c => c.token_by_hash(token_hash).await)
    }

    /// Every token, revoked ones included, by name.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        dispatch!(self, c => c.list_tokens().await)
    }

    /// Revokes a token; false when there is no live token of that name.
    pub async fn revoke_token(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self, c => c.exec(sqlx::query(REVOKE_TOKEN).bind(name).bind(now_ms)).await)
            .map(|n| n == 1)
    }

    /// Records a use of a token.
    pub async fn touch_token(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        dispatch!(self, c => c.exec(sqlx::query(TOUCH_TOKEN).bind(id).bind(now_ms)).await)
            .map(|_| ())
    }

    /// Appends an entry to the audit log and returns it with its seq and hashes. Appends are
    /// serialized on the chain head, across connections and nodes.
    pub async fn audit_append(&self, a: &NewAudit) -> Result<AuditEntry, StoreError> {
        dispatch!(self, c => c.audit_append(a).await)
    }

    /// The chain head: the last seq (0 when empty) and its hash.
    pub async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        dispatch!(self, c => c.audit_head().await)
    }

    /// Up to `max` entries after `after_seq`, oldest first: the chain in order.
    pub async fn audit_chain(
        &self,
        after_seq: i64,
        max: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self, c => c.audit_chain(after_seq, max).await)
    }

    /// One page of the audit log matching `q`.
    pub async fn audit_list(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        dispatch!(self, c => c.audit_list(q).await)
    }

    /// Checks the whole stored chain, a thousand entries at a time, against its head.
    pub async fn audit_verify(&self) -> Result<ChainVerdict, StoreError> {
        // The head first: entries appended while checking are past it and not looked at.
        let (head_seq, head_hash) = self.audit_head().await?;
        let mut v = ChainVerifier::new();
        let mut after = 0;
        while after < head_seq {
            let batch = self.audit_chain(after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for e in batch.iter().take_while(|e| e.seq <= head_seq) {
                if let Err(b) = v.push(e) {
                    return Ok(ChainVerdict::Broken(b));
                }
            }
        }
        Ok(match v.finish(head_seq, &head_hash) {
            Ok(()) => ChainVerdict::Intact {
                entries: v.checked(),
                head_hash,
            },
            Err(b) => ChainVerdict::Broken(b),
        })
    }
}
