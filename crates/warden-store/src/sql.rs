//! The SQL both backends run, written once.
//!
//! Why a macro and not a generic `impl<DB: sqlx::Database>`: a generic implementation needs a bound for
//! every type it binds or decodes, for every executor it uses, and for the row index type; the bounds
//! outgrow the code. The macro pastes the same statements into one `impl Store` per backend, and each
//! expansion is type-checked against its own driver. Statements use only what both SQLite and
//! PostgreSQL accept: `$n` placeholders, `CAST(x AS TEXT)`, `ON CONFLICT`, `EXISTS`. The one difference,
//! row locks, is a parameter (`FOR UPDATE` on PostgreSQL; SQLite serializes writers instead).
//!
//! Timestamps are truncated to microseconds before they are written, PostgreSQL's precision, so both
//! backends return exactly what was stored.

use chrono::{DateTime, SubsecRound as _, Utc};
use std::str::FromStr;

use crate::{Result, StoreError};

/// Truncates a timestamp to what both backends store.
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Parses a stored string back into its type; a failure means the row was not written by Warden.
pub(crate) fn parse_col<T>(column: &str, value: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| StoreError::corrupt(column, e))
}

/// Roles are stored as one comma-separated column: a human has at most four.
pub(crate) fn roles_to_col(roles: &[warden_core::Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn roles_from_col(value: &str) -> Result<Vec<warden_core::Role>> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse_col("roles", s))
        .collect()
}

pub(crate) fn uuid_col(value: &str) -> Result<uuid::Uuid> {
    parse_col("id", value)
}

/// Implements [`crate::Store`] for `$store`, whose fields `read` and `write` are `sqlx::Pool<$db>`.
macro_rules! impl_store {
    ($store:ty, $db:ty, $row:ty, $backend:expr, for_update = $for_update:literal) => {
        mod decode {
            use crate::sql::{parse_col, roles_from_col, uuid_col};
            use sqlx::Row as _;
            use warden_core::*;

            pub(super) fn human(row: &$row) -> crate::Result<Human> {
                Ok(Human {
                    email: parse_col("email", row.try_get::<&str, _>("email")?)?,
                    display_name: DisplayName::parse(row.try_get::<&str, _>("display_name")?)
                        .map_err(|e| crate::StoreError::corrupt("display_name", e))?,
                    roles: roles_from_col(row.try_get::<&str, _>("roles")?)?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                })
            }

            pub(super) fn token(row: &$row) -> crate::Result<ApiTokenInfo> {
                Ok(ApiTokenInfo {
                    id: uuid_col(row.try_get::<&str, _>("id")?)?,
                    human: parse_col("human_email", row.try_get::<&str, _>("human_email")?)?,
                    label: row.try_get("label")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    revoked_by: row.try_get("revoked_by")?,
                })
            }

            pub(super) fn upstream(row: &$row) -> crate::Result<Upstream> {
                Ok(Upstream {
                    id: uuid_col(row.try_get::<&str, _>("id")?)?,
                    name: parse_col("name", row.try_get::<&str, _>("name")?)?,
                    kind: parse_col("kind", row.try_get::<&str, _>("kind")?)?,
                    url: row.try_get("url")?,
                    environment: parse_col("environment", row.try_get::<&str, _>("environment")?)?,
                    owner: parse_col("owner_email", row.try_get::<&str, _>("owner_email")?)?,
                    sensitivity: parse_col("sensitivity", row.try_get::<&str, _>("sensitivity")?)?,
                    description: Description::parse(row.try_get::<&str, _>("description")?)
                        .map_err(|e| crate::StoreError::corrupt("description", e))?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                })
            }

            /// An agent row without its lists; the caller fills owners and allowed upstreams.
            pub(super) fn agent(row: &$row) -> crate::Result<Agent> {
                Ok(Agent {
                    id: uuid_col(row.try_get::<&str, _>("id")?)?,
                    name: parse_col("name", row.try_get::<&str, _>("name")?)?,
                    spiffe_id: row.try_get("spiffe_id")?,
                    owners: Vec::new(),
                    environment: parse_col("environment", row.try_get::<&str, _>("environment")?)?,
                    model: parse_col("model", row.try_get::<&str, _>("model")?)?,
                    description: Description::parse(row.try_get::<&str, _>("description")?)
                        .map_err(|e| crate::StoreError::corrupt("description", e))?,
                    allowed_upstreams: Vec::new(),
                    state: parse_col("state", row.try_get::<&str, _>("state")?)?,
                    state_changed_at: row.try_get("state_changed_at")?,
                    state_changed_by: row.try_get("state_changed_by")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                    updated_at: row.try_get("updated_at")?,
                    updated_by: row.try_get("updated_by")?,
                })
            }

            pub(super) fn state_change(row: &$row) -> crate::Result<AgentStateChange> {
                let from: Option<String> = row.try_get("from_state")?;
                Ok(AgentStateChange {
                    from: from.map(|s| parse_col("from_state", &s)).transpose()?,
                    to: parse_col("to_state", row.try_get::<&str, _>("to_state")?)?,
                    at: row.try_get("at")?,
                    by: row.try_get("by_actor")?,
                    reason: row.try_get("reason")?,
                })
            }
        }

        const AGENT_COLUMNS: &str = "a.id, a.name, a.spiffe_id, a.environment, a.model, a.description, a.state, \
             a.state_changed_at, a.state_changed_by, a.created_at, a.created_by, a.updated_at, a.updated_by";
        const TOKEN_COLUMNS: &str =
            "t.id, t.human_email, t.label, t.created_at, t.created_by, t.expires_at, t.revoked_at, t.revoked_by";

        impl $store {
            /// Loads an agent's owners and allowed upstreams, in their stored order.
            async fn load_lists(
                conn: &mut <$db as sqlx::Database>::Connection,
                agent: &mut warden_core::Agent,
            ) -> crate::Result<()> {
                use sqlx::Row as _;
                let id = agent.id.to_string();
                let owners = sqlx::query("SELECT human_email FROM agent_owners WHERE agent_id = $1 ORDER BY position")
                    .bind(&id)
                    .fetch_all(&mut *conn)
                    .await?;
                agent.owners = owners
                    .iter()
                    .map(|r| crate::sql::parse_col("owners", r.try_get::<&str, _>("human_email")?))
                    .collect::<crate::Result<_>>()?;
                let ups = sqlx::query("SELECT upstream_name FROM agent_upstreams WHERE agent_id = $1 ORDER BY position")
                    .bind(&id)
                    .fetch_all(&mut *conn)
                    .await?;
                agent.allowed_upstreams = ups
                    .iter()
                    .map(|r| crate::sql::parse_col("allowed_upstreams", r.try_get::<&str, _>("upstream_name")?))
                    .collect::<crate::Result<_>>()?;
                Ok(())
            }

            /// Loads the lists of several agents over one pooled connection.
            async fn attach_lists(&self, agents: &mut [warden_core::Agent]) -> crate::Result<()> {
                let mut conn = self.read.acquire().await?;
                for agent in agents.iter_mut() {
                    Self::load_lists(&mut conn, agent).await?;
                }
                Ok(())
            }

            /// Reads one agent (with its lists) inside a transaction, locking its row where the backend
            /// supports row locks.
            async fn agent_for_update(
                tx: &mut sqlx::Transaction<'_, $db>,
                name: &warden_core::AgentName,
            ) -> crate::Result<warden_core::Agent> {
                let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.name = $1{}", $for_update))
                    .bind(name.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| crate::StoreError::not_found("agent", name))?;
                let mut agent = decode::agent(&row)?;
                Self::load_lists(&mut **tx, &mut agent).await?;
                Ok(agent)
            }

            /// Checks that every owner is a registered human, naming the first that is not.
            async fn check_owners(
                tx: &mut sqlx::Transaction<'_, $db>,
                owners: &[warden_core::Email],
            ) -> crate::Result<()> {
                for (i, owner) in owners.iter().enumerate() {
                    let found = sqlx::query("SELECT 1 FROM humans WHERE email = $1")
                        .bind(owner.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if found.is_none() {
                        return Err(warden_core::ValidationError::new(
                            format!("owners[{i}]"),
                            format!("owner `{owner}` is not a registered human; add them with `warden human add`"),
                        )
                        .into());
                    }
                }
                Ok(())
            }

            /// Checks that every allowed upstream is registered, naming the first that is not.
            async fn check_upstreams(
                tx: &mut sqlx::Transaction<'_, $db>,
                ups: &[warden_core::UpstreamName],
            ) -> crate::Result<()> {
                for (i, up) in ups.iter().enumerate() {
                    let found = sqlx::query("SELECT 1 FROM upstreams WHERE name = $1")
                        .bind(up.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if found.is_none() {
                        return Err(warden_core::ValidationError::new(
                            format!("allowed_upstreams[{i}]"),
                            format!("upstream `{up}` is not registered; add it with `warden upstream add`"),
                        )
                        .into());
                    }
                }
                Ok(())
            }

            async fn write_owners(
                tx: &mut sqlx::Transaction<'_, $db>,
                agent_id: &str,
                owners: &[warden_core::Email],
            ) -> crate::Result<()> {
                sqlx::query("DELETE FROM agent_owners WHERE agent_id = $1").bind(agent_id).execute(&mut **tx).await?;
                for (pos, owner) in (0_i64..).zip(owners) {
                    sqlx::query("INSERT INTO agent_owners (agent_id, human_email, position) VALUES ($1, $2, $3)")
                        .bind(agent_id)
                        .bind(owner.as_str())
                        .bind(pos)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            async fn write_upstreams(
                tx: &mut sqlx::Transaction<'_, $db>,
                agent_id: &str,
                ups: &[warden_core::UpstreamName],
            ) -> crate::Result<()> {
                sqlx::query("DELETE FROM agent_upstreams WHERE agent_id = $1").bind(agent_id).execute(&mut **tx).await?;
                for (pos, up) in (0_i64..).zip(ups) {
                    sqlx::query("INSERT INTO agent_upstreams (agent_id, upstream_name, position) VALUES ($1, $2, $3)")
                        .bind(agent_id)
                        .bind(up.as_str())
                        .bind(pos)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            async fn write_history(
                tx: &mut sqlx::Transaction<'_, $db>,
                agent_id: &str,
                from: Option<warden_core::AgentState>,
                to: warden_core::AgentState,
                reason: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                sqlx::query(
                    "INSERT INTO agent_state_changes (agent_id, from_state, to_state, at, by_actor, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(agent_id)
                .bind(from.map(|s| s.as_str()))
                .bind(to.as_str())
                .bind(crate::sql::ts(ctx.at))
                .bind(&ctx.actor)
                .bind(reason)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn insert_token(
                tx: &mut sqlx::Transaction<'_, $db>,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, human_email, label, token_hash, created_at, created_by, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(token.id.to_string())
                .bind(token.human.as_str())
                .bind(&token.label)
                .bind(token.hash.as_str())
                .bind(crate::sql::ts(ctx.at))
                .bind(&ctx.actor)
                .bind(crate::sql::ts(token.expires_at))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn insert_human(
                tx: &mut sqlx::Transaction<'_, $db>,
                new: &warden_core::NewHuman,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Human> {
                new.validate()?;
                let exists = sqlx::query("SELECT 1 FROM humans WHERE email = $1")
                    .bind(new.email.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_some() {
                    return Err(crate::StoreError::Conflict(format!("human `{}` is already registered", new.email)));
                }
                let human = warden_core::Human {
                    email: new.email.clone(),
                    display_name: new.display_name.clone(),
                    roles: new.roles.clone(),
                    created_at: crate::sql::ts(ctx.at),
                    created_by: ctx.actor.clone(),
                };
                sqlx::query(
                    "INSERT INTO humans (email, display_name, roles, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(human.email.as_str())
                .bind(human.display_name.as_str())
                .bind(crate::sql::roles_to_col(&human.roles))
                .bind(human.created_at)
                .bind(&human.created_by)
                .execute(&mut **tx)
                .await?;
                Ok(human)
            }
        }

        #[async_trait::async_trait]
        impl crate::Store for $store {
            fn backend(&self) -> crate::Backend {
                $backend
            }

            async fn close(&self) {
                self.read.close().await;
                self.write.close().await;
            }

            async fn health(&self) -> crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.read).await?;
                // The writer too: a healthy reader over a wedged writer is not a healthy store.
                sqlx::query("SELECT 1").execute(&self.write).await?;
                Ok(())
            }

            async fn create_human(
                &self,
                new: &warden_core::NewHuman,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Human> {
                let mut tx = self.write.begin().await?;
                let human = Self::insert_human(&mut tx, new, ctx).await?;
                tx.commit().await?;
                Ok(human)
            }

            async fn get_human(&self, email: &warden_core::Email) -> crate::Result<Option<warden_core::Human>> {
                let row = sqlx::query("SELECT email, display_name, roles, created_at, created_by FROM humans WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&self.read)
                    .await?;
                row.as_ref().map(decode::human).transpose()
            }

            async fn list_humans(&self) -> crate::Result<Vec<warden_core::Human>> {
                let rows = sqlx::query("SELECT email, display_name, roles, created_at, created_by FROM humans ORDER BY email")
                    .fetch_all(&self.read)
                    .await?;
                rows.iter().map(decode::human).collect()
            }

            async fn bootstrap_admin(
                &self,
                admin: &warden_core::NewHuman,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<bool> {
                let mut tx = self.write.begin().await?;
                // Nodes starting together race here; the lock makes the check-then-insert atomic on
                // PostgreSQL (SQLite serializes writers already).
                if $backend == crate::Backend::Postgres {
                    sqlx::query("LOCK TABLE humans IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                }
                let any = sqlx::query("SELECT 1 FROM humans LIMIT 1").fetch_optional(&mut *tx).await?;
                if any.is_some() {
                    return Ok(false);
                }
                Self::insert_human(&mut tx, admin, ctx).await?;
                Self::insert_token(&mut tx, token, ctx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_api_token(
                &self,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::ApiTokenInfo> {
                let mut tx = self.write.begin().await?;
                let human = sqlx::query("SELECT 1 FROM humans WHERE email = $1")
                    .bind(token.human.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if human.is_none() {
                    return Err(crate::StoreError::not_found("human", &token.human));
                }
                Self::insert_token(&mut tx, token, ctx).await?;
                tx.commit().await?;
                self.get_api_token(token.id).await?.ok_or_else(|| crate::StoreError::not_found("token", token.id))
            }

            async fn list_api_tokens(&self, human: &warden_core::Email) -> crate::Result<Vec<warden_core::ApiTokenInfo>> {
                let rows = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.human_email = $1 ORDER BY t.created_at, t.id"
                ))
                .bind(human.as_str())
                .fetch_all(&self.read)
                .await?;
                rows.iter().map(decode::token).collect()
            }

            async fn get_api_token(&self, id: uuid::Uuid) -> crate::Result<Option<warden_core::ApiTokenInfo>> {
                let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&self.write)
                    .await?;
                row.as_ref().map(decode::token).transpose()
            }

            async fn revoke_api_token(
                &self,
                id: uuid::Uuid,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::ApiTokenInfo> {
                let mut tx = self.write.begin().await?;
                let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1{}", $for_update))
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| crate::StoreError::not_found("token", id))?;
                let mut token = decode::token(&row)?;
                if token.revoked_at.is_some() {
                    return Err(crate::StoreError::Conflict(format!("token `{id}` is already revoked")));
                }
                token.revoked_at = Some(crate::sql::ts(ctx.at));
                token.revoked_by = Some(ctx.actor.clone());
                sqlx::query("UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3")
                    .bind(token.revoked_at)
                    .bind(&token.revoked_by)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(token)
            }

            async fn find_token(
                &self,
                hash: &warden_core::token::TokenHash,
            ) -> crate::Result<Option<crate::TokenOwner>> {
                let row = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS}, h.email, h.display_name, h.roles, h.created_at AS h_created_at, \
                     h.created_by AS h_created_by \
                     FROM api_tokens t JOIN humans h ON h.email = t.human_email WHERE t.token_hash = $1"
                ))
                .bind(hash.as_str())
                .fetch_optional(&self.read)
                .await?;
                let Some(row) = row else { return Ok(None) };
                use sqlx::Row as _;
                let token = decode::token(&row)?;
                let human = warden_core::Human {
                    email: crate::sql::parse_col("email", row.try_get::<&str, _>("email")?)?,
                    display_name: warden_core::DisplayName::parse(row.try_get::<&str, _>("display_name")?)
                        .map_err(|e| crate::StoreError::corrupt("display_name", e))?,
                    roles: crate::sql::roles_from_col(row.try_get::<&str, _>("roles")?)?,
                    created_at: row.try_get("h_created_at")?,
                    created_by: row.try_get("h_created_by")?,
                };
                Ok(Some(crate::TokenOwner { human, token }))
            }

            async fn create_upstream(
                &self,
                new: &warden_core::NewUpstream,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Upstream> {
                new.validate()?;
                let mut tx = self.write.begin().await?;
                let exists = sqlx::query("SELECT 1 FROM upstreams WHERE name = $1")
                    .bind(new.name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    return Err(crate::StoreError::Conflict(format!("upstream `{}` already exists", new.name)));
                }
                let owner = sqlx::query("SELECT 1 FROM humans WHERE email = $1")
                    .bind(new.owner.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if owner.is_none() {
                    return Err(warden_core::ValidationError::new(
                        "owner",
                        format!("owner `{}` is not a registered human; add them with `warden human add`", new.owner),
                    )
                    .into());
                }
                let up = warden_core::Upstream {
                    id: uuid::Uuid::new_v4(),
                    name: new.name.clone(),
                    kind: new.kind,
                    url: new.url.clone(),
                    environment: new.environment,
                    owner: new.owner.clone(),
                    sensitivity: new.sensitivity,
                    description: new.description.clone(),
                    created_at: crate::sql::ts(ctx.at),
                    created_by: ctx.actor.clone(),
                };
                sqlx::query(
                    "INSERT INTO upstreams (id, name, kind, url, environment, owner_email, sensitivity, description, \
                     created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(up.id.to_string())
                .bind(up.name.as_str())
                .bind(up.kind.as_str())
                .bind(&up.url)
                .bind(up.environment.as_str())
                .bind(up.owner.as_str())
                .bind(up.sensitivity.as_str())
                .bind(up.description.as_str())
                .bind(up.created_at)
                .bind(&up.created_by)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(up)
            }

            async fn get_upstream(&self, name: &warden_core::UpstreamName) -> crate::Result<Option<warden_core::Upstream>> {
                let row = sqlx::query("SELECT * FROM upstreams WHERE name = $1")
                    .bind(name.as_str())
                    .fetch_optional(&self.read)
                    .await?;
                row.as_ref().map(decode::upstream).transpose()
            }

            async fn list_upstreams(&self) -> crate::Result<Vec<warden_core::Upstream>> {
                let rows = sqlx::query("SELECT * FROM upstreams ORDER BY name").fetch_all(&self.read).await?;
                rows.iter().map(decode::upstream).collect()
            }

            async fn remove_upstream(
                &self,
                name: &warden_core::UpstreamName,
                _ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Upstream> {
                use sqlx::Row as _;
                let mut tx = self.write.begin().await?;
                let row = sqlx::query(&format!("SELECT * FROM upstreams WHERE name = $1{}", $for_update))
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| crate::StoreError::not_found("upstream", name))?;
                let up = decode::upstream(&row)?;
                let users = sqlx::query(
                    "SELECT a.name FROM agents a JOIN agent_upstreams u ON u.agent_id = a.id \
                     WHERE u.upstream_name = $1 AND a.state <> 'retired' ORDER BY a.name",
                )
                .bind(name.as_str())
                .fetch_all(&mut *tx)
                .await?;
                if !users.is_empty() {
                    let names = users
                        .iter()
                        .map(|r| r.try_get::<String, _>("name").map(|n| format!("`{n}`")))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Err(crate::StoreError::Conflict(format!(
                        "upstream `{name}` is still allowed for agent(s) {}; remove it from them first",
                        names.join(", ")
                    )));
                }
                sqlx::query("DELETE FROM upstreams WHERE name = $1").bind(name.as_str()).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(up)
            }

            async fn create_agent(
                &self,
                new: &warden_core::AgentRegistration,
                trust_domain: &warden_core::TrustDomain,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Agent> {
                new.validate()?;
                let mut tx = self.write.begin().await?;
                let exists = sqlx::query("SELECT state FROM agents WHERE name = $1")
                    .bind(new.name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = exists {
                    use sqlx::Row as _;
                    let state: String = row.try_get("state")?;
                    let hint = if state == "retired" {
                        " (retired; names are never reused, so the ledger keeps meaning one identity)"
                    } else {
                        ""
                    };
                    return Err(crate::StoreError::Conflict(format!("agent `{}` already exists{hint}", new.name)));
                }
                Self::check_owners(&mut tx, &new.owners).await?;
                Self::check_upstreams(&mut tx, &new.allowed_upstreams).await?;
                let at = crate::sql::ts(ctx.at);
                let agent = warden_core::Agent {
                    id: uuid::Uuid::new_v4(),
                    name: new.name.clone(),
                    spiffe_id: trust_domain.agent_spiffe_id(&new.name),
                    owners: new.owners.clone(),
                    environment: new.environment,
                    model: new.model.clone(),
                    description: new.description.clone(),
                    allowed_upstreams: new.allowed_upstreams.clone(),
                    state: warden_core::AgentState::PendingReview,
                    state_changed_at: at,
                    state_changed_by: ctx.actor.clone(),
                    created_at: at,
                    created_by: ctx.actor.clone(),
                    updated_at: at,
                    updated_by: ctx.actor.clone(),
                };
                let id = agent.id.to_string();
                sqlx::query(
                    "INSERT INTO agents (id, name, spiffe_id, environment, model, description, state, state_changed_at, \
                     state_changed_by, created_at, created_by, updated_at, updated_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&id)
                .bind(agent.name.as_str())
                .bind(&agent.spiffe_id)
                .bind(agent.environment.as_str())
                .bind(agent.model.to_string())
                .bind(agent.description.as_str())
                .bind(agent.state.as_str())
                .bind(at)
                .bind(&ctx.actor)
                .bind(at)
                .bind(&ctx.actor)
                .bind(at)
                .bind(&ctx.actor)
                .execute(&mut *tx)
                .await?;
                Self::write_owners(&mut tx, &id, &agent.owners).await?;
                Self::write_upstreams(&mut tx, &id, &agent.allowed_upstreams).await?;
                Self::write_history(&mut tx, &id, None, agent.state, "registered", ctx).await?;
                tx.commit().await?;
                Ok(agent)
            }

            async fn get_agent(&self, name: &warden_core::AgentName) -> crate::Result<Option<warden_core::Agent>> {
                let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.name = $1"))
                    .bind(name.as_str())
                    .fetch_optional(&self.read)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let mut agents = [decode::agent(&row)?];
                self.attach_lists(&mut agents).await?;
                let [agent] = agents;
                Ok(Some(agent))
            }

            async fn list_agents(&self, filter: &crate::AgentFilter) -> crate::Result<Vec<warden_core::Agent>> {
                let rows = sqlx::query(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents a \
                     WHERE (CAST($1 AS TEXT) IS NULL OR a.state = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR EXISTS \
                         (SELECT 1 FROM agent_owners o WHERE o.agent_id = a.id AND o.human_email = $2)) \
                     ORDER BY a.name"
                ))
                .bind(filter.state.map(|s| s.as_str()))
                .bind(filter.owner.as_ref().map(|o| o.as_str()))
                .fetch_all(&self.read)
                .await?;
                let mut agents = rows.iter().map(decode::agent).collect::<crate::Result<Vec<_>>>()?;
                self.attach_lists(&mut agents).await?;
                Ok(agents)
            }

            async fn update_agent(
                &self,
                name: &warden_core::AgentName,
                update: &warden_core::AgentUpdate,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::AgentChange> {
                update.validate()?;
                let mut tx = self.write.begin().await?;
                let mut agent = Self::agent_for_update(&mut tx, name).await?;
                let (next, invalidated) = agent
                    .state
                    .after_update(update, &agent)
                    .map_err(|e| crate::StoreError::Conflict(format!("agent `{name}`: {e}")))?;
                let id = agent.id.to_string();
                if let Some(owners) = &update.owners {
                    Self::check_owners(&mut tx, owners).await?;
                    Self::write_owners(&mut tx, &id, owners).await?;
                    agent.owners = owners.clone();
                }
                if let Some(ups) = &update.allowed_upstreams {
                    Self::check_upstreams(&mut tx, ups).await?;
                    Self::write_upstreams(&mut tx, &id, ups).await?;
                    agent.allowed_upstreams = ups.clone();
                }
                if let Some(m) = &update.model {
                    agent.model = m.clone();
                }
                if let Some(e) = update.environment {
                    agent.environment = e;
                }
                if let Some(d) = &update.description {
                    agent.description = d.clone();
                }
                let at = crate::sql::ts(ctx.at);
                agent.updated_at = at;
                agent.updated_by = ctx.actor.clone();
                if next != agent.state {
                    let reason = invalidated.as_deref().unwrap_or("updated");
                    Self::write_history(&mut tx, &id, Some(agent.state), next, reason, ctx).await?;
                    agent.state = next;
                    agent.state_changed_at = at;
                    agent.state_changed_by = ctx.actor.clone();
                }
                sqlx::query(
                    "UPDATE agents SET environment = $1, model = $2, description = $3, state = $4, \
                     state_changed_at = $5, state_changed_by = $6, updated_at = $7, updated_by = $8 WHERE id = $9",
                )
                .bind(agent.environment.as_str())
                .bind(agent.model.to_string())
                .bind(agent.description.as_str())
                .bind(agent.state.as_str())
                .bind(agent.state_changed_at)
                .bind(&agent.state_changed_by)
                .bind(agent.updated_at)
                .bind(&agent.updated_by)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(crate::AgentChange { agent, credentials_invalidated: invalidated })
            }

            async fn transition_agent(
                &self,
                name: &warden_core::AgentName,
                action: warden_core::LifecycleAction,
                reason: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::AgentChange> {
                let mut tx = self.write.begin().await?;
                let mut agent = Self::agent_for_update(&mut tx, name).await?;
                let next = agent
                    .state
                    .apply(action)
                    .map_err(|e| crate::StoreError::Conflict(format!("agent `{name}`: {e}")))?;
                let id = agent.id.to_string();
                let at = crate::sql::ts(ctx.at);
                Self::write_history(&mut tx, &id, Some(agent.state), next, reason, ctx).await?;
                sqlx::query(
                    "UPDATE agents SET state = $1, state_changed_at = $2, state_changed_by = $3, updated_at = $2, \
                     updated_by = $3 WHERE id = $4",
                )
                .bind(next.as_str())
                .bind(at)
                .bind(&ctx.actor)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let invalidated = match next {
                    warden_core::AgentState::Suspended | warden_core::AgentState::Retired => {
                        Some(format!("agent {next} by {}", ctx.actor))
                    }
                    _ => None,
                };
                agent.state = next;
                agent.state_changed_at = at;
                agent.state_changed_by = ctx.actor.clone();
                agent.updated_at = at;
                agent.updated_by = ctx.actor.clone();
                Ok(crate::AgentChange { agent, credentials_invalidated: invalidated })
            }

            async fn agent_history(
                &self,
                name: &warden_core::AgentName,
            ) -> crate::Result<Vec<warden_core::AgentStateChange>> {
                let rows = sqlx::query(
                    "SELECT c.from_state, c.to_state, c.at, c.by_actor, c.reason FROM agent_state_changes c \
                     JOIN agents a ON a.id = c.agent_id WHERE a.name = $1 ORDER BY c.seq",
                )
                .bind(name.as_str())
                .fetch_all(&self.read)
                .await?;
                rows.iter().map(decode::state_change).collect()
            }
        }
    };
}

pub(crate) use impl_store;
