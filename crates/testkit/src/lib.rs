#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use d2_events::{AnalyticsStore, EventStore, ExportCheckpoints, NewEvent};
use d2_kernel::{AccountId, TaskQueue};

pub mod fixtures;
pub mod suites;

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// A store the contract suites run against. Each constructor returns a fresh store for
/// one suite, with whatever keeps it alive (a test database) as its guard.
#[expect(async_fn_in_trait, reason = "used by test code only, on one runtime")]
pub trait ContractStore {
    type Guard;
    type Tokens: suites::tokens::Store;
    type Policies: suites::policies::Store;
    type Events: EventStore + AnalyticsStore + ExportCheckpoints;
    type Tasks: TaskQueue + 'static;
    type Members: suites::members::Store;
    type Agents: suites::agents::Store;
    type Principals: suites::principals::Store;
    type AccessRules: suites::access_rules::Store;
    type Catalog: suites::catalog::Store;
    type Delegations: suites::authorization_codes::Store;
    type Billing: suites::billing::Store;

    async fn tokens() -> (Self::Guard, Self::Tokens);

    /// A store for people and memberships (which creates its own accounts).
    async fn members() -> (Self::Guard, Self::Members);

    /// A store with two accounts the agent suites may write into.
    async fn agents() -> (Self::Guard, Self::Agents, AccountId, AccountId);

    /// A store with two accounts the principal suites may write into.
    async fn principals() -> (Self::Guard, Self::Principals, AccountId, AccountId);

    /// A store with two accounts the access rule suites may write into.
    async fn access_rules() -> (Self::Guard, Self::AccessRules, AccountId, AccountId);

    /// A store with two accounts the catalog suites may write into (and register agents
    /// in).
    async fn catalog() -> (Self::Guard, Self::Catalog, AccountId, AccountId);

    /// A store with two accounts, each with the agents and principal the delegation
    /// suites' grants (and the authorization codes under them) name.
    async fn delegations() -> (
        Self::Guard,
        Self::Delegations,
        fixtures::Parties,
        fixtures::Parties,
    );

    /// A store with two trial accounts the billing suites may write into.
    async fn billing() -> (Self::Guard, Self::Billing, AccountId, AccountId);

    /// A store with two accounts the policy suites may write into.
    async fn policies() -> (Self::Guard, Self::Policies, AccountId, AccountId);

    /// A store with two accounts the event suites may write into.
    async fn events() -> (Self::Guard, Self::Events, AccountId, AccountId);

    /// Returns once every stored event is final for the export.
    async fn until_final(store: &Self::Events);

    /// Stores `events`, creating the accounts they name when the store needs them.
    async fn feed(store: &Self::Events, events: Vec<NewEvent>);

    /// A store with an account tasks may name.
    async fn tasks() -> (Self::Guard, Self::Tasks, AccountId);
}

/// One test per contract suite for the store `$kit` (a [`ContractStore`]), named after its
/// suite. Every suite of every port is in this one list, so every store runs every suite;
/// a test of this crate fails when a suite of [`suites`] is neither in it nor says where
/// else it runs.
#[macro_export]
macro_rules! contract_suites {
    ($kit:ty) => {
        $crate::__contract_suite_list!(__contract_suite_tests $kit);
    };
}

/// The list: every suite, under the `ContractStore` constructor that makes its store and
/// the arguments it takes. Hands it to the macro `$then` (with `$args` first):
/// [`contract_suites!`] makes tests of it, this crate's own test reads its names.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_suite_list {
    ($then:ident $($args:tt)*) => {
        $crate::$then! {
            [$($args)*]
            tokens(store):
                accounts::accounts,
                accounts::trial_locker,
                audit::audit,
                tokens::tokens,
                tokens::token_races,
                tokens::token_expiry,
                tokens::token_people,
                tokens::token_limit,
                tokens::token_limit_races,
                tokens::token_updates,
                tokens::token_usage;
            members(store):
                members::sign_in,
                members::sign_in_races,
                members::memberships,
                members::member_changes,
                members::last_owner_races,
                invitations::invitations,
                invitations::invitation_acceptance,
                invitations::invitation_limit_races;
            policies(store, a, b):
                policies::policies,
                policies::publisher_keys,
                signing_keys::signing_keys;
            policies(store, a):
                policies::earlier_content,
                policies::publish_races;
            events(store, a, b, until_final): events::event_store;
            events(store, feed): events::analytics;
            events(store): events::checkpoints;
            events(store, a, b): events::refusals;
            tasks(queue, account): tasks::task_queue;
            agents(store, a, b): agents::agents, agents::metadata_clients, agents::dynamic_clients;
            agents(store, a):
                agents::agent_activation_races,
                agents::assertion_replays,
                oauth_tokens::refresh_races,
                oauth_tokens::issuance_races;
            agents(store, a, b): oauth_tokens::oauth_tokens, oauth_tokens::token_pruning;
            principals(store, a, b): principals::principals;
            principals(store, a): principals::principal_races;
            delegations(store, a, b):
                delegations::delegations,
                authorization_codes::authorization_codes;
            delegations(store, a): delegations::delegation_races;
            access_rules(store, a, b): access_rules::access_rules;
            access_rules(store, a): access_rules::access_rule_races;
            catalog(store, a, b):
                catalog::tools,
                catalog::tool_bindings,
                catalog::scopes;
            catalog(store, a):
                catalog::scope_seeding_races,
                catalog::scope_change_races;
            billing(store, a, b):
                billing::provider_events,
                billing::credit_ledger,
                billing::usage_records,
                billing::reservations,
                billing::budgets,
                billing::billing_history,
                billing::included_grants,
                billing::notices;
            billing(store, a):
                billing::provider_event_races,
                billing::credit_races,
                billing::usage_races;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_suite_tests {
    ([$kit:ty] $($store:ident $args:tt: $($module:ident::$suite:ident),+;)*) => {
        $($($crate::__contract_suite_test!($kit, $store $args, $module::$suite);)+)*
    };
}

/// The names of the list, `module::suite`.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_suite_names {
    ([] $($store:ident $args:tt: $($module:ident::$suite:ident),+;)*) => {
        [$($(concat!(stringify!($module), "::", stringify!($suite))),+),*]
    };
}

/// One suite's test: the store from its constructor, then the suite with its arguments.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_suite_test {
    (@test $suite:ident $body:block) => {
        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn $suite() $body
    };
    ($kit:ty, $store:ident(store), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, ..) = <$kit as $crate::ContractStore>::$store().await;
            $crate::suites::$module::$suite(&store).await;
        });
    };
    ($kit:ty, $store:ident(store, a), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, a, _) = <$kit as $crate::ContractStore>::$store().await;
            $crate::suites::$module::$suite(&store, a).await;
        });
    };
    ($kit:ty, $store:ident(store, a, b), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, a, b) = <$kit as $crate::ContractStore>::$store().await;
            $crate::suites::$module::$suite(&store, a, b).await;
        });
    };
    ($kit:ty, events(store, a, b, until_final), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, a, b) = <$kit as $crate::ContractStore>::events().await;
            let until_final = || <$kit as $crate::ContractStore>::until_final(&store);
            $crate::suites::$module::$suite(&store, a, b, until_final).await;
        });
    };
    ($kit:ty, events(store, feed), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, _, _) = <$kit as $crate::ContractStore>::events().await;
            let feeder = &store;
            $crate::suites::$module::$suite(&store, |events| {
                <$kit as $crate::ContractStore>::feed(feeder, events)
            })
            .await;
        });
    };
    ($kit:ty, tasks(queue, account), $module:ident::$suite:ident) => {
        $crate::__contract_suite_test!(@test $suite {
            let (_guard, store, account) = <$kit as $crate::ContractStore>::tasks().await;
            $crate::suites::$module::$suite(std::sync::Arc::new(store), account).await;
        });
    };
}

/// The suites on the in-memory fakes.
#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use chrono::Utc;
    use d2_accounts::memory::MemoryAccountRepo;
    use d2_accounts::{Account, AccountName};
    use d2_audit::memory::MemoryAuditLog;
    use d2_billing::memory::MemoryBillingRepo;
    use d2_events::memory::MemoryEvents;
    use d2_events::{EventStore as _, NewEvent};
    use d2_jwks::memory::MemorySigningKeys;
    use d2_kernel::AccountId;
    use d2_kernel::limit::LocalQuotas;
    use d2_kernel::task::memory::MemoryTasks;
    use d2_members::memory::MemoryMembers;
    use d2_oauth::memory::{MemoryAccessRules, MemoryAgents, MemoryDelegations, MemoryPrincipals};
    use d2_policy::memory::MemoryPolicies;
    use d2_tokens::memory::MemoryStore;

    use crate::fixtures::Parties;

    struct Memory;

    impl crate::ContractStore for Memory {
        type Guard = ();
        type Tokens = MemoryStore;
        type Policies = MemoryPolicies;
        type Events = MemoryEvents;
        type Tasks = MemoryTasks;
        type Members = MemoryMembers;
        type Agents = MemoryAgents;
        type Principals = MemoryPrincipals;
        type AccessRules = MemoryAccessRules;
        type Catalog = MemoryAgents;
        type Delegations = MemoryDelegations;
        type Billing = MemoryBillingRepo;

        async fn tokens() -> ((), MemoryStore) {
            let accounts = MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default()));
            ((), MemoryStore::new(Arc::new(accounts)))
        }

        async fn members() -> ((), MemoryMembers) {
            let accounts = MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default()));
            ((), MemoryMembers::new(Arc::new(accounts)))
        }

        async fn agents() -> ((), MemoryAgents, AccountId, AccountId) {
            let store = MemoryAgents::new(Arc::new(MemoryAuditLog::default()));
            ((), store, AccountId::random(), AccountId::random())
        }

        async fn principals() -> ((), MemoryPrincipals, AccountId, AccountId) {
            let store = MemoryPrincipals::new(Arc::new(MemoryAgents::new(Arc::new(
                MemoryAuditLog::default(),
            ))));
            ((), store, AccountId::random(), AccountId::random())
        }

        async fn access_rules() -> ((), MemoryAccessRules, AccountId, AccountId) {
            let store = MemoryAccessRules::new(Arc::new(MemoryAuditLog::default()));
            ((), store, AccountId::random(), AccountId::random())
        }

        async fn catalog() -> ((), MemoryAgents, AccountId, AccountId) {
            Self::agents().await
        }

        async fn delegations() -> ((), MemoryDelegations, Parties, Parties) {
            let store = MemoryDelegations::new(Arc::new(MemoryAgents::new(Arc::new(
                MemoryAuditLog::default(),
            ))));
            let parties = || Parties::unstored(AccountId::random());
            ((), store, parties(), parties())
        }

        async fn billing() -> ((), MemoryBillingRepo, AccountId, AccountId) {
            let accounts = Arc::new(MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default())));
            let (a, b) = (AccountId::random(), AccountId::random());
            for id in [a, b] {
                let name = AccountName::parse("Billing").unwrap_or_else(|_| unreachable!());
                accounts.insert_account(Account::new_trial(id, name, Utc::now(), 14));
            }
            ((), MemoryBillingRepo::new(accounts), a, b)
        }

        async fn policies() -> ((), MemoryPolicies, AccountId, AccountId) {
            let keys = MemorySigningKeys::new(Arc::new(MemoryAuditLog::default()));
            let store = MemoryPolicies::new(Arc::new(keys));
            ((), store, AccountId::random(), AccountId::random())
        }

        async fn events() -> ((), MemoryEvents, AccountId, AccountId) {
            (
                (),
                MemoryEvents::default(),
                AccountId::random(),
                AccountId::random(),
            )
        }

        // Every insert is final when it returns.
        async fn until_final(_: &MemoryEvents) {}

        async fn feed(store: &MemoryEvents, events: Vec<NewEvent>) {
            store.insert_events(&events).await.unwrap();
        }

        async fn tasks() -> ((), MemoryTasks, AccountId) {
            ((), MemoryTasks::default(), AccountId::random())
        }
    }

    crate::contract_suites!(Memory);

    /// Quotas are no port of the SQL stores: the suite runs on this process's buckets here,
    /// on Redis in its adapter.
    #[tokio::test]
    async fn quota_store() {
        crate::suites::quotas::quota_store(Arc::new(LocalQuotas::default())).await;
    }
}

/// The list is whole: every suite of [`suites`] is in it, or says where else it runs.
#[cfg(test)]
#[expect(clippy::panic, reason = "tests")]
mod listed {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The suites (and helpers) of `suites/` that are not in the list, and why.
    const ELSEWHERE: &[(&str, &str)] = &[
        (
            "policies::earlier_content_without_digests",
            "each SQL adapter runs it, forgetting the digests of its own rows",
        ),
        (
            "policies::publish_one",
            "not a suite: publishes a policy for the tests of ports that read them",
        ),
        (
            "quotas::quota_store",
            "not a port of the SQL stores: run on LocalQuotas here and on Redis in its adapter",
        ),
    ];

    const LISTED: &[&str] = &crate::__contract_suite_list!(__contract_suite_names);

    /// `module::name` of every `pub async fn` under `dir`, by the top module it is in.
    fn public_suites(dir: &Path, module: Option<&str>, found: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let here = module.unwrap_or(&stem).to_owned();
            if path.is_dir() {
                public_suites(&path, Some(&here), found);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(format!("{here}::{name}"));
                }
            }
        }
    }

    #[test]
    fn every_suite_is_in_the_list_or_says_where_it_runs() {
        let mut found = BTreeSet::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/suites");
        public_suites(&dir, None, &mut found);
        let elsewhere: BTreeSet<&str> = ELSEWHERE.iter().map(|(name, _)| *name).collect();
        for suite in &found {
            assert!(
                LISTED.contains(&suite.as_str()) || elsewhere.contains(suite.as_str()),
                "the suite `{suite}` is not in the list of `contract_suites!`: no store runs it"
            );
        }
        for suite in LISTED.iter().chain(&elsewhere) {
            assert!(
                found.contains(*suite),
                "`{suite}` is no public suite of `suites/`"
            );
        }
    }
}
