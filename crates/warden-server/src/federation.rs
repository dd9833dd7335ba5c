//! Trusted external issuers (OIDC, SPIFFE JWT-SVID): their JWK Sets, loaded at start from a file or a
//! URL and refreshed in the background, so a key rotation at the issuer needs no Warden restart.

use std::sync::RwLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use warden_core::AgentName;
use warden_identity::{FederatedIdentity, FederatedIssuer, TokenError};

use crate::config::FederationConfig;

/// Largest JWK Set we read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct Federation {
    issuers: RwLock<Vec<FederatedIssuer>>,
    configs: Vec<FederationConfig>,
}

impl Federation {
    /// Loads every configured issuer; a failure names the issuer and stops the start.
    pub async fn load(configs: Vec<FederationConfig>) -> anyhow::Result<Self> {
        let mut issuers = Vec::new();
        for cfg in &configs {
            let jwks = fetch_jwks(cfg).await?;
            let mut mapping = std::collections::BTreeMap::new();
            for (claim, agent) in &cfg.mapping {
                let name = AgentName::parse(agent)
                    .with_context(|| format!("federation `{}`: mapping for `{claim}`", cfg.name))?;
                mapping.insert(claim.clone(), name);
            }
            let issuer = FederatedIssuer::new(
                &cfg.name,
                cfg.kind.clone(),
                cfg.issuer.clone(),
                cfg.trust_domain.clone(),
                cfg.audiences.clone(),
                &cfg.algorithms,
                &jwks,
                cfg.claim.clone(),
                mapping,
            )
            .and_then(|i| i.with_max_lifetime(cfg.max_token_lifetime_secs))
            .with_context(|| format!("federation `{}`", cfg.name))?;
            issuers.push(issuer);
        }
        Ok(Self {
            issuers: RwLock::new(issuers),
            configs,
        })
    }

    /// Whether any trusted issuer claims this token.
    pub fn claims(&self, token: &str) -> bool {
        self.issuers
            .read()
            .map(|v| v.iter().any(|i| i.claims_token(token)))
            .unwrap_or(false)
    }

    /// Verifies a token with the issuer that claims it.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Result<FederatedIdentity, TokenError>> {
        let issuers = self.issuers.read().ok()?;
        let issuer = issuers.iter().find(|i| i.claims_token(token))?;
        Some(issuer.verify(token, now))
    }

    /// Refreshes URL-sourced JWK Sets forever (spawned at start). A failed refresh keeps the old set.
    pub async fn refresh(&self) {
        let Some(period) = self
            .configs
            .iter()
            .filter(|c| c.jwks_url.is_some())
            .map(|c| c.jwks_refresh_secs)
            .min()
        else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(period.max(10)));
        tick.tick().await;
        loop {
            tick.tick().await;
            for (i, cfg) in self
                .configs
                .iter()
                .enumerate()
                .filter(|(_, c)| c.jwks_url.is_some())
            {
                match fetch_jwks(cfg).await {
                    Ok(jwks) => {
                        let mut issuers = match self.issuers.write() {
                            Ok(v) => v,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        if let Some(Err(e)) = issuers.get_mut(i).map(|issuer| issuer.replace_jwks(&jwks)) {
                            tracing::warn!(issuer = %cfg.name, error = %e, "refreshed JWKS rejected; keeping the old one");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %cfg.name, error = %format!("{e:#}"), "JWKS refresh failed; keeping the old one")
                    }
                }
            }
        }
    }
}

async fn fetch_jwks(cfg: &FederationConfig) -> anyhow::Result<serde_json::Value> {
    let bytes = if let Some(path) = &cfg.jwks_file {
        std::fs::read(path)
            .with_context(|| format!("federation `{}`: cannot read {}", cfg.name, path.display()))?
    } else if let Some(url) = &cfg.jwks_url {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build an HTTP client")?;
        let resp = client
            .get(url)
            .send()
            .await
            .with_context(|| format!("federation `{}`: cannot fetch {url}", cfg.name))?;
        if !resp.status().is_success() {
            bail!("federation `{}`: {url} answered {}", cfg.name, resp.status());
        }
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("federation `{}`: cannot read {url}", cfg.name))?;
        body.to_vec()
    } else {
        bail!("federation `{}`: no JWKS source", cfg.name);
    };
    if bytes.len() > MAX_JWKS_BYTES {
        bail!(
            "federation `{}`: the JWK Set is larger than {MAX_JWKS_BYTES} bytes",
            cfg.name
        );
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("federation `{}`: the JWK Set is not JSON", cfg.name))
}
