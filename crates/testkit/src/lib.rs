#![doc = include_str!("../README.md")]

use d2_events::{AnalyticsStore, EventStore, ExportCheckpoints, NewEvent};
use d2_kernel::{AccountId, TaskQueue};

#[doc(hidden)]
pub mod __private {
    pub use {d2_events, d2_kernel, d2_members, d2_policy, d2_tokens, tokio};
}

/// A store the contract suites run against. Each constructor returns a fresh store for
/// one suite, with whatever keeps it alive (a test database) as its guard.
#[expect(async_fn_in_trait, reason = "used by test code only, on one runtime")]
pub trait ContractStore {
    type Guard;
    type Tokens: d2_tokens::contract::Store;
    type Policies: d2_policy::contract::Store;
    type Events: EventStore + AnalyticsStore + ExportCheckpoints;
    type Tasks: TaskQueue + 'static;
    type Members: d2_members::contract::Store;

    async fn tokens() -> (Self::Guard, Self::Tokens);

    /// A store for people and memberships (which creates its own accounts).
    async fn members() -> (Self::Guard, Self::Members);

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

/// One test per contract suite for the store `$kit` (a [`ContractStore`]). Every suite of
/// every port is in this list, so every store runs every suite.
#[macro_export]
macro_rules! contract_suites {
    ($kit:ty) => {
        $crate::contract_suites!(@tokens $kit: accounts, tokens, audit, trial_locker, token_races, token_expiry, token_people, token_limit, token_limit_races, token_updates, token_usage);
        $crate::contract_suites!(@policies $kit: policies, publisher_keys, signing_keys);
        $crate::contract_suites!(@members $kit: sign_in, sign_in_races, memberships, member_changes, last_owner_races, invitations, invitation_acceptance, invitation_limit_races);

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn earlier_content_contract() {
            let (_guard, store, a, _) = <$kit as $crate::ContractStore>::policies().await;
            $crate::__private::d2_policy::contract::earlier_content(&store, a).await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn publish_races_contract() {
            let (_guard, store, a, _) = <$kit as $crate::ContractStore>::policies().await;
            $crate::__private::d2_policy::contract::publish_races(&store, a).await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn event_store_contract() {
            let (_guard, store, a, b) = <$kit as $crate::ContractStore>::events().await;
            let until_final = || <$kit as $crate::ContractStore>::until_final(&store);
            $crate::__private::d2_events::contract::event_store(&store, a, b, until_final).await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn analytics_contract() {
            let (_guard, store, _, _) = <$kit as $crate::ContractStore>::events().await;
            let feeder = &store;
            $crate::__private::d2_events::contract::analytics(&store, |events| {
                <$kit as $crate::ContractStore>::feed(feeder, events)
            })
            .await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn checkpoints_contract() {
            let (_guard, store, _, _) = <$kit as $crate::ContractStore>::events().await;
            $crate::__private::d2_events::contract::checkpoints(&store).await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn refusals_contract() {
            let (_guard, store, a, b) = <$kit as $crate::ContractStore>::events().await;
            $crate::__private::d2_events::contract::refusals(&store, a, b).await;
        }

        #[$crate::__private::tokio::test(flavor = "multi_thread")]
        async fn task_queue_contract() {
            let (_guard, store, account) = <$kit as $crate::ContractStore>::tasks().await;
            $crate::__private::d2_kernel::task::contract::all(std::sync::Arc::new(store), account)
                .await;
        }
    };
    (@tokens $kit:ty: $($suite:ident),*) => {
        $(
            #[$crate::__private::tokio::test(flavor = "multi_thread")]
            async fn $suite() {
                let (_guard, store) = <$kit as $crate::ContractStore>::tokens().await;
                $crate::__private::d2_tokens::contract::$suite(&store).await;
            }
        )*
    };
    (@members $kit:ty: $($suite:ident),*) => {
        $(
            #[$crate::__private::tokio::test(flavor = "multi_thread")]
            async fn $suite() {
                let (_guard, store) = <$kit as $crate::ContractStore>::members().await;
                $crate::__private::d2_members::contract::$suite(&store).await;
            }
        )*
    };
    (@policies $kit:ty: $($suite:ident),*) => {
        $(
            #[$crate::__private::tokio::test(flavor = "multi_thread")]
            async fn $suite() {
                let (_guard, store, a, b) = <$kit as $crate::ContractStore>::policies().await;
                $crate::__private::d2_policy::contract::$suite(&store, a, b).await;
            }
        )*
    };
}

/// The suites on the in-memory fakes.
#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use d2_accounts::memory::MemoryAccountRepo;
    use d2_audit::memory::MemoryAuditLog;
    use d2_events::memory::MemoryEvents;
    use d2_events::{EventStore as _, NewEvent};
    use d2_jwks::memory::MemorySigningKeys;
    use d2_kernel::AccountId;
    use d2_kernel::task::memory::MemoryTasks;
    use d2_members::memory::MemoryMembers;
    use d2_policy::memory::MemoryPolicies;
    use d2_tokens::memory::MemoryStore;

    struct Memory;

    impl crate::ContractStore for Memory {
        type Guard = ();
        type Tokens = MemoryStore;
        type Policies = MemoryPolicies;
        type Events = MemoryEvents;
        type Tasks = MemoryTasks;
        type Members = MemoryMembers;

        async fn tokens() -> ((), MemoryStore) {
            let accounts = MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default()));
            ((), MemoryStore::new(Arc::new(accounts)))
        }

        async fn members() -> ((), MemoryMembers) {
            let accounts = MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default()));
            ((), MemoryMembers::new(Arc::new(accounts)))
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
}
