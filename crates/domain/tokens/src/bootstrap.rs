//! The control plane's bootstrap: a new tenant with its owner and first admin token, or a
//! break-glass owner token for an existing tenant.

use std::sync::Arc;

use d2_accounts::{Account, AccountName, AccountRepo};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::text::optional_label;
use d2_kernel::{AccountId, Clock, Code, ErrorCode, StoreError, UserId};
use d2_members::User;
use ring::hmac;
use ring::rand::SystemRandom;
use serde_json::json;

use crate::ports::{BootstrapRepo, TokenRepo};
use crate::secret::{Pepper, RandomnessUnavailable};
use crate::service::{describe, mint};
use crate::token::{IssuedToken, TokenGrant, TokenRequest};

/// The control-plane secret, kept only as a MAC under a random per-process key, so that
/// checking a presented value is a constant-time tag comparison.
pub struct ControlPlaneSecret {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl ControlPlaneSecret {
    pub fn new(secret: &str) -> Result<Self, RandomnessUnavailable> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| RandomnessUnavailable)?;
        let tag = hmac::sign(&key, secret.as_bytes());
        Ok(Self { key, tag })
    }

    pub fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for ControlPlaneSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlPlaneSecret(redacted)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap is disabled: no control-plane token is configured")]
    Disabled,
    #[error("the control-plane token is missing or wrong")]
    InvalidControlPlaneToken,
    #[error("the account does not exist")]
    AccountNotFound,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for BootstrapError {
    fn code(&self) -> Code {
        match self {
            BootstrapError::Disabled => Code::BootstrapDisabled,
            BootstrapError::InvalidControlPlaneToken => Code::InvalidControlPlaneToken,
            BootstrapError::AccountNotFound => Code::AccountNotFound,
            BootstrapError::InvalidRequest(_) => Code::InvalidBody,
            BootstrapError::Randomness(_) => Code::Internal,
            BootstrapError::Store(error) => error.code(),
        }
    }
}

/// What to bootstrap. Without `account_id`, a new trial account; with it, a break-glass
/// owner token for that account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapRequest {
    pub account_id: Option<AccountId>,
    pub account_name: Option<String>,
    pub owner_email: Option<String>,
    pub owner_name: Option<String>,
    pub token_name: Option<String>,
}

#[derive(Debug)]
pub struct Bootstrapped {
    pub account_id: AccountId,
    pub user_id: Option<UserId>,
    pub issued: IssuedToken,
    /// `true` for a new account, `false` for a break-glass token.
    pub created_account: bool,
}

pub struct BootstrapService {
    control_plane: Option<ControlPlaneSecret>,
    repo: Arc<dyn BootstrapRepo>,
    accounts: Arc<dyn AccountRepo>,
    tokens: Arc<dyn TokenRepo>,
    pepper: Arc<Pepper>,
    clock: Arc<dyn Clock>,
    trial_days: u32,
}

impl std::fmt::Debug for BootstrapService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapService")
            .field("enabled", &self.control_plane.is_some())
            .finish_non_exhaustive()
    }
}

impl BootstrapService {
    pub fn new(
        control_plane: Option<ControlPlaneSecret>,
        repo: Arc<dyn BootstrapRepo>,
        accounts: Arc<dyn AccountRepo>,
        tokens: Arc<dyn TokenRepo>,
        pepper: Arc<Pepper>,
        clock: Arc<dyn Clock>,
        trial_days: u32,
    ) -> Self {
        Self {
            control_plane,
            repo,
            accounts,
            tokens,
            pepper,
            clock,
            trial_days,
        }
    }

    /// The HTTP route: the caller must present the control-plane token.
    pub async fn issue(
        &self,
        presented: Option<&str>,
        request: BootstrapRequest,
    ) -> Result<Bootstrapped, BootstrapError> {
        let secret = self
            .control_plane
            .as_ref()
            .ok_or(BootstrapError::Disabled)?;
        if !presented.is_some_and(|value| secret.matches(value)) {
            return Err(BootstrapError::InvalidControlPlaneToken);
        }
        self.issue_trusted(request).await
    }

    /// For callers already trusted with the database (the `d2ctl` command line).
    pub async fn issue_trusted(
        &self,
        request: BootstrapRequest,
    ) -> Result<Bootstrapped, BootstrapError> {
        let token_name = optional_label(request.token_name.as_deref(), 100).map_err(|_| {
            BootstrapError::InvalidRequest("`token_name` must be at most 100 characters")
        })?;
        match request.account_id {
            Some(account_id) => self.break_glass(account_id, token_name).await,
            None => self.new_account(&request, token_name).await,
        }
    }

    async fn new_account(
        &self,
        request: &BootstrapRequest,
        token_name: Option<String>,
    ) -> Result<Bootstrapped, BootstrapError> {
        let now = self.clock.now();
        let name = AccountName::parse(request.account_name.as_deref().unwrap_or("D2 account"))
            .map_err(|_| {
                BootstrapError::InvalidRequest("`account_name` must be 1 to 200 characters")
            })?;
        let email = request
            .owner_email
            .as_deref()
            .map(parse_email)
            .transpose()?;
        let owner_name = optional_label(request.owner_name.as_deref(), 200).map_err(|_| {
            BootstrapError::InvalidRequest("`owner_name` must be at most 200 characters")
        })?;
        let account = Account::new_trial(AccountId::random(), name, now, self.trial_days);
        let owner = User::invited_owner(email, owner_name, now);
        let token_request = TokenRequest {
            name: token_name.or_else(|| Some("bootstrap".to_owned())),
            grant: TokenGrant::Admin,
            app_name: None,
            expires_at: None,
            assigned_to: None,
        };
        let (new, secret) = mint(
            &self.pepper,
            account.id,
            &token_request,
            Some(owner.id),
            now,
        )?;
        let audit = AuditEntry::control_plane(account.id, AuditAction::AccountBootstrap, now)
            .target("account", account.id)
            .user(Some(owner.id))
            .metadata(json!({
                "plan": account.plan.as_str(),
                "trial_expires_at": account.trial_expires_at,
                "owner_user_id": owner.id.to_string(),
                "token_id": new.token.id.to_string(),
                "token": describe(&new.token),
            }));
        self.repo
            .create_account(&account, &owner, &new, &audit)
            .await?;
        tracing::info!(account.id = %account.id, token.id = %new.token.id, "account bootstrapped");
        Ok(Bootstrapped {
            account_id: account.id,
            user_id: Some(owner.id),
            issued: IssuedToken {
                token: new.token,
                secret,
            },
            created_account: true,
        })
    }

    async fn break_glass(
        &self,
        account_id: AccountId,
        token_name: Option<String>,
    ) -> Result<Bootstrapped, BootstrapError> {
        if self.accounts.find_account(account_id).await?.is_none() {
            return Err(BootstrapError::AccountNotFound);
        }
        let owner = self.accounts.first_owner(account_id).await?;
        let now = self.clock.now();
        let token_request = TokenRequest {
            name: token_name.or_else(|| Some("break-glass".to_owned())),
            grant: TokenGrant::Admin,
            app_name: None,
            expires_at: None,
            assigned_to: None,
        };
        let (new, secret) = mint(&self.pepper, account_id, &token_request, owner, now)?;
        let audit = AuditEntry::control_plane(account_id, AuditAction::TokenBreakGlass, now)
            .target("token", new.token.id)
            .user(owner)
            .metadata(describe(&new.token));
        self.tokens.insert(&new, &audit).await?;
        tracing::warn!(account.id = %account_id, token.id = %new.token.id, "break-glass owner token issued");
        Ok(Bootstrapped {
            account_id,
            user_id: owner,
            issued: IssuedToken {
                token: new.token,
                secret,
            },
            created_account: false,
        })
    }
}

fn parse_email(raw: &str) -> Result<String, BootstrapError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(BootstrapError::InvalidRequest(
            "`owner_email` is not an email address",
        ))
    }
}
