//! OAuth for agents: the `[oauth]` section and the services of the account's authorization
//! server (agents as clients, the tool and scope catalog, and what the token endpoint
//! needs).

use std::path::Path;
use std::sync::Arc;

use d2_oauth::{AgentService, ClientAuthenticator, DefaultScopes, ScopeCatalog, ToolService};
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
    /// The YAML file of the default scopes every account's catalog starts from: absolute,
    /// or relative to the config directory. Unset: the config directory's `scopes.yml`, else
    /// the copy built into the binary.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub default_scopes_file: Option<String>,
    /// The per-account caches of the catalog (scopes, an agent's tools, tools by name);
    /// every change invalidates them on every replica.
    pub catalog_cache: CacheConfig,
    /// The default scopes, read and checked when the settings are loaded.
    #[serde(skip)]
    pub default_scopes: DefaultScopes,
}

impl OAuthSettings {
    /// Reads and checks the default scopes (`dir` is the config directory): a file that is
    /// missing or not a valid scope list is an error naming the key, the file and the
    /// problem.
    pub(crate) fn load_default_scopes(&mut self, dir: &Path) -> Result<(), SettingsError> {
        const KEY: &str = "oauth.default_scopes_file";
        let (source, text) = match &self.default_scopes_file {
            Some(file) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    SettingsError::invalid(KEY, format!("cannot read {}: {e}", path.display()))
                })?;
                (path.display().to_string(), text)
            }
            None => {
                let path = dir.join("scopes.yml");
                match std::fs::read_to_string(&path) {
                    Ok(text) => (path.display().to_string(), text),
                    Err(_) => (
                        "the built-in scopes.yml".to_owned(),
                        SHIPPED_DEFAULT_SCOPES.to_owned(),
                    ),
                }
            }
        };
        self.default_scopes = DefaultScopes::from_yaml(&text)
            .map_err(|e| SettingsError::invalid(KEY, format!("{source}: {e}")))?;
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.secret_grace_seconds > 30 * 86_400 {
            return Err(SettingsError::invalid(
                "oauth.secret_grace_seconds",
                "must be at most 30 days (2592000)",
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
    /// Each account's scopes; `known` and `expand` serve the token endpoint from memory.
    pub scopes: Arc<ScopeCatalog>,
    /// Each account's tools and the tools bound to its agents; `agent_tools` and `by_name`
    /// serve the token endpoint from memory.
    pub tools: Arc<ToolService>,
}

pub(crate) fn build(shared: &Shared<'_>, registry: &mut Registry) -> OAuth {
    let settings = &shared.settings.oauth;
    let grace =
        chrono::Duration::seconds(i64::try_from(settings.secret_grace_seconds).unwrap_or(i64::MAX));
    let cache = settings.catalog_cache.settings();
    let scopes = Arc::new(ScopeCatalog::new(
        shared.repositories.clone(),
        shared.clock.clone(),
        settings.default_scopes.clone(),
        cache,
    ));
    let tools = Arc::new(ToolService::new(
        shared.repositories.clone(),
        scopes.clone(),
        shared.clock.clone(),
        cache,
    ));
    registry.subscribe(scopes.clone());
    registry.subscribe(tools.clone());
    OAuth {
        agents: Arc::new(AgentService::new(
            shared.repositories.clone(),
            shared.pepper.clone(),
            shared.clock.clone(),
            grace,
        )),
        clients: Arc::new(ClientAuthenticator::new(
            shared.repositories.clone(),
            shared.pepper.clone(),
            shared.clock.clone(),
        )),
        scopes,
        tools,
    }
}
