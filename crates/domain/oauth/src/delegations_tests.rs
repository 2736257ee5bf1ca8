//! Delegation grants against the in-memory stores: a grant in force only while its
//! grantor holds what it names, its agent may have it, and it is neither revoked nor
//! expired.

use std::sync::Arc;

use chrono::Duration;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, AuthContext, CacheSettings, Clock as _, ManualClock, Pepper};

use crate::memory::{MemoryAccessRules, MemoryAgents, MemoryDelegations, MemoryPrincipals};
use crate::*;

struct World {
    clock: Arc<ManualClock>,
    agents: AgentService,
    principals: PrincipalService,
    delegations: DelegationService,
    admin: AuthContext,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let store = Arc::new(MemoryAgents::new(audit.clone()));
    let principals = Arc::new(MemoryPrincipals::new(store.clone()));
    let records = Arc::new(TokenRecords::new(CacheSettings::default()));
    let cache = Arc::new(AgentCache::new(store.clone(), CacheSettings::default()));
    let agents = AgentService::new(
        store.clone(),
        cache.clone(),
        Arc::new(Pepper::new(&[9; 32]).unwrap()),
        clock.clone(),
        Duration::hours(1),
    );
    let defaults = DefaultScopes::from_yaml(
        "scopes:\n  - name: tools:read\n  - name: tools:execute\n    implies: [tools:read]\n",
    )
    .unwrap();
    let scopes = Arc::new(ScopeCatalog::new(
        store.clone(),
        clock.clone(),
        defaults,
        CacheSettings::default(),
    ));
    let tools = Arc::new(ToolService::new(
        store.clone(),
        scopes.clone(),
        clock.clone(),
        CacheSettings::default(),
    ));
    let rules = Arc::new(AccessRules::new(
        Arc::new(MemoryAccessRules::new(audit)),
        clock.clone(),
        CacheSettings::default(),
    ));
    let entitlements = Arc::new(Entitlements::new(scopes, tools, rules));
    World {
        agents,
        principals: PrincipalService::new(principals.clone(), records.clone(), clock.clone()),
        delegations: DelegationService::new(
            Arc::new(MemoryDelegations::new(store)),
            cache,
            principals,
            entitlements,
            records,
            clock.clone(),
        ),
        clock,
        admin: crate::tests::admin(AccountId::random()),
    }
}

fn spec(name: &str, scopes: &[&str]) -> AgentSpec {
    AgentSpec {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..crate::tests::spec(name)
    }
}

impl World {
    async fn agent(&self, name: &str, scopes: &[&str]) -> Agent {
        let (_, token) = self
            .agents
            .register(&self.admin, spec(name, scopes))
            .await
            .unwrap();
        self.agents.activate(token.expose()).await.unwrap().0
    }

    /// A grant of `scopes` by `grantor` to `agent`, made by the admin.
    async fn grant(&self, grantor: Grantor, agent: &Agent, scopes: &[&str]) -> Delegation {
        self.delegations
            .create(&self.admin, Self::spec(grantor, agent, scopes))
            .await
            .unwrap()
    }

    fn spec(grantor: Grantor, agent: &Agent, scopes: &[&str]) -> DelegationSpec {
        DelegationSpec {
            grantor,
            agent_id: agent.id,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            tools: None,
            resources: Default::default(),
            task_id: None,
            max_depth: 2,
            expires_in_seconds: 3_600,
        }
    }
}

#[expect(clippy::panic, reason = "a test's failure")]
fn exceeds(result: Result<(), DelegationError>) -> String {
    match result {
        Err(DelegationError::Exceeds(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_grant_stops_working_when_its_grantor_no_longer_holds_what_it_names() {
    let w = world();
    let planner = w.agent("planner", &["tools:execute"]).await;
    let writer = w.agent("writer", &["tools:read"]).await;
    let grant = w
        .grant(Grantor::Agent(planner.id), &writer, &["tools:read"])
        .await;
    let now = w.clock.now();
    w.delegations.check_in_force(&grant, now).await.unwrap();

    // The planner is narrowed to a scope that does not imply `tools:read`.
    w.agents
        .update(
            &w.admin,
            planner.id,
            spec("planner", &["reports.read"]),
            None,
        )
        .await
        .unwrap();
    let message = exceeds(w.delegations.check_in_force(&grant, now).await);
    assert!(
        message.contains("the grantor may not have the scope `tools:read`"),
        "{message}"
    );

    // Given it back, the grant works again; disabled, the planner has nothing to delegate.
    w.agents
        .update(
            &w.admin,
            planner.id,
            spec("planner", &["tools:execute"]),
            None,
        )
        .await
        .unwrap();
    w.delegations.check_in_force(&grant, now).await.unwrap();
    w.agents
        .update(
            &w.admin,
            planner.id,
            spec("planner", &["tools:execute"]),
            Some(AgentState::Disabled),
        )
        .await
        .unwrap();
    let message = exceeds(w.delegations.check_in_force(&grant, now).await);
    assert!(message.contains("not active"), "{message}");
}

#[tokio::test]
async fn a_grant_stops_working_when_its_agent_may_no_longer_have_it_or_it_ends() {
    let w = world();
    let ada = w
        .principals
        .create(
            &w.admin,
            PrincipalSpec {
                username: "ada".into(),
                email: None,
                display_name: None,
                attributes: serde_json::Map::new(),
                active: true,
            },
        )
        .await
        .unwrap();
    let writer = w.agent("writer", &["tools:read"]).await;
    let grant = w
        .grant(Grantor::Principal(ada.id), &writer, &["tools:read"])
        .await;
    let now = w.clock.now();
    w.delegations.check_in_force(&grant, now).await.unwrap();

    // Expired at its end.
    let message = exceeds(
        w.delegations
            .check_in_force(&grant, now + Duration::seconds(3_600))
            .await,
    );
    assert_eq!(message, "the delegation grant is expired");

    // The agent may no longer have the scope.
    w.agents
        .update(&w.admin, writer.id, spec("writer", &["reports.read"]), None)
        .await
        .unwrap();
    let message = exceeds(w.delegations.check_in_force(&grant, now).await);
    assert!(
        message.contains("the agent may not have the scope `tools:read`"),
        "{message}"
    );
    w.agents
        .update(&w.admin, writer.id, spec("writer", &["tools:read"]), None)
        .await
        .unwrap();

    // The principal deactivated: nothing to delegate.
    w.principals
        .update(
            &w.admin,
            ada.id,
            PrincipalSpec {
                active: false,
                ..ada.spec.clone()
            },
        )
        .await
        .unwrap();
    let message = exceeds(w.delegations.check_in_force(&grant, now).await);
    assert!(message.contains("inactive"), "{message}");

    // Revoked.
    let revoked = w.delegations.revoke(&w.admin, grant.id).await.unwrap();
    let message = exceeds(w.delegations.check_in_force(&revoked, now).await);
    assert_eq!(message, "the delegation grant is revoked");
}

#[tokio::test]
async fn only_admins_make_read_and_revoke_grants() {
    let w = world();
    let planner = w.agent("planner", &["tools:execute"]).await;
    let writer = w.agent("writer", &["tools:read"]).await;
    let reader = crate::tests::caller(w.admin.account_id, &[]);
    let refused = w
        .delegations
        .create(
            &reader,
            World::spec(Grantor::Agent(planner.id), &writer, &["tools:read"]),
        )
        .await;
    assert!(
        matches!(refused, Err(DelegationError::Forbidden(_))),
        "{refused:?}"
    );
    let grant = w
        .grant(Grantor::Agent(planner.id), &writer, &["tools:read"])
        .await;
    assert!(matches!(
        w.delegations.get(&reader, grant.id).await,
        Err(DelegationError::Forbidden(_))
    ));
    assert!(matches!(
        w.delegations.revoke(&reader, grant.id).await,
        Err(DelegationError::Forbidden(_))
    ));
    // Another account's admin finds nothing.
    let stranger = crate::tests::admin(AccountId::random());
    assert!(matches!(
        w.delegations.get(&stranger, grant.id).await,
        Err(DelegationError::NotFound)
    ));
}
