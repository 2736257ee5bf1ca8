//! OAuth for agents: the `[oauth]` section and the services of the account's authorization
//! server (agents as clients, the tool and scope catalog, principals, delegation grants,
//! access rules, and the token endpoint).

use std::path::Path;
use std::sync::Arc;

use d2_audit::AuditEntry;
use d2_jwks::{Jwks, JwksError, KeyAlgorithm, KeyReplaced};
use d2_kernel::AccountId;
use d2_oauth::jobs::{ClientReaping, TokenPruning};
use d2_oauth::{
    AccessRules, AgentCache, AgentService, Authorizations, ClientAuthenticator, ClientPolicies,
    DefaultScopes, DelegationService, DynamicClients, Entitlements, MetadataClients, OAuthAdmin,
    PersonTokens, PrincipalService, RevocationLists, ScopeCatalog, TokenIssuer, TokenRecords,
    ToolService,
};
use d2_oidc::{AgentKeys, DpopProofs, MetadataDocuments, OutboundFetch, Reach};
use serde::Deserialize;

use super::{Registry, Shared};
use crate::settings::{CacheConfig, SettingsError, blank_is_none};

/// The default scopes shipped with D2, built into the binaries: used when
/// `oauth.default_scopes_file` is unset and the config directory holds no `scopes.yml`.
pub const SHIPPED_DEFAULT_SCOPES: &str = include_str!("../../../../config/scopes.yml");

/// `[oauth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// How long a rotated-out client secret still authenticates.
    pub secret_grace_seconds: u64,
    /// How long a refresh token already spent, presented again, gets the answer it got
    /// (a retry) instead of revoking its family (a reuse).
    pub refresh_replay_seconds: u64,
    /// Whether URLs that tenants and clients choose (agents' `jwks_uri`s, clients'
    /// metadata documents) may name addresses inside the server's network (loopback,
    /// private, link-local, ...); off, only public addresses are fetched.
    pub fetch_private_addresses: bool,
    /// A PEM file of certificate authorities trusted for those fetches beside the
    /// system's (an internal PKI): absolute, or relative to the config directory.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub fetch_root_certificates: Option<String>,
    /// Issued tokens and agents, for introspection; revocations and agent changes
    /// invalidate them on every replica.
    pub token_cache: CacheConfig,
    /// Each account's access rules, compiled, as decisions read them; a rule change drops
    /// its account's entry on every replica.
    pub rules_cache: CacheConfig,
    /// The YAML file of the default scopes every account's catalog starts from: absolute,
    /// or relative to the config directory. Unset: the config directory's `scopes.yml`, else
    /// the copy built into the binary.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub default_scopes_file: Option<String>,
    /// The per-account caches of the catalog (scopes, an agent's tools, tools by name);
    /// every change invalidates them on every replica.
    pub catalog_cache: CacheConfig,
    /// What access tokens are signed with: `RS256` (the account's bundle keys) or `ES256`
    /// (an EC P-256 key of each account, published at its OAuth `jwks_uri`).
    pub signing_algorithm: String,
    /// The default scopes, read and checked when the settings are loaded.
    #[serde(skip)]
    pub default_scopes: DefaultScopes,
    /// How URLs tenants and clients choose are fetched, built when the settings are
    /// loaded.
    #[serde(skip)]
    pub outbound_fetch: OutboundFetch,
}

impl OAuthSettings {
    /// Reads and checks the default scopes (`dir` is the config directory): a file that is
    /// missing or not a valid scope list is an error naming the key, the file and the
    /// problem.
    pub(crate) fn load_default_scopes(&mut self, dir: &Path) -> Result<(), SettingsError> {
        const KEY: &str = "oauth.default_scopes_file";
        let (source, text) = crate::settings::config_file(
            dir,
            KEY,
            self.default_scopes_file.as_deref(),
            "scopes.yml",
            SHIPPED_DEFAULT_SCOPES,
        )?;
        self.default_scopes = DefaultScopes::from_yaml(&text)
            .map_err(|e| SettingsError::invalid(KEY, format!("{source}: {e}")))?;
        Ok(())
    }

    /// Builds how URLs that tenants and clients choose are fetched: `fetch_private_addresses`,
    /// and the authorities of `fetch_root_certificates` (a file that cannot be read or
    /// holds no PEM certificate is an error naming the key).
    pub(crate) fn load_outbound_fetch(&mut self, dir: &Path) -> Result<(), SettingsError> {
        const KEY: &str = "oauth.fetch_root_certificates";
        let reach = if self.fetch_private_addresses {
            Reach::Any
        } else {
            Reach::Public
        };
        let pem = match &self.fetch_root_certificates {
            Some(file) => {
                let path = dir.join(file);
                Some(std::fs::read(&path).map_err(|e| {
                    SettingsError::invalid(KEY, format!("cannot read {}: {e}", path.display()))
                })?)
            }
            None => None,
        };
        self.outbound_fetch = OutboundFetch::new(reach, pem.as_deref()).map_err(|e| {
            SettingsError::invalid(KEY, format!("not a PEM bundle of certificates: {e}"))
        })?;
        Ok(())
    }

    /// `signing_algorithm`, parsed.
    pub fn signing_algorithm(&self) -> Result<KeyAlgorithm, SettingsError> {
        self.signing_algorithm
            .parse()
            .map_err(|e: d2_jwks::UnknownKeyAlgorithm| {
                SettingsError::invalid("oauth.signing_algorithm", e.to_string())
            })
    }

    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        self.signing_algorithm()?;
        if self.secret_grace_seconds > 30 * 86_400 {
            return Err(SettingsError::invalid(
                "oauth.secret_grace_seconds",
                "must be at most 30 days (2592000)",
            ));
        }
        if self.refresh_replay_seconds > 60 {
            return Err(SettingsError::invalid(
                "oauth.refresh_replay_seconds",
                "must be at most 60",
            ));
        }
        Ok(())
    }
}

/// The services of the OAuth domain.
#[derive(Clone, Debug)]
pub struct OAuth {
    pub agents: Arc<AgentService>,
    pub clients: Arc<ClientAuthenticator>,
    /// The token endpoint's grants, introspection and revocation.
    pub issuer: Arc<TokenIssuer>,
    /// The keys access tokens are signed with (the bundles' when `RS256`), published at
    /// each account's OAuth `jwks_uri`.
    pub keys: Arc<Jwks>,
    /// The admins' view: dashboard, tokens, revocation, tasks (`/v1/admin`).
    pub admin: Arc<OAuthAdmin>,
    /// The consent step of the authorization code flow.
    pub authorizations: Arc<Authorizations>,
    /// What each account lets clients named by a metadata document, or registering
    /// themselves, have.
    pub client_policies: Arc<ClientPolicies>,
    /// Dynamic client registration (RFC 7591) and its initial access tokens.
    pub dynamic_clients: Arc<DynamicClients>,
    /// Each account's signed revocation list, served from memory.
    pub revocations: Arc<RevocationLists>,
    /// The account's end users (principals) agents act for.
    pub principals: Arc<PrincipalService>,
    /// Delegation grants: principals and agents letting agents act for them.
    pub delegations: Arc<DelegationService>,
    /// The access rules, and the decisions the token endpoint asks of them.
    pub rules: Arc<AccessRules>,
    /// Each account's scopes; `known` and `expand` serve the token endpoint from memory.
    pub scopes: Arc<ScopeCatalog>,
    /// Each account's tools and the tools bound to its agents; `agent_tools` and `by_name`
    /// serve the token endpoint from memory.
    pub tools: Arc<ToolService>,
}

impl OAuth {
    /// Rotates the account's access-token key when it is a key of its own (ES256), as a
    /// rotation of the bundle keys rotates those that sign both. `None` when access tokens
    /// are signed with the bundle keys, or the account has no such key yet.
    pub async fn rotate_own_key(
        &self,
        account_id: AccountId,
        audit: AuditEntry,
    ) -> Result<Option<KeyReplaced>, JwksError> {
        if self.keys.algorithm() == KeyAlgorithm::Rs256 {
            return Ok(None);
        }
        self.keys.rotate(account_id, audit).await
    }
}

fn seconds(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
}

/// `jwks`: the accounts' bundle signing keys (RS256), which sign access tokens too unless
/// `oauth.signing_algorithm` is `ES256`.
/// `person_tokens`: the identity provider's, when `auth.idp` is set (people's tokens as
/// token exchange subjects).
pub(crate) fn build(
    shared: &Shared<'_>,
    registry: &mut Registry,
    jwks: Arc<Jwks>,
    person_tokens: Option<Arc<dyn PersonTokens>>,
) -> Result<OAuth, SettingsError> {
    let settings = &shared.settings.oauth;
    let keys = match settings.signing_algorithm()? {
        KeyAlgorithm::Rs256 => jwks,
        algorithm => {
            let keys = Arc::new(jwks.sibling(algorithm, shared.settings.jwks.cache.settings()));
            registry.subscribe(keys.clone());
            keys
        }
    };
    let pruning: PruningOptions = shared.settings.worker.options("oauth-token-pruning")?;
    let outbound = settings.outbound_fetch.clone();
    let grace = seconds(settings.secret_grace_seconds);
    let cache = Arc::new(AgentCache::new(
        shared.repositories.clone(),
        settings.token_cache.settings(),
    ));
    registry.subscribe(cache.clone());
    let rules = Arc::new(AccessRules::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.rules_cache.settings(),
    ));
    registry.subscribe(rules.clone());
    let catalog_cache = settings.catalog_cache.settings();
    let scopes = Arc::new(ScopeCatalog::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.default_scopes.clone(),
        catalog_cache,
    ));
    let tools = Arc::new(ToolService::new(
        shared.repositories.clone(),
        scopes.clone(),
        shared.clock.clone(),
        catalog_cache,
    ));
    registry.subscribe(scopes.clone());
    registry.subscribe(tools.clone());
    let entitlements = Arc::new(Entitlements::new(
        scopes.clone(),
        tools.clone(),
        rules.clone(),
    ));
    let records = Arc::new(TokenRecords::new(settings.token_cache.settings()));
    registry.subscribe(records.clone());
    let delegations = Arc::new(DelegationService::new(
        shared.repositories.clone(),
        cache.clone(),
        shared.repositories.clone(),
        entitlements.clone(),
        records.clone(),
        shared.clock.clone(),
    ));
    let mut issuer = TokenIssuer::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        shared.repositories.clone(),
        cache.clone(),
        entitlements.clone(),
        delegations.clone(),
        keys.clone(),
        shared.pepper.clone(),
        shared.clock.clone(),
        seconds(settings.refresh_replay_seconds),
        records.clone(),
    )
    .with_dpop(Arc::new(DpopProofs::default()));
    if let Some(people) = person_tokens {
        issuer = issuer.with_person_tokens(people);
    }
    let issuer = Arc::new(issuer);
    let revocations = Arc::new(RevocationLists::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        keys.clone(),
        shared.clock.clone(),
        records.clone(),
    ));
    let client_policies = Arc::new(ClientPolicies::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.token_cache.settings(),
    ));
    registry.subscribe(client_policies.clone());
    let documents = MetadataDocuments::new(outbound.clone()).map_err(|e| {
        SettingsError::invalid(
            "oauth",
            format!("cannot build the client that fetches client metadata documents: {e}"),
        )
    })?;
    let metadata_clients = Arc::new(MetadataClients::new(
        shared.repositories.clone(),
        cache.clone(),
        client_policies.clone(),
        Arc::new(documents),
        shared.clock.clone(),
    ));
    let authorizations = Arc::new(
        Authorizations::new(
            cache.clone(),
            shared.repositories.clone(),
            delegations.clone(),
            shared.repositories.clone(),
            entitlements,
            shared.pepper.clone(),
            shared.clock.clone(),
        )
        .with_metadata_clients(metadata_clients),
    );
    registry.schedule(TokenPruning {
        issuer: issuer.clone(),
        keep: chrono::Duration::days(i64::from(pruning.keep_days)),
    });
    let dynamic_clients = Arc::new(DynamicClients::new(
        shared.repositories.clone(),
        shared.repositories.clone(),
        client_policies.clone(),
        cache.clone(),
        shared.pepper.clone(),
        shared.clock.clone(),
    ));
    registry.schedule(ClientReaping {
        clients: dynamic_clients.clone(),
    });
    Ok(OAuth {
        admin: Arc::new(OAuthAdmin::new(
            issuer.clone(),
            shared.repositories.clone(),
            shared.repositories.clone(),
            shared.clock.clone(),
        )),
        issuer,
        authorizations,
        client_policies,
        dynamic_clients,
        revocations,
        keys,
        agents: Arc::new(AgentService::new(
            shared.repositories.clone(),
            cache.clone(),
            shared.pepper.clone(),
            shared.clock.clone(),
            grace,
        )),
        clients: Arc::new(ClientAuthenticator::new(
            shared.repositories.clone(),
            cache,
            shared.pepper.clone(),
            Arc::new(AgentKeys::new(shared.clock.clone(), outbound).map_err(|e| {
                SettingsError::invalid(
                    "oauth",
                    format!("cannot build the client that fetches agents' jwks_uri: {e}"),
                )
            })?),
            shared.clock.clone(),
        )),
        principals: Arc::new(PrincipalService::new(
            shared.repositories.clone(),
            records,
            shared.clock.clone(),
        )),
        delegations,
        rules,
        scopes,
        tools,
    })
}

/// The options of `worker.jobs.oauth_token_pruning`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruningOptions {
    /// Grants wholly expired for longer than this are deleted (their audit stays).
    keep_days: u32,
}
