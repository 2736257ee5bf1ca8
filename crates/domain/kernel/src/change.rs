//! What a committed write changed, announced to every process sharing the store so each
//! drops what it cached (PostgreSQL carries it with NOTIFY, SQLite with a polled table).

use crate::{AccountId, AppName, TokenId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Token(TokenId),
    Account(AccountId),
    /// An app's policies changed (publish, draft, revoke, revert, rotation).
    App(AccountId, AppName),
    /// An account's signing keys changed.
    Keys(AccountId),
    /// A person's membership of an account changed (role changed, removed, joined).
    Member(AccountId, UserId),
    /// An account's OAuth agents or issued tokens changed (an agent updated or deleted,
    /// tokens revoked).
    OAuth(AccountId),
    /// An account's access rules changed (created, updated, deleted).
    AccessRules(AccountId),
    /// An account's OAuth catalog changed: its tools, its scopes or the tools bound to its
    /// agents.
    Catalog(AccountId),
    /// The feed was (re)connected: announcements may have been missed, so everything
    /// cached must be considered stale.
    Resync,
}

/// A service that caches what a [`Change`] can make stale. Each registers with the app's
/// change feed, which hands it every change announced by any process; a new domain that
/// caches implements this and adds itself to the list, and nothing else changes.
pub trait ChangeSubscriber: Send + Sync + 'static {
    /// Drops what `change` made stale (for [`Change::Resync`], everything). Changes that
    /// concern other services are ignored.
    fn on_change(&self, change: &Change);
}

impl Change {
    /// The announcement's text: `token:<id>`, `account:<id>`, `app:<account>:<app>` or
    /// `keys:<account>`, `member:<account>:<user>`, `oauth:<account>` or
    /// `access_rules:<account>`. `Resync` is never announced.
    /// `keys:<account>`, `member:<account>:<user>` or `catalog:<account>`. `Resync` is never
    /// announced.
    pub fn payload(&self) -> Option<String> {
        match self {
            Change::Token(id) => Some(format!("token:{id}")),
            Change::Account(id) => Some(format!("account:{id}")),
            Change::App(account, app) => Some(format!("app:{account}:{app}")),
            Change::Keys(account) => Some(format!("keys:{account}")),
            Change::Member(account, user) => Some(format!("member:{account}:{user}")),
            Change::OAuth(account) => Some(format!("oauth:{account}")),
            Change::AccessRules(account) => Some(format!("access_rules:{account}")),
            Change::Catalog(account) => Some(format!("catalog:{account}")),
            Change::Resync => None,
        }
    }

    /// The change an announcement names; `None` for text no version of D2 wrote.
    pub fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':')? {
            ("token", id) => id.parse().ok().map(Change::Token),
            ("account", id) => id.parse().ok().map(Change::Account),
            ("app", rest) => {
                let (account, app) = rest.split_once(':')?;
                Some(Change::App(account.parse().ok()?, AppName::normalise(app)))
            }
            ("keys", id) => id.parse().ok().map(Change::Keys),
            ("oauth", id) => id.parse().ok().map(Change::OAuth),
            ("member", rest) => {
                let (account, user) = rest.split_once(':')?;
                Some(Change::Member(account.parse().ok()?, user.parse().ok()?))
            }
            ("access_rules", id) => id.parse().ok().map(Change::AccessRules),
            ("catalog", id) => id.parse().ok().map(Change::Catalog),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_announced_change_parses_back() {
        let account = AccountId::random();
        for change in [
            Change::Token(TokenId::random()),
            Change::Account(account),
            Change::App(account, AppName::normalise("Billing Bot")),
            Change::Keys(account),
            Change::Member(account, UserId::random()),
            Change::OAuth(account),
            Change::AccessRules(account),
            Change::Catalog(account),
        ] {
            let payload = change.payload().unwrap();
            assert_eq!(Change::parse(&payload), Some(change));
        }
        assert_eq!(Change::Resync.payload(), None);
        assert_eq!(Change::parse("nonsense"), None);
        assert_eq!(Change::parse("token:not-a-uuid"), None);
        assert_eq!(Change::parse("access_rules:not-a-uuid"), None);
        assert_eq!(Change::parse("catalog:not-a-uuid"), None);
    }
}
