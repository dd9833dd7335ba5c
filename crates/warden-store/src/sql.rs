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

/// What a store call does, for `guarded`: a write also reports to the store's failed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Read,
    Write,
}

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

/// What a catalogued tool looks like without its name (see `resemblance` in [`impl_store!`]).
pub(crate) struct Look {
    pub name: String,
    /// Shape digests of its approved and pending definitions.
    pub shapes: Vec<String>,
    /// Its approved description, normalised.
    pub description: Option<String>,
}

/// Implements [`crate::Store`] for `$store`, whose fields `read` and `write` are `sqlx::Pool<$db>`.
macro_rules! impl_store {
    ($store:ty, $db:ty, $row:ty, $backend:expr, for_update = $for_update:literal, begin = $begin:literal) => {
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
                    disabled_at: row.try_get("disabled_at")?,
                    disabled_by: row.try_get("disabled_by")?,
                })
            }

            pub(super) fn approval(row: &$row, votes: Vec<crate::ApprovalVote>) -> crate::Result<crate::Approval> {
                let small = |col: &str, v: i64| u8::try_from(v).map_err(|e| crate::StoreError::corrupt(col, e));
                let arguments: Option<String> = row.try_get("arguments")?;
                Ok(crate::Approval {
                    id: uuid_col(row.try_get::<&str, _>("id")?)?,
                    request_key: row.try_get("request_key")?,
                    agent: parse_col("agent_name", row.try_get::<&str, _>("agent_name")?)?,
                    task_id: uuid_col(row.try_get::<&str, _>("task_id")?)?,
                    action: row.try_get("action")?,
                    resource: row.try_get("resource")?,
                    upstream: row.try_get("upstream")?,
                    args_digest: row.try_get("args_digest")?,
                    arguments: arguments
                        .map(|a| serde_json::from_str(&a).map_err(|e| crate::StoreError::corrupt("arguments", e)))
                        .transpose()?,
                    reason: row.try_get("reason")?,
                    policies: serde_json::from_str(row.try_get::<&str, _>("policies")?)
                        .map_err(|e| crate::StoreError::corrupt("policies", e))?,
                    policy_version: row.try_get("policy_version")?,
                    quorum: small("quorum", row.try_get("quorum")?)?,
                    approvals: small("approvals", row.try_get("approvals")?)?,
                    single_use: row.try_get("single_use")?,
                    owners_may_approve: row.try_get("owners_may_approve")?,
                    approvers: serde_json::from_str(row.try_get::<&str, _>("approvers")?)
                        .map_err(|e| crate::StoreError::corrupt("approvers", e))?,
                    chain: serde_json::from_str::<Vec<String>>(row.try_get::<&str, _>("chain")?)
                        .map_err(|e| crate::StoreError::corrupt("chain", e))?
                        .iter()
                        .map(|n| parse_col("chain", n))
                        .collect::<crate::Result<Vec<_>>>()?,
                    state: parse_col("state", row.try_get::<&str, _>("state")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    decided_at: row.try_get("decided_at")?,
                    grant_expires_at: row.try_get("grant_expires_at")?,
                    used_at: row.try_get("used_at")?,
                    votes,
                })
            }

            pub(super) fn tool(row: &$row) -> crate::Result<crate::ToolRecord> {
                let json = |col: &str| -> crate::Result<Option<serde_json::Value>> {
                    row.try_get::<Option<&str>, _>(col)?
                        .map(|v| serde_json::from_str(v).map_err(|e| crate::StoreError::corrupt(col, e)))
                        .transpose()
                };
                let class = |col: &str| -> crate::Result<Option<ToolClass>> {
                    row.try_get::<Option<&str>, _>(col)?.map(|v| parse_col(col, v)).transpose()
                };
                let mut tool = crate::ToolRecord {
                    upstream: parse_col("upstream_name", row.try_get::<&str, _>("upstream_name")?)?,
                    name: row.try_get("name")?,
                    state: parse_col("state", row.try_get::<&str, _>("state")?)?,
                    digest: row.try_get("digest")?,
                    definition: json("definition")?,
                    hint_class: parse_col("hint_class", row.try_get::<&str, _>("hint_class")?)?,
                    class_override: class("class_override")?,
                    pending_digest: row.try_get("pending_digest")?,
                    pending_definition: json("pending_definition")?,
                    pending_hint_class: class("pending_hint_class")?,
                    first_seen: row.try_get("first_seen")?,
                    updated_at: row.try_get("updated_at")?,
                    approved_by: row.try_get("approved_by")?,
                    approved_at: row.try_get("approved_at")?,
                    classified_by: row.try_get("classified_by")?,
                    classified_at: row.try_get("classified_at")?,
                    quarantine_cause: None,
                    resembles: None,
                    quarantine_reason: None,
                };
                let cause = row
                    .try_get::<Option<&str>, _>("quarantine_cause")?
                    .map(|v| parse_col("quarantine_cause", v))
                    .transpose()?;
                tool.set_quarantine(cause, row.try_get("resembles")?);
                Ok(tool)
            }

            pub(super) fn secret_info(row: &$row) -> crate::Result<crate::SecretInfo> {
                let corrupt = |col: &'static str| move |e: ValidationError| crate::StoreError::corrupt(col, e);
                let injection = match row.try_get::<&str, _>("injection")? {
                    "header" => Injection::Header {
                        name: SecretHeaderName::parse(row.try_get::<Option<&str>, _>("header_name")?.unwrap_or_default())
                            .map_err(corrupt("header_name"))?,
                        prefix: SecretHeaderPrefix::parse(row.try_get::<Option<&str>, _>("header_prefix")?.unwrap_or_default())
                            .map_err(corrupt("header_prefix"))?,
                    },
                    "env" => Injection::Env {
                        var: SecretEnvVar::parse(row.try_get::<Option<&str>, _>("env_var")?.unwrap_or_default())
                            .map_err(corrupt("env_var"))?,
                    },
                    other => return Err(crate::StoreError::corrupt("injection", format!("unknown injection `{other}`"))),
                };
                let version: i64 = row.try_get("version")?;
                Ok(crate::SecretInfo {
                    name: parse_col("name", row.try_get::<&str, _>("name")?)?,
                    upstream: parse_col("upstream_name", row.try_get::<&str, _>("upstream_name")?)?,
                    injection,
                    version: u32::try_from(version).map_err(|e| crate::StoreError::corrupt("version", e))?,
                    key_id: row.try_get("key_id")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                    rotated_at: row.try_get("rotated_at")?,
                    rotated_by: row.try_get("rotated_by")?,
                })
            }

            pub(super) fn sealed_secret(row: &$row) -> crate::Result<crate::SealedSecret> {
                let info = secret_info(row)?;
                Ok(crate::SealedSecret {
                    name: info.name,
                    upstream: info.upstream,
                    injection: info.injection,
                    version: info.version,
                    key_id: info.key_id,
                    nonce: row.try_get("nonce")?,
                    ciphertext: row.try_get("ciphertext")?,
                })
            }

            pub(super) fn task(row: &$row) -> crate::Result<Task> {
                let depth: i64 = row.try_get("depth")?;
                let act: Option<String> = row.try_get("act")?;
                Ok(Task {
                    id: uuid_col(row.try_get::<&str, _>("id")?)?,
                    agent: parse_col("agent", row.try_get::<&str, _>("agent_name")?)?,
                    agent_spiffe_id: row.try_get("agent_spiffe_id")?,
                    parent_id: row
                        .try_get::<Option<&str>, _>("parent_id")?
                        .map(uuid_col)
                        .transpose()?,
                    depth: u8::try_from(depth).map_err(|e| crate::StoreError::corrupt("depth", e))?,
                    intent: serde_json::from_str(row.try_get::<&str, _>("intent")?)
                        .map_err(|e| crate::StoreError::corrupt("intent", e))?,
                    act: act
                        .map(|a| serde_json::from_str(&a))
                        .transpose()
                        .map_err(|e| crate::StoreError::corrupt("act", e))?,
                    cnf_jkt: row.try_get("cnf_jkt")?,
                    state: parse_col("state", row.try_get::<&str, _>("state")?)?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                    expires_at: row.try_get("expires_at")?,
                    ended_at: row.try_get("ended_at")?,
                    ended_by: row.try_get("ended_by")?,
                    end_reason: row.try_get("end_reason")?,
                })
            }

            pub(super) fn signing_key(row: &$row) -> crate::Result<crate::SigningKeyRecord> {
                Ok(crate::SigningKeyRecord {
                    kid: row.try_get("kid")?,
                    public_x: row.try_get("public_x")?,
                    node: row.try_get("node")?,
                    created_at: row.try_get("created_at")?,
                    retire_after: row.try_get("retire_after")?,
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
                    minted_by: row
                        .try_get::<Option<&str>, _>("minted_by")?
                        .map(uuid_col)
                        .transpose()?,
                    personal: row.try_get("personal")?,
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
                    default_intent: row
                        .try_get::<Option<&str>, _>("default_intent")?
                        .map(|t| {
                            serde_json::from_str(t).map_err(|e| crate::StoreError::corrupt("default_intent", e))
                        })
                        .transpose()?,
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
             a.state_changed_at, a.state_changed_by, a.created_at, a.created_by, a.updated_at, a.updated_by, \
             a.default_intent";
        const HUMAN_COLUMNS: &str = "email, display_name, roles, created_at, created_by, disabled_at, disabled_by";
        const APPROVAL_COLUMNS: &str = "id, request_key, agent_name, task_id, action, resource, upstream, args_digest, \
             arguments, reason, policies, policy_version, quorum, single_use, owners_may_approve, approvers, chain, state, \
             approvals, created_at, expires_at, decided_at, grant_expires_at, used_at";
        const TASK_COLUMNS: &str = "t.id, a.name AS agent_name, a.spiffe_id AS agent_spiffe_id, t.parent_id, t.depth, \
             t.intent, t.act, t.cnf_jkt, t.state, t.created_at, t.created_by, t.expires_at, t.ended_at, t.ended_by, \
             t.end_reason";
        const TOOL_COLUMNS: &str = "upstream_name, name, state, digest, definition, hint_class, class_override, \
             pending_digest, pending_definition, pending_hint_class, first_seen, updated_at, approved_by, approved_at, \
             classified_by, classified_at, quarantine_cause, resembles";
        const SECRET_COLUMNS: &str = "name, upstream_name, injection, header_name, header_prefix, env_var, version, \
             key_id, created_at, created_by, rotated_at, rotated_by";
        const TOKEN_COLUMNS: &str =
            "t.id, t.human_email, t.label, t.created_at, t.created_by, t.expires_at, t.revoked_at, t.revoked_by, \
             t.minted_by, t.personal";

        impl $store {
            /// Every store call runs through here: refused at once while the database is unreachable
            /// (`reach.rs`), and its result tells the breaker — and, for a write, the failed state
            /// (`write.rs`) — what it found.
            async fn guarded<T>(
                &self,
                call: crate::sql::Call,
                body: impl std::future::Future<Output = crate::Result<T>> + Send,
            ) -> crate::Result<T> {
                self.reach.admit()?;
                let result = body.await;
                if call == crate::sql::Call::Write {
                    self.health.observe_result(&result);
                }
                self.reach.observe(&result);
                result
            }
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
                tx: &mut crate::write::WriteTx<$db>,
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

            /// Checks that every value names an existing row (`query` selects by `$1`), naming the first
            /// that does not: `field[i]` and `missing(value)` make the error.
            async fn check_refs(
                tx: &mut crate::write::WriteTx<$db>,
                query: &str,
                values: &[&str],
                field: &str,
                missing: impl Fn(&str) -> String,
            ) -> crate::Result<()> {
                for (i, value) in values.iter().enumerate() {
                    let found = sqlx::query(query).bind(*value).fetch_optional(&mut **tx).await?;
                    if found.is_none() {
                        return Err(warden_core::ValidationError::new(format!("{field}[{i}]"), missing(value)).into());
                    }
                }
                Ok(())
            }

            /// Checks that every owner is a registered, not removed human who holds the `owner` or
            /// `admin` role: an agent's owner is accountable for it, and an auditor or a bare approver is
            /// not someone the registry should name as accountable (nor let approve as an owner).
            async fn check_owners(
                tx: &mut crate::write::WriteTx<$db>,
                owners: &[warden_core::Email],
            ) -> crate::Result<()> {
                use sqlx::Row as _;
                for (i, owner) in owners.iter().enumerate() {
                    let row = sqlx::query("SELECT roles FROM humans WHERE email = $1 AND disabled_at IS NULL")
                        .bind(owner.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                    let Some(row) = row else {
                        return Err(warden_core::ValidationError::new(
                            format!("owners[{i}]"),
                            format!("owner `{owner}` is not a registered human (or was removed); add them with `warden human add`"),
                        )
                        .into());
                    };
                    let roles = crate::sql::roles_from_col(row.try_get::<&str, _>("roles")?)?;
                    if !roles.iter().any(|r| matches!(r, warden_core::Role::Owner | warden_core::Role::Admin)) {
                        return Err(warden_core::ValidationError::new(
                            format!("owners[{i}]"),
                            format!(
                                "`{owner}` holds the roles [{}]; an agent's owner needs the `owner` (or `admin`) role",
                                crate::sql::roles_to_col(&roles)
                            ),
                        )
                        .into());
                    }
                }
                Ok(())
            }

            /// Checks that every allowed upstream is registered.
            async fn check_upstreams(
                tx: &mut crate::write::WriteTx<$db>,
                ups: &[warden_core::UpstreamName],
            ) -> crate::Result<()> {
                let values: Vec<&str> = ups.iter().map(|u| u.as_str()).collect();
                Self::check_refs(tx, "SELECT 1 FROM upstreams WHERE name = $1", &values, "allowed_upstreams", |u| {
                    format!("upstream `{u}` is not registered; add it with `warden upstream add`")
                })
                .await
            }

            /// Replaces an agent's ordered list (`agent_owners.human_email` or
            /// `agent_upstreams.upstream_name`). `table` and `column` are constants of this module,
            /// never input.
            async fn write_list(
                tx: &mut crate::write::WriteTx<$db>,
                table: &str,
                column: &str,
                agent_id: &str,
                values: &[&str],
            ) -> crate::Result<()> {
                sqlx::query(&format!("DELETE FROM {table} WHERE agent_id = $1")).bind(agent_id).execute(&mut **tx).await?;
                let insert = format!("INSERT INTO {table} (agent_id, {column}, position) VALUES ($1, $2, $3)");
                for (pos, value) in (0_i64..).zip(values) {
                    sqlx::query(&insert).bind(agent_id).bind(*value).bind(pos).execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn write_owners(
                tx: &mut crate::write::WriteTx<$db>,
                agent_id: &str,
                owners: &[warden_core::Email],
            ) -> crate::Result<()> {
                let values: Vec<&str> = owners.iter().map(|o| o.as_str()).collect();
                Self::write_list(tx, "agent_owners", "human_email", agent_id, &values).await
            }

            async fn write_upstreams(
                tx: &mut crate::write::WriteTx<$db>,
                agent_id: &str,
                ups: &[warden_core::UpstreamName],
            ) -> crate::Result<()> {
                let values: Vec<&str> = ups.iter().map(|u| u.as_str()).collect();
                Self::write_list(tx, "agent_upstreams", "upstream_name", agent_id, &values).await
            }

            async fn write_history(
                tx: &mut crate::write::WriteTx<$db>,
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

            /// Revokes every live API token minted from the tokens `seed` selects (a query of `id`s
            /// with one parameter, `param`), transitively. The walk stops at revoked tokens, so a
            /// claimed token (its issued token was revoked by the claim) is its claimant's own and
            /// stays. Returns the ids revoked.
            async fn revoke_minted(
                tx: &mut crate::write::WriteTx<$db>,
                seed: &str,
                param: &str,
                at: chrono::DateTime<chrono::Utc>,
                by: &str,
            ) -> crate::Result<Vec<String>> {
                let minted: Vec<String> = sqlx::query_scalar(&format!(
                    "WITH RECURSIVE minted (id) AS ( \
                         SELECT id FROM api_tokens WHERE minted_by IN ({seed}) AND revoked_at IS NULL \
                         UNION SELECT t.id FROM api_tokens t JOIN minted m ON t.minted_by = m.id WHERE t.revoked_at IS NULL \
                     ) SELECT id FROM minted ORDER BY id"
                ))
                .bind(param)
                .fetch_all(&mut **tx)
                .await?;
                for m in &minted {
                    sqlx::query("UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL")
                        .bind(at)
                        .bind(by)
                        .bind(m)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(minted)
            }

            /// Revokes, in the transaction, the active tasks selected by `seed` (a condition on `tasks`
            /// with `$1` its parameter) and every active task delegated from them, transitively.
            /// Returns their ids. Both backends accept `WITH RECURSIVE … UPDATE … RETURNING`.
            async fn revoke_task_tree(
                tx: &mut crate::write::WriteTx<$db>,
                seed: &str,
                param: &str,
                reason: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<Vec<uuid::Uuid>> {
                use sqlx::Row as _;
                let rows = sqlx::query(&format!(
                    "WITH RECURSIVE doomed(id) AS ( \
                         SELECT id FROM tasks WHERE {seed} AND state = 'active' \
                         UNION \
                         SELECT t.id FROM tasks t JOIN doomed d ON t.parent_id = d.id WHERE t.state = 'active' \
                     ) \
                     UPDATE tasks SET state = 'revoked', ended_at = $2, ended_by = $3, end_reason = $4 \
                     WHERE id IN (SELECT id FROM doomed) RETURNING id"
                ))
                .bind(param)
                .bind(crate::sql::ts(ctx.at))
                .bind(&ctx.actor)
                .bind(reason)
                .fetch_all(&mut **tx)
                .await?;
                rows.iter().map(|r| crate::sql::uuid_col(r.try_get::<&str, _>("id")?)).collect()
            }

            /// Tells other nodes, at commit, that these tasks stopped (PostgreSQL `NOTIFY`; a no-op on
            /// SQLite, which has one node). Ids go in chunks to stay under NOTIFY's 8000-byte payload.
            async fn notify_revoked(tx: &mut crate::write::WriteTx<$db>, ids: &[uuid::Uuid]) -> crate::Result<()> {
                if $backend != crate::Backend::Postgres {
                    return Ok(());
                }
                for chunk in ids.chunks(100) {
                    let event = crate::StoreEvent::TasksRevoked { ids: chunk.to_vec() };
                    Self::notify(tx, &event).await?;
                }
                Ok(())
            }

            async fn notify(tx: &mut crate::write::WriteTx<$db>, event: &crate::StoreEvent) -> crate::Result<()> {
                if $backend != crate::Backend::Postgres {
                    return Ok(());
                }
                let payload = serde_json::to_string(event).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::EVENT_CHANNEL)
                    .bind(payload)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Tells this node's subscribers (after commit).
            fn emit(&self, event: crate::StoreEvent) {
                let _ = self.events.send(event);
            }

            async fn votes_of<'c, E>(exec: E, id: uuid::Uuid) -> crate::Result<Vec<crate::ApprovalVote>>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                use sqlx::Row as _;
                let rows = sqlx::query("SELECT approver, vote, comment, at, token_id FROM approval_votes WHERE approval_id = $1 ORDER BY at, approver")
                    .bind(id.to_string())
                    .fetch_all(exec)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let vote: &str = r.try_get("vote")?;
                        Ok(crate::ApprovalVote {
                            approver: crate::sql::parse_col("approver", r.try_get::<&str, _>("approver")?)?,
                            vote: if vote == "deny" { crate::Vote::Deny } else { crate::Vote::Approve },
                            comment: r.try_get("comment")?,
                            at: r.try_get("at")?,
                            token_id: r
                                .try_get::<Option<&str>, _>("token_id")?
                                .map(crate::sql::uuid_col)
                                .transpose()?,
                        })
                    })
                    .collect()
            }

            async fn approval_by_id(conn: &mut <$db as sqlx::Database>::Connection, id: uuid::Uuid) -> crate::Result<Option<crate::Approval>> {
                let row = sqlx::query(&format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"))
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
                    None => Ok(None),
                    Some(r) => {
                        let votes = Self::votes_of(&mut *conn, id).await?;
                        Ok(Some(decode::approval(&r, votes)?))
                    }
                }
            }

            async fn approval_in(tx: &mut crate::write::WriteTx<$db>, id: uuid::Uuid) -> crate::Result<Option<crate::Approval>> {
                Self::approval_by_id(&mut **tx, id).await
            }

            /// The agents of a task's delegation chain, from the tasks' parent links: the task's own
            /// agent first, then its parent task's, up to the root.
            async fn delegation_chain(conn: &mut <$db as sqlx::Database>::Connection, task: uuid::Uuid) -> crate::Result<Vec<String>> {
                let names: Vec<String> = sqlx::query_scalar(
                    "WITH RECURSIVE chain (id, parent_id, agent_id, depth) AS ( \
                         SELECT id, parent_id, agent_id, 0 FROM tasks WHERE id = $1 \
                         UNION ALL SELECT t.id, t.parent_id, t.agent_id, c.depth + 1 FROM tasks t JOIN chain c ON t.id = c.parent_id \
                         WHERE c.depth < 64 \
                     ) SELECT a.name FROM chain c JOIN agents a ON a.id = c.agent_id ORDER BY c.depth",
                )
                .bind(task.to_string())
                .fetch_all(&mut *conn)
                .await?;
                Ok(names)
            }

            /// Why `voter` may not vote on `current` now, if they may not (the checks of
            /// `vote_approval`, shared with `check_vote`).
            async fn vote_refusal(
                conn: &mut <$db as sqlx::Database>::Connection,
                current: &crate::Approval,
                voter: &warden_core::Email,
                now: chrono::DateTime<chrono::Utc>,
            ) -> crate::Result<()> {
                let id = current.id;
                if current.state != crate::ApprovalState::Pending {
                    return Err(crate::StoreError::Conflict(format!(
                        "approval request `{id}` is already {}", current.state.as_str()
                    )));
                }
                if current.expires_at <= now {
                    // Refused, and left for the expiry sweep to mark and record: an expiry written
                    // here would never reach the ledger.
                    return Err(crate::StoreError::Conflict(format!(
                        "approval request `{id}` expired at {}", current.expires_at.to_rfc3339()
                    )));
                }
                // Separation of duties over the whole delegation chain: the owners (now) of the acting
                // agent and of every agent its task was delegated from. The chain recorded when the
                // request was opened, and the one the tasks' links give now (the same, unless the
                // request predates recorded chains).
                let mut chain: Vec<String> = current.chain.iter().map(|a| a.as_str().to_owned()).collect();
                for a in Self::delegation_chain(&mut *conn, current.task_id).await? {
                    if !chain.contains(&a) {
                        chain.push(a);
                    }
                }
                if !chain.iter().any(|a| a == current.agent.as_str()) {
                    chain.insert(0, current.agent.as_str().to_owned());
                }
                if !current.owners_may_approve {
                    let mut owned = Vec::new();
                    for agent in &chain {
                        let owns: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM agent_owners o JOIN agents a ON a.id = o.agent_id WHERE a.name = $1 AND o.human_email = $2",
                        )
                        .bind(agent)
                        .bind(voter.as_str())
                        .fetch_one(&mut *conn)
                        .await?;
                        if owns > 0 {
                            owned.push(agent.as_str());
                        }
                    }
                    if let Some(first) = owned.first() {
                        let how = if *first == current.agent.as_str() {
                            format!("owns agent `{first}`")
                        } else {
                            format!(
                                "owns agent `{first}`, which delegated the task of `{}` (delegation chain: {})",
                                current.agent,
                                chain.join(" <- ")
                            )
                        };
                        return Err(crate::StoreError::Conflict(format!(
                            "`{voter}` {how} and may not decide approval request `{id}` (separation of duties)"
                        )));
                    }
                }
                // Eligibility narrowed by policy (`@approvers`): the approver must be named by every
                // approval policy behind the request, by address or as the upstream's owner.
                if !current.approvers.is_empty() {
                    let upstream_owner: Option<String> = match &current.upstream {
                        Some(u) => sqlx::query_scalar("SELECT owner_email FROM upstreams WHERE name = $1")
                            .bind(u)
                            .fetch_optional(&mut *conn)
                            .await?,
                        None => None,
                    };
                    if let Some(names) = current.approvers.iter().find(|names| {
                        !names.iter().any(|n| {
                            n == voter.as_str()
                                || (n == crate::UPSTREAM_OWNER && upstream_owner.as_deref() == Some(voter.as_str()))
                        })
                    }) {
                        return Err(crate::StoreError::Forbidden(format!(
                            "`{voter}` is not among the approvers policy names for approval request `{id}` ({})",
                            names.join(", ")
                        )));
                    }
                }
                let voted: Option<String> = sqlx::query_scalar("SELECT vote FROM approval_votes WHERE approval_id = $1 AND approver = $2")
                    .bind(id.to_string())
                    .bind(voter.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(v) = voted {
                    return Err(crate::StoreError::Conflict(format!(
                        "`{voter}` already voted `{v}` on approval request `{id}`; nobody decides twice"
                    )));
                }
                Ok(())
            }

            async fn open_approval(&self, new: &crate::NewApproval) -> crate::Result<(crate::Approval, bool)> {
                let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                // A pending request past its expiry is over; it is never reused.
                sqlx::query("UPDATE approvals SET state = 'expired' WHERE request_key = $1 AND state = 'pending' AND expires_at <= $2")
                    .bind(&new.request_key)
                    .bind(crate::sql::ts(new.created_at))
                    .execute(&mut *tx)
                    .await?;
                let existing: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT id FROM approvals WHERE request_key = $1 AND state = 'pending'{}",
                    $for_update
                ))
                .bind(&new.request_key)
                .fetch_optional(&mut *tx)
                .await?;
                let (id, created) = match existing {
                    Some(id) => (crate::sql::uuid_col(&id)?, false),
                    None => {
                        // The delegation chain from Warden's own record of the task, never from the caller.
                        let chain = Self::delegation_chain(&mut tx, new.task_id).await?;
                        let chain = serde_json::to_string(&chain).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                        let policies = serde_json::to_string(&new.policies).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                        let arguments = new.arguments.as_ref().map(|a| a.to_string());
                        let approvers = serde_json::to_string(&new.approvers).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                        sqlx::query(
                            "INSERT INTO approvals (id, request_key, agent_name, task_id, action, resource, upstream, args_digest, \
                             arguments, reason, policies, policy_version, quorum, single_use, owners_may_approve, state, approvals, \
                             created_at, expires_at, approvers, chain) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'pending', 0, $16, $17, $18, $19)",
                        )
                        .bind(new.id.to_string())
                        .bind(&new.request_key)
                        .bind(new.agent.as_str())
                        .bind(new.task_id.to_string())
                        .bind(&new.action)
                        .bind(&new.resource)
                        .bind(&new.upstream)
                        .bind(&new.args_digest)
                        .bind(arguments)
                        .bind(&new.reason)
                        .bind(policies)
                        .bind(&new.policy_version)
                        .bind(i64::from(new.quorum))
                        .bind(new.single_use)
                        .bind(new.owners_may_approve)
                        .bind(crate::sql::ts(new.created_at))
                        .bind(crate::sql::ts(new.expires_at))
                        .bind(approvers)
                        .bind(chain)
                        .execute(&mut *tx)
                        .await?;
                        (new.id, true)
                    }
                };
                let approval = Self::approval_in(&mut tx, id).await?.ok_or_else(|| crate::StoreError::not_found("approval", id))?;
                tx.commit().await?;
                Ok((approval, created))
            }

            async fn insert_join_token(
                tx: &mut crate::write::WriteTx<$db>,
                agent_id: &str,
                join: &crate::JoinTokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                // Older unused tokens stop working: only the newest join token enrolls.
                sqlx::query("DELETE FROM join_tokens WHERE agent_id = $1 AND used_at IS NULL")
                    .bind(agent_id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO join_tokens (token_hash, agent_id, created_at, created_by, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(join.hash.as_str())
                .bind(agent_id)
                .bind(crate::sql::ts(ctx.at))
                .bind(&ctx.actor)
                .bind(crate::sql::ts(join.expires_at))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn task_by_id<'c, E>(exec: E, id: uuid::Uuid, lock: bool) -> crate::Result<Option<warden_core::Task>>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                // A row lock needs `FOR UPDATE OF t` (the join reads agents too, which it must not lock).
                let suffix = if lock && $backend == crate::Backend::Postgres { " FOR UPDATE OF t" } else { "" };
                let row = sqlx::query(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks t JOIN agents a ON a.id = t.agent_id WHERE t.id = $1{suffix}"
                ))
                .bind(id.to_string())
                .fetch_optional(exec)
                .await?;
                row.as_ref().map(decode::task).transpose()
            }

            async fn insert_token(
                tx: &mut crate::write::WriteTx<$db>,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, human_email, label, token_hash, created_at, created_by, expires_at, \
                     minted_by, personal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(token.id.to_string())
                .bind(token.human.as_str())
                .bind(&token.label)
                .bind(token.hash.as_str())
                .bind(crate::sql::ts(ctx.at))
                .bind(&ctx.actor)
                .bind(crate::sql::ts(token.expires_at))
                .bind(token.minted_by.map(|m| m.to_string()))
                .bind(token.personal)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Announces registry changes at commit (PostgreSQL `NOTIFY`; a no-op on SQLite) and returns
            /// the whole event, for [`Self::emit`] after commit. Tools go in chunks so each payload stays
            /// well under NOTIFY's 8000 bytes (a key is at most 63 + 1 + 128 characters, escaped).
            async fn notify_registry(
                tx: &mut crate::write::WriteTx<$db>,
                agents: Vec<String>,
                upstreams: Vec<String>,
                tools: Vec<String>,
                secrets: Vec<String>,
            ) -> crate::Result<crate::StoreEvent> {
                const TOOLS_PER_NOTIFY: usize = 20;
                let mut chunks = tools.chunks(TOOLS_PER_NOTIFY);
                let first = crate::StoreEvent::RegistryChanged {
                    agents: agents.clone(),
                    upstreams: upstreams.clone(),
                    tools: chunks.next().unwrap_or_default().to_vec(),
                    secrets: secrets.clone(),
                };
                Self::notify(tx, &first).await?;
                for chunk in chunks {
                    let more = crate::StoreEvent::RegistryChanged {
                        agents: vec![],
                        upstreams: vec![],
                        tools: chunk.to_vec(),
                        secrets: vec![],
                    };
                    Self::notify(tx, &more).await?;
                }
                Ok(crate::StoreEvent::RegistryChanged { agents, upstreams, tools, secrets })
            }

            /// One catalogued tool, read in the transaction and, when `lock`, locked.
            async fn tool_in(
                tx: &mut crate::write::WriteTx<$db>,
                upstream: &warden_core::UpstreamName,
                name: &str,
                lock: bool,
            ) -> crate::Result<Option<crate::ToolRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {TOOL_COLUMNS} FROM tools WHERE upstream_name = $1 AND name = $2{}",
                    if lock { $for_update } else { "" }
                ))
                .bind(upstream.as_str())
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?;
                row.as_ref().map(decode::tool).transpose()
            }

            /// The tool, locked, or not found naming it.
            async fn tool_for_update(
                tx: &mut crate::write::WriteTx<$db>,
                upstream: &warden_core::UpstreamName,
                name: &str,
            ) -> crate::Result<crate::ToolRecord> {
                Self::tool_in(tx, upstream, name, true)
                    .await?
                    .ok_or_else(|| crate::StoreError::not_found("tool", format!("{upstream}/{name}")))
            }

            /// One secret's metadata, locked, or not found naming it.
            async fn secret_for_update(
                tx: &mut crate::write::WriteTx<$db>,
                name: &warden_core::SecretName,
            ) -> crate::Result<crate::SecretInfo> {
                let row = sqlx::query(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1{}", $for_update))
                    .bind(name.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| crate::StoreError::not_found("secret", name))?;
                decode::secret_info(&row)
            }

            /// Checks a sealed value's shape (the store cannot check more: it never opens it).
            fn check_sealed(key_id: &str, nonce: &[u8], ciphertext: &[u8]) -> crate::Result<()> {
                let invalid = |field: &str, m: String| -> crate::Result<()> {
                    Err(warden_core::ValidationError::new(field, m).into())
                };
                if key_id.is_empty() || key_id.len() > crate::MAX_KEY_ID_LEN || !key_id.chars().all(|c| c.is_ascii_graphic()) {
                    return invalid(
                        "key_id",
                        format!("key id must be 1 to {} visible ASCII characters", crate::MAX_KEY_ID_LEN),
                    );
                }
                if nonce.is_empty() || nonce.len() > crate::MAX_NONCE_LEN {
                    return invalid(
                        "nonce",
                        format!("nonce is {} bytes long; it must be 1 to {}", nonce.len(), crate::MAX_NONCE_LEN),
                    );
                }
                if ciphertext.is_empty() || ciphertext.len() > crate::MAX_CIPHERTEXT_LEN {
                    return invalid(
                        "ciphertext",
                        format!(
                            "ciphertext is {} bytes long; it must be 1 to {}",
                            ciphertext.len(),
                            crate::MAX_CIPHERTEXT_LEN
                        ),
                    );
                }
                Ok(())
            }

            /// Whether observing `digest` changes nothing: it is the approved definition, or exactly
            /// the one already pending. So a quarantined tool whose upstream serves the approved
            /// definition again stays quarantined with its pending definition: only an admin
            /// re-activates it (see [`crate::Store::observe_tools`]).
            fn tool_unchanged(tool: &crate::ToolRecord, digest: &str) -> bool {
                tool.digest.as_deref() == Some(digest) || tool.pending_digest.as_deref() == Some(digest)
            }

            /// What each catalogued tool looks like without its name, by name: the shapes of its
            /// approved and pending definitions and its approved description (normalised).
            fn looks(known: &std::collections::HashMap<String, crate::ToolRecord>) -> Vec<crate::sql::Look> {
                let mut looks: Vec<crate::sql::Look> = known
                    .values()
                    .map(|k| crate::sql::Look {
                        name: k.name.clone(),
                        shapes: [k.definition.as_ref(), k.pending_definition.as_ref()]
                            .into_iter()
                            .flatten()
                            .filter_map(warden_gateway::tools::shape_digest)
                            .collect(),
                        description: k.definition.as_ref().and_then(warden_gateway::tools::description_key),
                    })
                    .collect();
                looks.sort_by(|a, b| a.name.cmp(&b.name));
                looks
            }

            /// Whether a new name is a catalogued tool renamed (the same definition without its
            /// name; approved or pending) or shadows an approved one (its description): the cause
            /// and the tool it resembles, the first by name. A rename wins over a shadow.
            fn resemblance(looks: &[crate::sql::Look], t: &crate::ObservedTool) -> Option<(warden_core::QuarantineCause, String)> {
                if looks.is_empty() {
                    return None;
                }
                if let Some(shape) = warden_gateway::tools::shape_digest(&t.definition) {
                    if let Some(k) = looks.iter().find(|k| k.shapes.contains(&shape)) {
                        return Some((warden_core::QuarantineCause::Renamed, k.name.clone()));
                    }
                }
                let description = warden_gateway::tools::description_key(&t.definition)?;
                looks
                    .iter()
                    .find(|k| k.description.as_deref().is_some_and(|d| warden_gateway::tools::shadows(&description, d)))
                    .map(|k| (warden_core::QuarantineCause::Shadows, k.name.clone()))
            }

            /// Checks an observed listing: valid names and digests, each name once.
            fn check_observed(seen: &[crate::ObservedTool]) -> crate::Result<()> {
                let mut names = std::collections::HashSet::with_capacity(seen.len());
                for (i, t) in seen.iter().enumerate() {
                    warden_core::gateway::check_tool_name(&format!("seen[{i}].name"), &t.name)?;
                    warden_core::gateway::check_digest(&format!("seen[{i}].digest"), &t.digest)?;
                    if !names.insert(t.name.as_str()) {
                        return Err(warden_core::ValidationError::new(
                            format!("seen[{i}].name"),
                            format!("tool `{}` is listed twice", t.name),
                        )
                        .into());
                    }
                }
                Ok(())
            }

            async fn insert_human(
                tx: &mut crate::write::WriteTx<$db>,
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
                    disabled_at: None,
                    disabled_by: None,
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
                self.guarded(crate::sql::Call::Read, async {
                    if self.health.failure().is_some() {
                        // Failed: a write proves whether it still is (at most once per probe interval).
                        crate::write::WriteTx::<$db>::probe(&self.write, &self.health, $begin).await?;
                    }
                    sqlx::query("SELECT 1").execute(&self.read).await?;
                    // The writer too: a healthy reader over a wedged writer is not a healthy store.
                    sqlx::query("SELECT 1").execute(&self.write).await?;
                    Ok(())
                })
                .await
            }

            async fn create_human(
                &self,
                new: &warden_core::NewHuman,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Human> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let human = Self::insert_human(&mut tx, new, ctx).await?;
                    tx.commit().await?;
                    Ok(human)
                })
                .await
            }

            async fn get_human(&self, email: &warden_core::Email) -> crate::Result<Option<warden_core::Human>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query(&format!("SELECT {HUMAN_COLUMNS} FROM humans WHERE email = $1"))
                        .bind(email.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                    row.as_ref().map(decode::human).transpose()
                })
                .await
            }

            async fn list_humans(&self) -> crate::Result<Vec<warden_core::Human>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!("SELECT {HUMAN_COLUMNS} FROM humans ORDER BY email"))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter().map(decode::human).collect()
                })
                .await
            }

            async fn bootstrap_admin(
                &self,
                admin: &warden_core::NewHuman,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<bool> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                })
                .await
            }

            async fn create_api_token(
                &self,
                token: &crate::TokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::ApiTokenInfo> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let human = sqlx::query("SELECT 1 FROM humans WHERE email = $1")
                        .bind(token.human.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if human.is_none() {
                        return Err(crate::StoreError::not_found("human", &token.human));
                    }
                    if let Some(claimed) = token.claims {
                        // One claim per issued token: the row is locked, and a claimed token is revoked.
                        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1{}", $for_update))
                            .bind(claimed.to_string())
                            .fetch_optional(&mut *tx)
                            .await?
                            .ok_or_else(|| crate::StoreError::not_found("token", claimed))?;
                        let issued = decode::token(&row)?;
                        if issued.human != token.human {
                            return Err(crate::StoreError::Conflict(format!(
                                "token `{claimed}` is not a token of `{}`; only its holder claims it", token.human
                            )));
                        }
                        if issued.personal {
                            return Err(crate::StoreError::Conflict(format!(
                                "token `{claimed}` is `{}`'s own token already; there is nothing to claim", token.human
                            )));
                        }
                        if issued.revoked_at.is_some() {
                            return Err(crate::StoreError::Conflict(format!(
                                "token `{claimed}` is revoked (claimed already?); ask an admin for a new one"
                            )));
                        }
                        sqlx::query("UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3")
                            .bind(crate::sql::ts(ctx.at))
                            .bind(format!("claimed by {} as token {}", ctx.actor, token.id))
                            .bind(claimed.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    Self::insert_token(&mut tx, token, ctx).await?;
                    tx.commit().await?;
                    self.get_api_token(token.id).await?.ok_or_else(|| crate::StoreError::not_found("token", token.id))
                })
                .await
            }

            async fn list_api_tokens(&self, human: &warden_core::Email) -> crate::Result<Vec<warden_core::ApiTokenInfo>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.human_email = $1 ORDER BY t.created_at, t.id"
                    ))
                    .bind(human.as_str())
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::token).collect()
                })
                .await
            }

            async fn get_api_token(&self, id: uuid::Uuid) -> crate::Result<Option<warden_core::ApiTokenInfo>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1"))
                        .bind(id.to_string())
                        .fetch_optional(&self.write)
                        .await?;
                    row.as_ref().map(decode::token).transpose()
                })
                .await
            }

            async fn revoke_api_token(
                &self,
                id: uuid::Uuid,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::RevokedToken> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                    // Every live token minted from it, transitively.
                    let by = format!("{} (with token {id}, which minted it)", ctx.actor);
                    let minted = Self::revoke_minted(&mut tx, "SELECT $1", &id.to_string(), crate::sql::ts(ctx.at), &by).await?;
                    tx.commit().await?;
                    let minted_revoked = minted.iter().map(|m| crate::sql::uuid_col(m)).collect::<crate::Result<Vec<_>>>()?;
                    Ok(crate::RevokedToken { token, minted_revoked })
                })
                .await
            }

            async fn find_token(
                &self,
                hash: &warden_core::token::TokenHash,
            ) -> crate::Result<Option<crate::TokenOwner>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.token_hash = $1"))
                        .bind(hash.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                    let Some(row) = row else { return Ok(None) };
                    let token = decode::token(&row)?;
                    let human = crate::Store::get_human(self, &token.human)
                        .await?
                        .ok_or_else(|| crate::StoreError::Corrupt(format!("token `{}` belongs to no human", token.id)))?;
                    Ok(Some(crate::TokenOwner { human, token }))
                })
                .await
            }

            async fn create_upstream(
                &self,
                new: &warden_core::NewUpstream,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Upstream> {
                self.guarded(crate::sql::Call::Write, async {
                    new.validate()?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                    let registry_event = crate::StoreEvent::RegistryChanged { agents: vec![], upstreams: vec![new.name.to_string()], tools: vec![], secrets: vec![] };
                    Self::notify(&mut tx, &registry_event).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    Ok(up)
                })
                .await
            }

            async fn get_upstream(&self, name: &warden_core::UpstreamName) -> crate::Result<Option<warden_core::Upstream>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query("SELECT * FROM upstreams WHERE name = $1")
                        .bind(name.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                    row.as_ref().map(decode::upstream).transpose()
                })
                .await
            }

            async fn list_upstreams(&self) -> crate::Result<Vec<warden_core::Upstream>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query("SELECT * FROM upstreams ORDER BY name").fetch_all(&self.read).await?;
                    rows.iter().map(decode::upstream).collect()
                })
                .await
            }

            async fn remove_upstream(
                &self,
                name: &warden_core::UpstreamName,
                _ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Upstream> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                    // Secrets were put there deliberately: they go only when deleted deliberately.
                    let secrets: Vec<String> = sqlx::query_scalar("SELECT name FROM secrets WHERE upstream_name = $1 ORDER BY name")
                        .bind(name.as_str())
                        .fetch_all(&mut *tx)
                        .await?;
                    if !secrets.is_empty() {
                        let names: Vec<String> = secrets.iter().map(|s| format!("`{s}`")).collect();
                        return Err(crate::StoreError::Conflict(format!(
                            "upstream `{name}` still holds secret(s) {}; delete them first with `warden secret delete`",
                            names.join(", ")
                        )));
                    }
                    // The tool catalogue is what the upstream showed: it goes with it, re-learned on first sight.
                    let tools: Vec<String> = sqlx::query_scalar("DELETE FROM tools WHERE upstream_name = $1 RETURNING name")
                        .bind(name.as_str())
                        .fetch_all(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM upstreams WHERE name = $1").bind(name.as_str()).execute(&mut *tx).await?;
                    let tools = tools.iter().map(|t| format!("{name}/{t}")).collect();
                    let registry_event = Self::notify_registry(&mut tx, vec![], vec![name.to_string()], tools, vec![]).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    Ok(up)
                })
                .await
            }

            async fn create_agent(
                &self,
                new: &warden_core::AgentRegistration,
                trust_domain: &warden_core::TrustDomain,
                join: &crate::JoinTokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Agent> {
                self.guarded(crate::sql::Call::Write, async {
                    new.validate()?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                        default_intent: None,
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
                    Self::insert_join_token(&mut tx, &id, join, ctx).await?;
                    let registry_event = crate::StoreEvent::RegistryChanged { agents: vec![new.name.to_string()], upstreams: vec![], tools: vec![], secrets: vec![] };
                    Self::notify(&mut tx, &registry_event).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    Ok(agent)
                })
                .await
            }

            async fn get_agent(&self, name: &warden_core::AgentName) -> crate::Result<Option<warden_core::Agent>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.name = $1"))
                        .bind(name.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                    let Some(row) = row else { return Ok(None) };
                    let mut agents = [decode::agent(&row)?];
                    self.attach_lists(&mut agents).await?;
                    let [agent] = agents;
                    Ok(Some(agent))
                })
                .await
            }

            async fn list_agents(&self, filter: &crate::AgentFilter) -> crate::Result<Vec<warden_core::Agent>> {
                self.guarded(crate::sql::Call::Read, async {
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
                })
                .await
            }

            async fn update_agent(
                &self,
                name: &warden_core::AgentName,
                update: &warden_core::AgentUpdate,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::AgentChange> {
                self.guarded(crate::sql::Call::Write, async {
                    update.validate()?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let mut agent = Self::agent_for_update(&mut tx, name).await?;
                    let (next, invalidated) = agent
                        .state
                        .after_update(update, &agent)
                        .map_err(|e| crate::StoreError::Conflict(format!("agent `{name}`: {e}")))?;
                    let id = agent.id.to_string();
                    let narrowing = crate::narrowing::Narrowing::of(&agent, update);
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
                    if let Some(i) = &update.default_intent {
                        agent.default_intent = (!i.is_null()).then(|| i.clone());
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
                         state_changed_at = $5, state_changed_by = $6, updated_at = $7, updated_by = $8, \
                         default_intent = $10 WHERE id = $9",
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
                    .bind(agent.default_intent.as_ref().map(|v| v.to_string()))
                    .execute(&mut *tx)
                    .await?;
                    // A change that narrows the agent ends the live tasks it narrows, with their
                    // delegation trees, in this transaction (see `crate::narrowing`).
                    let (revoked, tasks_ended) = if let Some(why) = &invalidated {
                        (Self::revoke_task_tree(&mut tx, "agent_id = $1", &id, why, ctx).await?, invalidated.clone())
                    } else if let Some(why) = narrowing.ends_every_task(ctx) {
                        (Self::revoke_task_tree(&mut tx, "agent_id = $1", &id, &why, ctx).await?, Some(why))
                    } else if !narrowing.removed_upstreams.is_empty() {
                        let rows = sqlx::query("SELECT id, intent FROM tasks WHERE agent_id = $1 AND state = 'active'")
                            .bind(&id)
                            .fetch_all(&mut *tx)
                            .await?;
                        let why = narrowing.upstreams_reason(ctx);
                        let mut revoked = Vec::new();
                        for row in &rows {
                            use sqlx::Row as _;
                            let intent: &str = row.try_get("intent")?;
                            if narrowing.task_is_narrowed(intent) {
                                let task: &str = row.try_get("id")?;
                                for t in Self::revoke_task_tree(&mut tx, "id = $1", task, &why, ctx).await? {
                                    if !revoked.contains(&t) {
                                        revoked.push(t);
                                    }
                                }
                            }
                        }
                        let ended = (!revoked.is_empty()).then_some(why);
                        (revoked, ended)
                    } else {
                        (Vec::new(), None)
                    };
                    Self::notify_revoked(&mut tx, &revoked).await?;
                    let registry_event = crate::StoreEvent::RegistryChanged { agents: vec![name.to_string()], upstreams: vec![], tools: vec![], secrets: vec![] };
                    Self::notify(&mut tx, &registry_event).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    if !revoked.is_empty() {
                        self.emit(crate::StoreEvent::TasksRevoked { ids: revoked.clone() });
                    }
                    Ok(crate::AgentChange { agent, credentials_invalidated: invalidated, revoked_tasks: revoked, tasks_ended })
                })
                .await
            }

            async fn transition_agent(
                &self,
                name: &warden_core::AgentName,
                action: warden_core::LifecycleAction,
                reason: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::AgentChange> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
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
                    let invalidated = match next {
                        warden_core::AgentState::Suspended | warden_core::AgentState::Retired => {
                            Some(format!("agent {next} by {}", ctx.actor))
                        }
                        _ => None,
                    };
                    let revoked = match &invalidated {
                        Some(why) => Self::revoke_task_tree(&mut tx, "agent_id = $1", &id, why, ctx).await?,
                        None => Vec::new(),
                    };
                    Self::notify_revoked(&mut tx, &revoked).await?;
                    let registry_event = crate::StoreEvent::RegistryChanged { agents: vec![name.to_string()], upstreams: vec![], tools: vec![], secrets: vec![] };
                    Self::notify(&mut tx, &registry_event).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    if !revoked.is_empty() {
                        self.emit(crate::StoreEvent::TasksRevoked { ids: revoked.clone() });
                    }
                    agent.state = next;
                    agent.state_changed_at = at;
                    agent.state_changed_by = ctx.actor.clone();
                    agent.updated_at = at;
                    agent.updated_by = ctx.actor.clone();
                    Ok(crate::AgentChange { agent, tasks_ended: invalidated.clone(), credentials_invalidated: invalidated, revoked_tasks: revoked })
                })
                .await
            }

            async fn agent_history(
                &self,
                name: &warden_core::AgentName,
            ) -> crate::Result<Vec<warden_core::AgentStateChange>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(
                        "SELECT c.from_state, c.to_state, c.at, c.by_actor, c.reason FROM agent_state_changes c \
                         JOIN agents a ON a.id = c.agent_id WHERE a.name = $1 ORDER BY c.seq",
                    )
                    .bind(name.as_str())
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::state_change).collect()
                })
                .await
            }

            async fn issue_join_token(
                &self,
                agent: &warden_core::AgentName,
                join: &crate::JoinTokenRecord,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let found = Self::agent_for_update(&mut tx, agent).await?;
                    if found.state == warden_core::AgentState::Retired {
                        return Err(crate::StoreError::Conflict(format!("agent `{agent}` is retired and cannot enroll")));
                    }
                    Self::insert_join_token(&mut tx, &found.id.to_string(), join, ctx).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn enroll_agent(
                &self,
                join: &warden_core::token::TokenHash,
                key: &crate::AgentKey,
                now: chrono::DateTime<chrono::Utc>,
            ) -> crate::Result<warden_core::Agent> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let row = sqlx::query(&format!(
                        "SELECT j.agent_id, j.expires_at, j.used_at, a.name FROM join_tokens j \
                         JOIN agents a ON a.id = j.agent_id WHERE j.token_hash = $1{}",
                        if $backend == crate::Backend::Postgres { " FOR UPDATE OF j" } else { "" }
                    ))
                    .bind(join.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| crate::StoreError::NotFound { what: "join token", key: "(presented)".into() })?;
                    let used: Option<chrono::DateTime<chrono::Utc>> = row.try_get("used_at")?;
                    if used.is_some() {
                        return Err(crate::StoreError::Conflict("the join token has already been used".into()));
                    }
                    let expires: chrono::DateTime<chrono::Utc> = row.try_get("expires_at")?;
                    if now >= expires {
                        return Err(crate::StoreError::Conflict("the join token has expired".into()));
                    }
                    let agent_id: String = row.try_get("agent_id")?;
                    let name: warden_core::AgentName = crate::sql::parse_col("name", row.try_get::<&str, _>("name")?)?;
                    let agent = Self::agent_for_update(&mut tx, &name).await?;
                    if agent.state == warden_core::AgentState::Retired {
                        return Err(crate::StoreError::Conflict(format!("agent `{name}` is retired and cannot enroll")));
                    }
                    let at = crate::sql::ts(now);
                    sqlx::query("UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2")
                        .bind(at)
                        .bind(join.as_str())
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE agent_keys SET revoked_at = $1 WHERE agent_id = $2 AND revoked_at IS NULL")
                        .bind(at)
                        .bind(&agent_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO agent_keys (kid, agent_id, public_x, created_at) VALUES ($1, $2, $3, $4)")
                        .bind(&key.kid)
                        .bind(&agent_id)
                        .bind(&key.public_x)
                        .bind(crate::sql::ts(key.created_at))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(agent)
                })
                .await
            }

            async fn agent_by_spiffe_id(
                &self,
                spiffe_id: &str,
            ) -> crate::Result<Option<(warden_core::Agent, Option<crate::AgentKey>)>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.spiffe_id = $1"))
                        .bind(spiffe_id)
                        .fetch_optional(&self.read)
                        .await?;
                    let Some(row) = row else { return Ok(None) };
                    let mut agents = [decode::agent(&row)?];
                    self.attach_lists(&mut agents).await?;
                    let [agent] = agents;
                    let key = sqlx::query(
                        "SELECT kid, public_x, created_at FROM agent_keys WHERE agent_id = $1 AND revoked_at IS NULL",
                    )
                    .bind(agent.id.to_string())
                    .fetch_optional(&self.read)
                    .await?
                    .map(|r| -> crate::Result<crate::AgentKey> {
                        Ok(crate::AgentKey {
                            kid: r.try_get("kid")?,
                            public_x: r.try_get("public_x")?,
                            created_at: r.try_get("created_at")?,
                        })
                    })
                    .transpose()?;
                    Ok(Some((agent, key)))
                })
                .await
            }

            async fn remember_jti(
                &self,
                issuer: &str,
                jti: &str,
                expires_at: chrono::DateTime<chrono::Utc>,
            ) -> crate::Result<bool> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let done = sqlx::query(
                        "INSERT INTO used_jtis (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(issuer)
                    .bind(jti)
                    .bind(crate::sql::ts(expires_at))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn purge_expired_jtis(&self, now: chrono::DateTime<chrono::Utc>) -> crate::Result<u64> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let done = sqlx::query("DELETE FROM used_jtis WHERE expires_at < $1")
                        .bind(crate::sql::ts(now))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                })
                .await
            }

            async fn create_task(
                &self,
                new: &crate::NewTask,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<warden_core::Task> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    // Locks the agent row: a concurrent suspension waits, or this waits for it and then
                    // sees the new state.
                    let agent = Self::agent_for_update(&mut tx, &new.agent).await?;
                    if agent.state != warden_core::AgentState::Active {
                        return Err(crate::StoreError::Conflict(format!(
                            "agent `{}` is {}; only active agents start tasks",
                            agent.name, agent.state
                        )));
                    }
                    if let Some(parent_id) = new.parent_id {
                        let parent = Self::task_by_id(&mut *tx, parent_id, true)
                            .await?
                            .ok_or_else(|| crate::StoreError::not_found("task", parent_id))?;
                        if !parent.is_live_at(ctx.at) {
                            return Err(crate::StoreError::Conflict(format!("parent task `{parent_id}` is not active")));
                        }
                        if new.depth != parent.depth.saturating_add(1) || new.expires_at > parent.expires_at {
                            return Err(crate::StoreError::Conflict(
                                "a delegated task must be one level deeper than its parent and end no later".into(),
                            ));
                        }
                    }
                    let intent = serde_json::to_string(&new.intent).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                    let act = new
                        .act
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                    sqlx::query(
                        "INSERT INTO tasks (id, agent_id, parent_id, depth, intent, act, cnf_jkt, state, created_at, \
                         created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $10)",
                    )
                    .bind(new.id.to_string())
                    .bind(agent.id.to_string())
                    .bind(new.parent_id.map(|p| p.to_string()))
                    .bind(i64::from(new.depth))
                    .bind(intent)
                    .bind(act)
                    .bind(&new.cnf_jkt)
                    .bind(crate::sql::ts(ctx.at))
                    .bind(&ctx.actor)
                    .bind(crate::sql::ts(new.expires_at))
                    .execute(&mut *tx)
                    .await?;
                    let task = Self::task_by_id(&mut *tx, new.id, false)
                        .await?
                        .ok_or_else(|| crate::StoreError::Internal("inserted task not found".into()))?;
                    tx.commit().await?;
                    Ok(task)
                })
                .await
            }

            async fn get_task(&self, id: uuid::Uuid) -> crate::Result<Option<warden_core::Task>> {
                self.guarded(crate::sql::Call::Read, async {
                    Self::task_by_id(&self.read, id, false).await
                })
                .await
            }

            async fn list_tasks(&self, filter: &crate::TaskFilter) -> crate::Result<Vec<warden_core::Task>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!(
                        "SELECT {TASK_COLUMNS} FROM tasks t JOIN agents a ON a.id = t.agent_id \
                         WHERE (CAST($1 AS TEXT) IS NULL OR a.name = $1) AND (CAST($2 AS TEXT) IS NULL OR t.state = $2) \
                         ORDER BY t.created_at DESC, t.id LIMIT 1000"
                    ))
                    .bind(filter.agent.as_ref().map(|a| a.as_str()))
                    .bind(filter.state.map(|s| s.as_str()))
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::task).collect()
                })
                .await
            }

            async fn end_task(
                &self,
                id: uuid::Uuid,
                reason: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<Vec<uuid::Uuid>> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let task = Self::task_by_id(&mut *tx, id, true)
                        .await?
                        .ok_or_else(|| crate::StoreError::not_found("task", id))?;
                    if task.state != warden_core::TaskState::Active {
                        return Err(crate::StoreError::Conflict(format!("task `{id}` is already {}", task.state)));
                    }
                    sqlx::query("UPDATE tasks SET state = 'ended', ended_at = $1, ended_by = $2, end_reason = $3 WHERE id = $4")
                        .bind(crate::sql::ts(ctx.at))
                        .bind(&ctx.actor)
                        .bind(reason)
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                    let why = format!("parent task {id} ended");
                    let mut stopped = vec![id];
                    stopped.extend(Self::revoke_task_tree(&mut tx, "parent_id = $1", &id.to_string(), &why, ctx).await?);
                    Self::notify_revoked(&mut tx, &stopped).await?;
                    tx.commit().await?;
                    self.emit(crate::StoreEvent::TasksRevoked { ids: stopped.clone() });
                    Ok(stopped)
                })
                .await
            }

            async fn publish_signing_key(&self, key: &crate::SigningKeyRecord) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    sqlx::query(
                        "INSERT INTO signing_keys (kid, public_x, node, created_at, retire_after) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (kid) DO NOTHING",
                    )
                    .bind(&key.kid)
                    .bind(&key.public_x)
                    .bind(&key.node)
                    .bind(crate::sql::ts(key.created_at))
                    .bind(key.retire_after.map(crate::sql::ts))
                    .execute(&mut *tx)
                    .await?;
                    Self::notify(&mut tx, &crate::StoreEvent::SigningKeysChanged).await?;
                    tx.commit().await?;
                    self.emit(crate::StoreEvent::SigningKeysChanged);
                    Ok(())
                })
                .await
            }

            async fn retire_signing_key(&self, kid: &str, retire_after: chrono::DateTime<chrono::Utc>) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let done = sqlx::query(
                        "UPDATE signing_keys SET retire_after = $1 WHERE kid = $2 AND (retire_after IS NULL OR retire_after > $1)",
                    )
                    .bind(crate::sql::ts(retire_after))
                    .bind(kid)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        let exists = sqlx::query("SELECT 1 FROM signing_keys WHERE kid = $1").bind(kid).fetch_optional(&mut *tx).await?;
                        if exists.is_none() {
                            return Err(crate::StoreError::not_found("signing key", kid));
                        }
                    }
                    Self::notify(&mut tx, &crate::StoreEvent::SigningKeysChanged).await?;
                    tx.commit().await?;
                    self.emit(crate::StoreEvent::SigningKeysChanged);
                    Ok(())
                })
                .await
            }

            async fn signing_keys(&self) -> crate::Result<Vec<crate::SigningKeyRecord>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(
                        "SELECT kid, public_x, node, created_at, retire_after FROM signing_keys ORDER BY created_at, kid",
                    )
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::signing_key).collect()
                })
                .await
            }

            async fn remove_human(
                &self,
                email: &warden_core::Email,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::HumanRemoval> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let row = sqlx::query(&format!("SELECT {HUMAN_COLUMNS} FROM humans WHERE email = $1{}", $for_update))
                        .bind(email.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| crate::StoreError::not_found("human", email))?;
                    let mut human = decode::human(&row)?;
                    if human.disabled_at.is_some() {
                        return Err(crate::StoreError::Conflict(format!("human `{email}` was already removed")));
                    }
                    let at = crate::sql::ts(ctx.at);
                    sqlx::query("UPDATE humans SET disabled_at = $1, disabled_by = $2 WHERE email = $3")
                        .bind(at)
                        .bind(&ctx.actor)
                        .bind(email.as_str())
                        .execute(&mut *tx)
                        .await?;
                    human.disabled_at = Some(at);
                    human.disabled_by = Some(ctx.actor.clone());
                    // Every live token minted from one of the human's tokens goes with them, as when
                    // one token is revoked (`revoke_api_token`).
                    let by = format!("{} (with {email}, whose token minted it)", ctx.actor);
                    let minted = Self::revoke_minted(
                        &mut tx,
                        "SELECT id FROM api_tokens WHERE human_email = $1",
                        email.as_str(),
                        at,
                        &by,
                    )
                    .await?;
                    let tokens = sqlx::query(
                        "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE human_email = $3 AND revoked_at IS NULL",
                    )
                    .bind(at)
                    .bind(&ctx.actor)
                    .bind(email.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let tokens = tokens + minted.len() as u64;
                    let owned = sqlx::query(
                        "SELECT a.name FROM agent_owners o JOIN agents a ON a.id = o.agent_id WHERE o.human_email = $1 ORDER BY a.name",
                    )
                    .bind(email.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM agent_owners WHERE human_email = $1")
                        .bind(email.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let mut orphaned = Vec::new();
                    let mut revoked = Vec::new();
                    let why = format!("last owner {email} removed");
                    // An owner removed ends the agent's live tasks (see `crate::narrowing`); the last
                    // one also suspends the agent.
                    let narrowed = format!("agent narrowed by {}: owner `{email}` removed", ctx.actor);
                    for r in &owned {
                        let name: warden_core::AgentName = crate::sql::parse_col("name", r.try_get::<&str, _>("name")?)?;
                        let agent = Self::agent_for_update(&mut tx, &name).await?;
                        if agent.state == warden_core::AgentState::Retired {
                            continue;
                        }
                        let id = agent.id.to_string();
                        if !agent.owners.is_empty() {
                            revoked.extend(Self::revoke_task_tree(&mut tx, "agent_id = $1", &id, &narrowed, ctx).await?);
                            continue;
                        }
                        if agent.state != warden_core::AgentState::Suspended {
                            Self::write_history(&mut tx, &id, Some(agent.state), warden_core::AgentState::Suspended, &why, ctx).await?;
                            sqlx::query(
                                "UPDATE agents SET state = 'suspended', state_changed_at = $1, state_changed_by = $2, \
                                 updated_at = $1, updated_by = $2 WHERE id = $3",
                            )
                            .bind(at)
                            .bind(&ctx.actor)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                        }
                        revoked.extend(Self::revoke_task_tree(&mut tx, "agent_id = $1", &id, &why, ctx).await?);
                        orphaned.push(name);
                    }
                    Self::notify_revoked(&mut tx, &revoked).await?;
                    let registry_event = crate::StoreEvent::RegistryChanged { agents: owned.iter().filter_map(|r| r.try_get::<String, _>("name").ok()).collect(), upstreams: vec![], tools: vec![], secrets: vec![] };
                    Self::notify(&mut tx, &registry_event).await?;
                    tx.commit().await?;
                    self.emit(registry_event);
                    if !revoked.is_empty() {
                        self.emit(crate::StoreEvent::TasksRevoked { ids: revoked.clone() });
                    }
                    Ok(crate::HumanRemoval {
                        human,
                        revoked_api_tokens: usize::try_from(tokens).unwrap_or(usize::MAX),
                        orphaned_agents: orphaned,
                        revoked_tasks: revoked,
                    })
                })
                .await
            }

            async fn activate_policies(
                &self,
                policies: &crate::PolicyVersion,
                role: crate::PolicyRole,
                comment: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let files = serde_json::to_string(&policies.files).map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    sqlx::query(
                        "INSERT INTO policy_versions (version, files, created_at, created_by) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (version) DO NOTHING",
                    )
                    .bind(&policies.version)
                    .bind(files)
                    .bind(crate::sql::ts(ctx.at))
                    .bind(&ctx.actor)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("INSERT INTO policy_activations (version, role, at, by_actor, comment) VALUES ($1, $2, $3, $4, $5)")
                        .bind(&policies.version)
                        .bind(role.as_str())
                        .bind(crate::sql::ts(ctx.at))
                        .bind(&ctx.actor)
                        .bind(comment)
                        .execute(&mut *tx)
                        .await?;
                    Self::notify(&mut tx, &crate::StoreEvent::PoliciesChanged).await?;
                    tx.commit().await?;
                    self.emit(crate::StoreEvent::PoliciesChanged);
                    Ok(())
                })
                .await
            }

            async fn clear_shadow_policies(&self, comment: &str, ctx: &warden_core::ChangeContext) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    sqlx::query("INSERT INTO policy_activations (version, role, at, by_actor, comment) VALUES (NULL, 'shadow', $1, $2, $3)")
                        .bind(crate::sql::ts(ctx.at))
                        .bind(&ctx.actor)
                        .bind(comment)
                        .execute(&mut *tx)
                        .await?;
                    Self::notify(&mut tx, &crate::StoreEvent::PoliciesChanged).await?;
                    tx.commit().await?;
                    self.emit(crate::StoreEvent::PoliciesChanged);
                    Ok(())
                })
                .await
            }

            async fn current_policies(&self) -> crate::Result<crate::CurrentPolicies> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let mut current = crate::CurrentPolicies::default();
                    for role in [crate::PolicyRole::Active, crate::PolicyRole::Shadow] {
                        let row = sqlx::query(
                            "SELECT v.version, v.files, v.created_at, v.created_by FROM policy_activations a \
                             LEFT JOIN policy_versions v ON v.version = a.version \
                             WHERE a.role = $1 ORDER BY a.seq DESC LIMIT 1",
                        )
                        .bind(role.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                        let version = match row {
                            Some(r) => match r.try_get::<Option<String>, _>("version")? {
                                Some(version) => Some(crate::PolicyVersion {
                                    version,
                                    files: serde_json::from_str(r.try_get::<&str, _>("files")?)
                                        .map_err(|e| crate::StoreError::corrupt("files", e))?,
                                    created_at: r.try_get("created_at")?,
                                    created_by: r.try_get("created_by")?,
                                }),
                                None => None,
                            },
                            None => None,
                        };
                        match role {
                            crate::PolicyRole::Active => current.active = version,
                            crate::PolicyRole::Shadow => current.shadow = version,
                        }
                    }
                    Ok(current)
                })
                .await
            }

            async fn policy_history(&self, limit: u32) -> crate::Result<Vec<crate::PolicyActivation>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let rows = sqlx::query(
                        "SELECT seq, version, role, at, by_actor, comment FROM policy_activations ORDER BY seq DESC LIMIT $1",
                    )
                    .bind(i64::from(limit))
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            let role: String = r.try_get("role")?;
                            Ok(crate::PolicyActivation {
                                seq: r.try_get("seq")?,
                                version: r.try_get("version")?,
                                role: if role == "active" { crate::PolicyRole::Active } else { crate::PolicyRole::Shadow },
                                at: r.try_get("at")?,
                                by: r.try_get("by_actor")?,
                                comment: r.try_get("comment")?,
                            })
                        })
                        .collect()
                })
                .await
            }

            async fn policy_version(&self, version: &str) -> crate::Result<Option<crate::PolicyVersion>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let row = sqlx::query("SELECT version, files, created_at, created_by FROM policy_versions WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&self.read)
                        .await?;
                    row.map(|r| {
                        Ok(crate::PolicyVersion {
                            version: r.try_get("version")?,
                            files: serde_json::from_str(r.try_get::<&str, _>("files")?)
                                .map_err(|e| crate::StoreError::corrupt("files", e))?,
                            created_at: r.try_get("created_at")?,
                            created_by: r.try_get("created_by")?,
                        })
                    })
                    .transpose()
                })
                .await
            }

            // ---- ledger ----

            async fn ledger_append(
                &self,
                batch: Vec<warden_ledger::PreEncoded>,
                checkpoint: Option<crate::CheckpointSigner<'_>>,
            ) -> crate::Result<crate::LedgerAppend> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let head = sqlx::query(&format!("SELECT size, frontier FROM ledger_head WHERE id = 1{}", $for_update))
                        .fetch_one(&mut *tx)
                        .await?;
                    let frontier = crate::ledger::frontier_col(head.try_get("size")?, head.try_get::<&str, _>("frontier")?)?;
                    let prepared = warden_ledger::prepare_append_encoded(&frontier, batch).map_err(crate::ledger::append_error)?;
                    for chunk in crate::ledger::shaped_chunks(&prepared.entries) {
                        let mut q = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO ledger_entries (seq, at, agent, canonical, leaf_hash) ",
                        );
                        q.push_values(chunk, |mut b, e| {
                            let entry = e.entry();
                            b.push_bind(crate::ledger::to_i64(e.seq()))
                                .push_bind(entry.at)
                                .push_bind(crate::ledger::agent_of(entry))
                                .push_bind(e.bytes())
                                .push_bind(e.leaf_hash().as_bytes().to_vec());
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    let stored: Vec<_> = prepared
                        .nodes
                        .iter()
                        .filter(|(id, _)| id.level >= crate::ledger::STORED_NODE_LEVEL)
                        .collect();
                    for chunk in crate::ledger::shaped_chunks(&stored) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO ledger_nodes (level, idx, hash) ");
                        q.push_values(chunk, |mut b, (id, hash)| {
                            b.push_bind(i32::from(id.level))
                                .push_bind(crate::ledger::to_i64(id.index))
                                .push_bind(hash.as_bytes().to_vec());
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    let size = prepared.tree_size();
                    // Written even for an empty batch: an empty append is the writer's probe, and it must
                    // prove the head can still be written, not only read.
                    let state = serde_json::to_string(&prepared.frontier)
                        .map_err(|e| crate::StoreError::Internal(e.to_string()))?;
                    sqlx::query("UPDATE ledger_head SET size = $1, frontier = $2 WHERE id = 1")
                        .bind(crate::ledger::to_i64(size))
                        .bind(state)
                        .execute(&mut *tx)
                        .await?;
                    let mut signed = None;
                    if let Some(cs) = checkpoint
                        && size > 0
                    {
                        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(size) FROM ledger_checkpoints")
                            .fetch_one(&mut *tx)
                            .await?;
                        if latest != Some(crate::ledger::to_i64(size)) {
                            let note = prepared
                                .sign_checkpoint(cs.origin, &[cs.signer])
                                .map_err(|e| crate::StoreError::Internal(format!("cannot sign a checkpoint: {e}")))?;
                            sqlx::query("INSERT INTO ledger_checkpoints (size, note, at) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING")
                                .bind(crate::ledger::to_i64(size))
                                .bind(&note)
                                .bind(crate::sql::ts(cs.at))
                                .execute(&mut *tx)
                                .await?;
                            signed = Some(size);
                        }
                    }
                    tx.commit().await?;
                    Ok(crate::LedgerAppend {
                        first_seq: prepared.first_seq(),
                        tree_size: size,
                        root: prepared.root(),
                        checkpoint: signed,
                    })
                })
                .await
            }

            async fn ledger_head(&self) -> crate::Result<warden_ledger::Frontier> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let head = sqlx::query("SELECT size, frontier FROM ledger_head WHERE id = 1")
                        .fetch_one(&self.read)
                        .await?;
                    crate::ledger::frontier_col(head.try_get("size")?, head.try_get::<&str, _>("frontier")?)
                })
                .await
            }

            async fn ledger_records(
                &self,
                from_seq: u64,
                limit: u32,
                filter: &crate::LedgerFilter,
            ) -> crate::Result<Vec<warden_ledger::LogRecord>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT seq, canonical, leaf_hash FROM ledger_entries WHERE seq >= ");
                    q.push_bind(crate::ledger::to_i64(from_seq));
                    if let Some(since) = filter.since {
                        q.push(" AND at >= ").push_bind(crate::sql::ts(since));
                    }
                    if let Some(until) = filter.until {
                        q.push(" AND at < ").push_bind(crate::sql::ts(until));
                    }
                    if let Some(agent) = &filter.agent {
                        q.push(" AND agent = ").push_bind(agent.clone());
                    }
                    q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
                    let rows = q.build().fetch_all(&self.read).await?;
                    rows.iter()
                        .map(|r| {
                            Ok(warden_ledger::LogRecord {
                                seq: crate::ledger::seq_col(r.try_get("seq")?)?,
                                bytes: r.try_get("canonical")?,
                                stored_hash: Some(crate::ledger::stored_hash(r.try_get::<&[u8], _>("leaf_hash")?)),
                            })
                        })
                        .collect()
                })
                .await
            }

            async fn ledger_nodes(&self, ids: &[warden_ledger::NodeId]) -> crate::Result<Vec<warden_ledger::Hash>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    use std::collections::HashMap;
                    let missing = |id: &warden_ledger::NodeId| crate::StoreError::not_found("ledger node", format!("{}/{}", id.level, id.index));
                    let mut conn = self.read.acquire().await?;
                    let mut found: HashMap<warden_ledger::NodeId, warden_ledger::Hash> = HashMap::with_capacity(ids.len());
                    let leaves: Vec<i64> = ids.iter().filter(|id| id.level == 0).map(|id| crate::ledger::to_i64(id.index)).collect();
                    let stored: Vec<&warden_ledger::NodeId> = ids.iter().filter(|id| id.level >= crate::ledger::STORED_NODE_LEVEL).collect();
                    // One query for the leaves, one for the stored nodes (proofs need ~log2(n) of them).
                    for chunk in leaves.chunks(crate::ledger::INSERT_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT seq, leaf_hash FROM ledger_entries WHERE seq IN (");
                        let mut list = q.separated(", ");
                        for seq in chunk {
                            list.push_bind(*seq);
                        }
                        q.push(")");
                        for r in q.build().fetch_all(&mut *conn).await? {
                            let seq = crate::ledger::seq_col(r.try_get("seq")?)?;
                            found.insert(warden_ledger::NodeId::leaf(seq), crate::ledger::stored_hash(r.try_get::<&[u8], _>("leaf_hash")?));
                        }
                    }
                    for chunk in stored.chunks(crate::ledger::INSERT_CHUNK) {
                                            // push_tuples writes the parentheses around the list itself.
                        let mut q = sqlx::QueryBuilder::<$db>::new("SELECT level, idx, hash FROM ledger_nodes WHERE (level, idx) IN");
                        q.push_tuples(chunk, |mut b, id| {
                            b.push_bind(i32::from(id.level)).push_bind(crate::ledger::to_i64(id.index));
                        });
                        for r in q.build().fetch_all(&mut *conn).await? {
                            let level: i32 = r.try_get("level")?;
                            let id = warden_ledger::NodeId::new(
                                u8::try_from(level).map_err(|e| crate::StoreError::corrupt("level", e))?,
                                crate::ledger::seq_col(r.try_get("idx")?)?,
                            );
                            found.insert(id, crate::ledger::stored_hash(r.try_get::<&[u8], _>("hash")?));
                        }
                    }
                    // Nodes below the stored levels: hashed from their leaves (at most 128 each).
                    for id in ids.iter().filter(|id| id.level > 0 && id.level < crate::ledger::STORED_NODE_LEVEL) {
                        let (start, end) = id.leaf_range().ok_or_else(|| missing(id))?;
                        let rows = sqlx::query("SELECT leaf_hash FROM ledger_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq")
                            .bind(crate::ledger::to_i64(start))
                            .bind(crate::ledger::to_i64(end))
                            .fetch_all(&mut *conn)
                            .await?;
                        if rows.len() as u64 != end - start {
                            return Err(missing(id));
                        }
                        let hashes = rows
                            .iter()
                            .map(|r| Ok(crate::ledger::stored_hash(r.try_get::<&[u8], _>("leaf_hash")?)))
                            .collect::<crate::Result<Vec<_>>>()?;
                        found.insert(*id, warden_ledger::root(&hashes));
                    }
                    ids.iter().map(|id| found.get(id).copied().ok_or_else(|| missing(id))).collect()
                })
                .await
            }

            async fn ledger_checkpoints(&self, from_size: u64, limit: u32) -> crate::Result<Vec<crate::StoredCheckpoint>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let rows = sqlx::query("SELECT size, note, at FROM ledger_checkpoints WHERE size >= $1 ORDER BY size LIMIT $2")
                        .bind(crate::ledger::to_i64(from_size))
                        .bind(i64::from(limit))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(crate::StoredCheckpoint {
                                size: crate::ledger::seq_col(r.try_get("size")?)?,
                                note: r.try_get("note")?,
                                at: r.try_get("at")?,
                            })
                        })
                        .collect()
                })
                .await
            }

            async fn latest_ledger_checkpoint(&self) -> crate::Result<Option<crate::StoredCheckpoint>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let row = sqlx::query("SELECT size, note, at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
                        .fetch_optional(&self.read)
                        .await?;
                    row.map(|r| {
                        Ok(crate::StoredCheckpoint {
                            size: crate::ledger::seq_col(r.try_get("size")?)?,
                            note: r.try_get("note")?,
                            at: r.try_get("at")?,
                        })
                    })
                    .transpose()
                })
                .await
            }

            async fn publish_ledger_key(&self, vkey: &str, node: &str, at: chrono::DateTime<chrono::Utc>) -> crate::Result<()> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    sqlx::query("INSERT INTO ledger_keys (vkey, node, created_at) VALUES ($1, $2, $3) ON CONFLICT (vkey) DO NOTHING")
                        .bind(vkey)
                        .bind(node)
                        .bind(crate::sql::ts(at))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn ledger_keys(&self) -> crate::Result<Vec<crate::LedgerKeyRecord>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let rows = sqlx::query("SELECT vkey, node, created_at FROM ledger_keys ORDER BY created_at, vkey")
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(crate::LedgerKeyRecord {
                                vkey: r.try_get("vkey")?,
                                node: r.try_get("node")?,
                                created_at: r.try_get("created_at")?,
                            })
                        })
                        .collect()
                })
                .await
            }

            // ---- approvals ----

            async fn request_approval(&self, new: &crate::NewApproval) -> crate::Result<(crate::Approval, bool)> {
                self.guarded(crate::sql::Call::Read, async {
                    // Two nodes opening the same request at once: one insert wins the unique index on
                    // pending keys, the other retries and finds it.
                    let mut attempt = 0;
                    loop {
                        match self.open_approval(new).await {
                            Err(crate::StoreError::Conflict(_)) if attempt < 3 => attempt += 1,
                            other => return other,
                        }
                    }
                })
                .await
            }

            async fn get_approval(&self, id: uuid::Uuid) -> crate::Result<Option<crate::Approval>> {
                self.guarded(crate::sql::Call::Read, async {
                    let mut conn = self.read.acquire().await?;
                    Self::approval_by_id(&mut *conn, id).await
                })
                .await
            }

            async fn list_approvals(&self, filter: &crate::ApprovalFilter) -> crate::Result<Vec<crate::Approval>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let mut q = sqlx::QueryBuilder::<$db>::new(format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE 1 = 1"));
                    if let Some(s) = filter.state {
                        q.push(" AND state = ").push_bind(s.as_str());
                    }
                    if let Some(a) = &filter.agent {
                        q.push(" AND agent_name = ").push_bind(a.as_str().to_owned());
                    }
                    q.push(" ORDER BY created_at DESC, id LIMIT 500");
                    let mut conn = self.read.acquire().await?;
                    let rows = q.build().fetch_all(&mut *conn).await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let id = crate::sql::uuid_col(r.try_get::<&str, _>("id")?)?;
                        let votes = Self::votes_of(&mut *conn, id).await?;
                        out.push(decode::approval(r, votes)?);
                    }
                    Ok(out)
                })
                .await
            }

            async fn check_vote(
                &self,
                id: uuid::Uuid,
                voter: &warden_core::Email,
                vote: crate::Vote,
                now: chrono::DateTime<chrono::Utc>,
            ) -> crate::Result<crate::VoteCheck> {
                self.guarded(crate::sql::Call::Read, async {
                    let mut conn = self.read.acquire().await?;
                    let current = Self::approval_by_id(&mut *conn, id)
                        .await?
                        .ok_or_else(|| crate::StoreError::not_found("approval request", id))?;
                    Self::vote_refusal(&mut *conn, &current, voter, now).await?;
                    let approvals = match vote {
                        crate::Vote::Approve => current.approvals.saturating_add(1),
                        crate::Vote::Deny => current.approvals,
                    };
                    Ok(crate::VoteCheck { approvals, quorum: current.quorum, chain: current.chain })
                })
                .await
            }

            async fn vote_approval(
                &self,
                id: uuid::Uuid,
                voter: &crate::Voter,
                vote: crate::Vote,
                comment: &str,
                now: chrono::DateTime<chrono::Utc>,
                grant_ttl: chrono::Duration,
            ) -> crate::Result<crate::Approval> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let approver = &voter.email;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let row = sqlx::query(&format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1{}", $for_update))
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| crate::StoreError::not_found("approval request", id))?;
                    let current = decode::approval(&row, Vec::new())?;
                    Self::vote_refusal(&mut *tx, &current, approver, now).await?;
                    sqlx::query("INSERT INTO approval_votes (approval_id, approver, vote, comment, at, token_id) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(id.to_string())
                        .bind(approver.as_str())
                        .bind(match vote { crate::Vote::Approve => "approve", crate::Vote::Deny => "deny" })
                        .bind(comment)
                        .bind(crate::sql::ts(now))
                        .bind(voter.token_id.to_string())
                        .execute(&mut *tx)
                        .await?;
                    match vote {
                        crate::Vote::Deny => {
                            sqlx::query("UPDATE approvals SET state = 'denied', decided_at = $2 WHERE id = $1")
                                .bind(id.to_string())
                                .bind(crate::sql::ts(now))
                                .execute(&mut *tx)
                                .await?;
                        }
                        crate::Vote::Approve => {
                            let approvals = i64::from(current.approvals) + 1;
                            if approvals >= i64::from(current.quorum) {
                                let task_end: chrono::DateTime<chrono::Utc> = sqlx::query("SELECT expires_at FROM tasks WHERE id = $1")
                                    .bind(current.task_id.to_string())
                                    .fetch_one(&mut *tx)
                                    .await?
                                    .try_get("expires_at")?;
                                let grant_end = (now + grant_ttl).min(task_end);
                                sqlx::query("UPDATE approvals SET state = 'approved', approvals = $2, decided_at = $3, grant_expires_at = $4 WHERE id = $1")
                                    .bind(id.to_string())
                                    .bind(approvals)
                                    .bind(crate::sql::ts(now))
                                    .bind(crate::sql::ts(grant_end))
                                    .execute(&mut *tx)
                                    .await?;
                            } else {
                                sqlx::query("UPDATE approvals SET approvals = $2 WHERE id = $1")
                                    .bind(id.to_string())
                                    .bind(approvals)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                        }
                    }
                    let approval = Self::approval_in(&mut tx, id).await?.ok_or_else(|| crate::StoreError::not_found("approval request", id))?;
                    tx.commit().await?;
                    Ok(approval)
                })
                .await
            }

            async fn find_grant(&self, request_key: &str, now: chrono::DateTime<chrono::Utc>) -> crate::Result<Option<crate::Approval>> {
                self.guarded(crate::sql::Call::Read, async {
                    use sqlx::Row as _;
                    let mut conn = self.read.acquire().await?;
                    let row = sqlx::query(&format!(
                        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE request_key = $1 AND state = 'approved' \
                         AND grant_expires_at > $2 AND (single_use = $3 OR used_at IS NULL) ORDER BY decided_at DESC LIMIT 1"
                    ))
                    .bind(request_key)
                    .bind(crate::sql::ts(now))
                    .bind(false)
                    .fetch_optional(&mut *conn)
                    .await?;
                    match row {
                        None => Ok(None),
                        Some(r) => {
                            let id = crate::sql::uuid_col(r.try_get::<&str, _>("id")?)?;
                            let votes = Self::votes_of(&mut *conn, id).await?;
                            Ok(Some(decode::approval(&r, votes)?))
                        }
                    }
                })
                .await
            }

            async fn use_grant(&self, id: uuid::Uuid, now: chrono::DateTime<chrono::Utc>) -> crate::Result<bool> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let done = sqlx::query(
                        "UPDATE approvals SET used_at = $2 WHERE id = $1 AND state = 'approved' AND single_use = $3 AND used_at IS NULL",
                    )
                    .bind(id.to_string())
                    .bind(crate::sql::ts(now))
                    .bind(true)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }

            async fn expire_approvals(&self, now: chrono::DateTime<chrono::Utc>) -> crate::Result<Vec<crate::Approval>> {
                self.guarded(crate::sql::Call::Write, async {
                    use sqlx::Row as _;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let rows = sqlx::query(
                        "UPDATE approvals SET state = 'expired' WHERE state = 'pending' AND expires_at <= $1 RETURNING id",
                    )
                    .bind(crate::sql::ts(now))
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let id = crate::sql::uuid_col(r.try_get::<&str, _>("id")?)?;
                        if let Some(a) = Self::approval_in(&mut tx, id).await? {
                            out.push(a);
                        }
                    }
                    tx.commit().await?;
                    Ok(out)
                })
                .await
            }

            // ---- MCP gateway: tool catalogue ----

            async fn observe_tools(
                &self,
                upstream: &warden_core::UpstreamName,
                seen: &[crate::ObservedTool],
                new_state: warden_core::ToolState,
                now: chrono::DateTime<chrono::Utc>,
            ) -> crate::Result<Vec<crate::ToolChange>> {
                self.guarded(crate::sql::Call::Write, async {
                    Self::check_observed(seen)?;
                    // The common case, a listing like the last one, reads and writes nothing (and takes
                    // no write lock: SQLite has one writer, and every `tools/list` comes through here).
                    let known: std::collections::HashMap<String, crate::ToolRecord> = crate::Store::list_tools(self, Some(upstream))
                        .await?
                        .into_iter()
                        .map(|t| (t.name.clone(), t))
                        .collect();
                    if seen.iter().all(|t| known.get(&t.name).is_some_and(|k| Self::tool_unchanged(k, &t.digest))) {
                        return Ok(Vec::new());
                    }
                    let at = crate::sql::ts(now);
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let exists = sqlx::query("SELECT 1 FROM upstreams WHERE name = $1")
                        .bind(upstream.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_none() {
                        return Err(crate::StoreError::not_found("upstream", upstream));
                    }
                    // Rows are locked in name order, so concurrent observers of one upstream never deadlock.
                    let mut ordered: Vec<&crate::ObservedTool> = seen.iter().collect();
                    ordered.sort_by(|a, b| a.name.cmp(&b.name));
                    // What the catalogued tools look like without their names, read only when a new
                    // name is listed (renames and shadows are looked for among new names only).
                    let looks = if seen.iter().any(|t| !known.contains_key(&t.name)) {
                        Self::looks(&known)
                    } else {
                        Vec::new()
                    };
                    let mut changes = Vec::new();
                    for t in ordered {
                        let definition = t.definition.to_string();
                        let resemblance = if known.contains_key(&t.name) { None } else { Self::resemblance(&looks, t) };
                        // A rename or a shadow is quarantined whatever new tools get.
                        let state = if resemblance.is_some() { warden_core::ToolState::Quarantined } else { new_state };
                        let active = state == warden_core::ToolState::Active;
                        let (cause, resembles) = match resemblance {
                            Some((cause, other)) => (Some(cause), Some(other)),
                            None => ((!active).then_some(warden_core::QuarantineCause::FirstSeen), None),
                        };
                        // First sight. A concurrent observer's insert makes this one do nothing (on
                        // PostgreSQL it waits for that transaction first), and the row is handled below.
                        let inserted = sqlx::query(
                            "INSERT INTO tools (upstream_name, name, state, digest, definition, hint_class, pending_digest, \
                             pending_definition, pending_hint_class, first_seen, updated_at, quarantine_cause, resembles) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12) \
                             ON CONFLICT (upstream_name, name) DO NOTHING",
                        )
                        .bind(upstream.as_str())
                        .bind(&t.name)
                        .bind(state.as_str())
                        .bind(active.then_some(t.digest.as_str()))
                        .bind(active.then_some(definition.as_str()))
                        .bind(t.hint_class.as_str())
                        .bind((!active).then_some(t.digest.as_str()))
                        .bind((!active).then_some(definition.as_str()))
                        .bind((!active).then_some(t.hint_class.as_str()))
                        .bind(at)
                        .bind(cause.map(|c| c.as_str()))
                        .bind(resembles.as_deref())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if inserted == 1 {
                            let (approved, pending) = if active { (Some(t), None) } else { (None, Some(t)) };
                            let mut tool = crate::ToolRecord {
                                upstream: upstream.clone(),
                                name: t.name.clone(),
                                state,
                                digest: approved.map(|t| t.digest.clone()),
                                definition: approved.map(|t| t.definition.clone()),
                                hint_class: t.hint_class,
                                class_override: None,
                                pending_digest: pending.map(|t| t.digest.clone()),
                                pending_definition: pending.map(|t| t.definition.clone()),
                                pending_hint_class: pending.map(|t| t.hint_class),
                                first_seen: at,
                                updated_at: at,
                                approved_by: None,
                                approved_at: None,
                                classified_by: None,
                                classified_at: None,
                                quarantine_cause: None,
                                resembles: None,
                                quarantine_reason: None,
                            };
                            tool.set_quarantine(cause, resembles);
                            changes.push(crate::ToolChange::New(tool));
                            continue;
                        }
                        let mut tool = Self::tool_for_update(&mut tx, upstream, &t.name).await?;
                        if Self::tool_unchanged(&tool, &t.digest) {
                            continue;
                        }
                        // A tool with an approved definition changed; one never approved (first
                        // seen in quarantine, a rename, a shadow) keeps why it was held.
                        let (cause, resembles) = if tool.digest.is_some() {
                            (warden_core::QuarantineCause::DefinitionChanged, None)
                        } else {
                            (
                                tool.quarantine_cause.unwrap_or(warden_core::QuarantineCause::FirstSeen),
                                tool.resembles.clone(),
                            )
                        };
                        sqlx::query(
                            "UPDATE tools SET state = 'quarantined', pending_digest = $1, pending_definition = $2, \
                             pending_hint_class = $3, updated_at = $4, quarantine_cause = $5, resembles = $6 \
                             WHERE upstream_name = $7 AND name = $8",
                        )
                        .bind(&t.digest)
                        .bind(&definition)
                        .bind(t.hint_class.as_str())
                        .bind(at)
                        .bind(cause.as_str())
                        .bind(resembles.as_deref())
                        .bind(upstream.as_str())
                        .bind(&t.name)
                        .execute(&mut *tx)
                        .await?;
                        tool.state = warden_core::ToolState::Quarantined;
                        tool.pending_digest = Some(t.digest.clone());
                        tool.pending_definition = Some(t.definition.clone());
                        tool.pending_hint_class = Some(t.hint_class);
                        tool.updated_at = at;
                        tool.set_quarantine(Some(cause), resembles);
                        changes.push(crate::ToolChange::Quarantined(tool));
                    }
                    if changes.is_empty() {
                        // Another observer made the same changes first: nothing to write or announce.
                        return Ok(changes);
                    }
                    let keys = changes.iter().map(|c| c.tool().key()).collect();
                    let event = Self::notify_registry(&mut tx, vec![], vec![], keys, vec![]).await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(changes)
                })
                .await
            }

            async fn list_tools(&self, upstream: Option<&warden_core::UpstreamName>) -> crate::Result<Vec<crate::ToolRecord>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!(
                        "SELECT {TOOL_COLUMNS} FROM tools WHERE (CAST($1 AS TEXT) IS NULL OR upstream_name = $1) \
                         ORDER BY upstream_name, name"
                    ))
                    .bind(upstream.map(|u| u.as_str()))
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::tool).collect()
                })
                .await
            }

            async fn get_tool(&self, upstream: &warden_core::UpstreamName, name: &str) -> crate::Result<Option<crate::ToolRecord>> {
                self.guarded(crate::sql::Call::Read, async {
                    let row = sqlx::query(&format!("SELECT {TOOL_COLUMNS} FROM tools WHERE upstream_name = $1 AND name = $2"))
                        .bind(upstream.as_str())
                        .bind(name)
                        .fetch_optional(&self.read)
                        .await?;
                    row.as_ref().map(decode::tool).transpose()
                })
                .await
            }

            async fn classify_tool(
                &self,
                upstream: &warden_core::UpstreamName,
                name: &str,
                class: Option<warden_core::ToolClass>,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::ToolRecord> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let mut tool = Self::tool_for_update(&mut tx, upstream, name).await?;
                    let at = crate::sql::ts(ctx.at);
                    sqlx::query(
                        "UPDATE tools SET class_override = $1, classified_by = $2, classified_at = $3, updated_at = $3 \
                         WHERE upstream_name = $4 AND name = $5",
                    )
                    .bind(class.map(|c| c.as_str()))
                    .bind(&ctx.actor)
                    .bind(at)
                    .bind(upstream.as_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                    tool.class_override = class;
                    tool.classified_by = Some(ctx.actor.clone());
                    tool.classified_at = Some(at);
                    tool.updated_at = at;
                    let event = Self::notify_registry(&mut tx, vec![], vec![], vec![tool.key()], vec![]).await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(tool)
                })
                .await
            }

            async fn approve_tool(
                &self,
                upstream: &warden_core::UpstreamName,
                name: &str,
                digest: &str,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::ToolApproval> {
                self.guarded(crate::sql::Call::Write, async {
                    warden_core::gateway::check_digest("digest", digest)?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let mut tool = Self::tool_for_update(&mut tx, upstream, name).await?;
                    let key = tool.key();
                    let Some(pending) = tool.pending_digest.clone() else {
                        let approved = tool.digest.as_deref().unwrap_or_default();
                        return Err(crate::StoreError::Conflict(if approved == digest {
                            format!("tool `{key}` is already approved with digest `{digest}`")
                        } else {
                            format!(
                                "tool `{key}` has no definition awaiting approval; its approved digest is `{approved}`, not `{digest}`"
                            )
                        }));
                    };
                    // The pending digest approves the pending definition; the approved digest (an
                    // upstream that changed the tool and changed it back) restores the approved one.
                    let restored = if pending == digest {
                        false
                    } else if tool.digest.as_deref() == Some(digest) {
                        true
                    } else {
                        return Err(crate::StoreError::Conflict(match tool.digest.as_deref() {
                            Some(approved) => format!(
                                "digest `{digest}` is neither the pending digest `{pending}` of tool `{key}` nor its \
                                 approved digest `{approved}`; approve the pending digest to accept the definition you \
                                 reviewed, or the approved digest to restore the approved definition"
                            ),
                            None => format!(
                                "digest `{digest}` is not the pending digest `{pending}` of tool `{key}`, which has no \
                                 approved definition to restore; approve only the definition you reviewed"
                            ),
                        }));
                    };
                    let at = crate::sql::ts(ctx.at);
                    let sql = if restored {
                        "UPDATE tools SET state = 'active', pending_digest = NULL, pending_definition = NULL, \
                         pending_hint_class = NULL, approved_by = $1, approved_at = $2, updated_at = $2, \
                         quarantine_cause = NULL, resembles = NULL WHERE upstream_name = $3 AND name = $4"
                    } else {
                        "UPDATE tools SET state = 'active', digest = pending_digest, definition = pending_definition, \
                         hint_class = pending_hint_class, pending_digest = NULL, pending_definition = NULL, \
                         pending_hint_class = NULL, approved_by = $1, approved_at = $2, updated_at = $2, \
                         quarantine_cause = NULL, resembles = NULL WHERE upstream_name = $3 AND name = $4"
                    };
                    sqlx::query(sql)
                        .bind(&ctx.actor)
                        .bind(at)
                        .bind(upstream.as_str())
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    tool.state = warden_core::ToolState::Active;
                    let pending_definition = tool.pending_definition.take();
                    let pending_hint_class = tool.pending_hint_class.take();
                    tool.pending_digest = None;
                    if !restored {
                        tool.digest = Some(pending);
                        tool.definition = pending_definition;
                        tool.hint_class = pending_hint_class.unwrap_or(tool.hint_class);
                    }
                    tool.approved_by = Some(ctx.actor.clone());
                    tool.approved_at = Some(at);
                    tool.updated_at = at;
                    tool.set_quarantine(None, None);
                    let event = Self::notify_registry(&mut tx, vec![], vec![], vec![key], vec![]).await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(crate::ToolApproval { tool, restored })
                })
                .await
            }

            // ---- MCP gateway: upstream secrets ----

            async fn create_secret(
                &self,
                new: &crate::NewSecret,
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::SecretInfo> {
                self.guarded(crate::sql::Call::Write, async {
                    Self::check_sealed(&new.key_id, &new.nonce, &new.ciphertext)?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let upstream = sqlx::query("SELECT 1 FROM upstreams WHERE name = $1")
                        .bind(new.upstream.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if upstream.is_none() {
                        return Err(crate::StoreError::not_found("upstream", &new.upstream));
                    }
                    let taken = sqlx::query("SELECT 1 FROM secrets WHERE name = $1")
                        .bind(new.name.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_some() {
                        return Err(crate::StoreError::Conflict(format!(
                            "secret `{}` already exists; rotate it to change its value",
                            new.name
                        )));
                    }
                    let (header, prefix, var) = match &new.injection {
                        warden_core::Injection::Header { name, prefix } => (Some(name.as_str()), Some(prefix.as_str()), None),
                        warden_core::Injection::Env { var } => (None, None, Some(var.as_str())),
                    };
                    let same_target: Option<String> = sqlx::query_scalar(
                        "SELECT name FROM secrets WHERE upstream_name = $1 AND (header_name = $2 OR env_var = $3)",
                    )
                    .bind(new.upstream.as_str())
                    .bind(header)
                    .bind(var)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(other) = same_target {
                        return Err(crate::StoreError::Conflict(format!(
                            "upstream `{}` already gets {} from secret `{other}`",
                            new.upstream,
                            new.injection.target()
                        )));
                    }
                    let at = crate::sql::ts(ctx.at);
                    sqlx::query(
                        "INSERT INTO secrets (name, upstream_name, injection, header_name, header_prefix, env_var, version, \
                         key_id, nonce, ciphertext, created_at, created_by) \
                         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11)",
                    )
                    .bind(new.name.as_str())
                    .bind(new.upstream.as_str())
                    .bind(new.injection.kind())
                    .bind(header)
                    .bind(prefix)
                    .bind(var)
                    .bind(&new.key_id)
                    .bind(new.nonce.as_slice())
                    .bind(new.ciphertext.as_slice())
                    .bind(at)
                    .bind(&ctx.actor)
                    .execute(&mut *tx)
                    .await?;
                    let event = Self::notify_registry(
                        &mut tx,
                        vec![],
                        vec![],
                        vec![],
                        vec![format!("{}/{}", new.upstream, new.name)],
                    )
                    .await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(crate::SecretInfo {
                        name: new.name.clone(),
                        upstream: new.upstream.clone(),
                        injection: new.injection.clone(),
                        version: 1,
                        key_id: new.key_id.clone(),
                        created_at: at,
                        created_by: ctx.actor.clone(),
                        rotated_at: None,
                        rotated_by: None,
                    })
                })
                .await
            }

            async fn rotate_secret(
                &self,
                name: &warden_core::SecretName,
                key_id: &str,
                nonce: &[u8],
                ciphertext: &[u8],
                ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::SecretInfo> {
                self.guarded(crate::sql::Call::Write, async {
                    Self::check_sealed(key_id, nonce, ciphertext)?;
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let mut info = Self::secret_for_update(&mut tx, name).await?;
                    let version = info
                        .version
                        .checked_add(1)
                        .ok_or_else(|| crate::StoreError::Conflict(format!("secret `{name}` cannot be rotated any more")))?;
                    let at = crate::sql::ts(ctx.at);
                    sqlx::query(
                        "UPDATE secrets SET version = $1, key_id = $2, nonce = $3, ciphertext = $4, rotated_at = $5, \
                         rotated_by = $6 WHERE name = $7",
                    )
                    .bind(i64::from(version))
                    .bind(key_id)
                    .bind(nonce)
                    .bind(ciphertext)
                    .bind(at)
                    .bind(&ctx.actor)
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await?;
                    info.version = version;
                    info.key_id = key_id.to_owned();
                    info.rotated_at = Some(at);
                    info.rotated_by = Some(ctx.actor.clone());
                    let event =
                        Self::notify_registry(&mut tx, vec![], vec![], vec![], vec![format!("{}/{}", info.upstream, name)]).await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(info)
                })
                .await
            }

            async fn delete_secret(
                &self,
                name: &warden_core::SecretName,
                _ctx: &warden_core::ChangeContext,
            ) -> crate::Result<crate::SecretInfo> {
                self.guarded(crate::sql::Call::Write, async {
                    let mut tx = crate::write::WriteTx::<$db>::begin(&self.write, &self.health, $begin).await?;
                    let info = Self::secret_for_update(&mut tx, name).await?;
                    sqlx::query("DELETE FROM secrets WHERE name = $1").bind(name.as_str()).execute(&mut *tx).await?;
                    let event =
                        Self::notify_registry(&mut tx, vec![], vec![], vec![], vec![format!("{}/{}", info.upstream, name)]).await?;
                    tx.commit().await?;
                    self.emit(event);
                    Ok(info)
                })
                .await
            }

            async fn list_secrets(&self) -> crate::Result<Vec<crate::SecretInfo>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!("SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"))
                        .fetch_all(&self.read)
                        .await?;
                    rows.iter().map(decode::secret_info).collect()
                })
                .await
            }

            async fn upstream_secrets(&self, upstream: &warden_core::UpstreamName) -> crate::Result<Vec<crate::SealedSecret>> {
                self.guarded(crate::sql::Call::Read, async {
                    let rows = sqlx::query(&format!(
                        "SELECT {SECRET_COLUMNS}, nonce, ciphertext FROM secrets WHERE upstream_name = $1 ORDER BY name"
                    ))
                    .bind(upstream.as_str())
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter().map(decode::sealed_secret).collect()
                })
                .await
            }

            fn events(&self) -> tokio::sync::broadcast::Receiver<crate::StoreEvent> {
                self.events.subscribe()
            }
        }
    };
}

pub(crate) use impl_store;
