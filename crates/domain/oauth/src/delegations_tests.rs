//! Delegation grants against the in-memory stores: a grant in force only while its
//! grantor holds what it names, its agent may have it, and it is neither revoked nor
//! expired; and the consent step of the authorization code flow, whose approvals are
//! grants of the principal.

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
    delegations: Arc<DelegationService>,
    authorizations: Authorizations,
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
    let delegations = Arc::new(DelegationService::new(
        Arc::new(MemoryDelegations::new(store.clone())),
        cache.clone(),
        principals.clone(),
        entitlements.clone(),
        records.clone(),
        clock.clone(),
    ));
    World {
        agents,
        principals: PrincipalService::new(principals.clone(), records, clock.clone()),
        authorizations: Authorizations::new(
            cache,
            principals,
            delegations.clone(),
            store,
            entitlements,
            Arc::new(Pepper::new(&[9; 32]).unwrap()),
            clock.clone(),
        ),
        delegations,
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

const CALLBACK: &str = "https://app.example/cb";

impl World {
    async fn agent_with_callback(&self) -> Agent {
        let spec = AgentSpec {
            redirect_uris: vec![CALLBACK.into()],
            ..spec("app", &["tools:read", "tools:execute"])
        };
        let (_, token) = self.agents.register(&self.admin, spec).await.unwrap();
        self.agents.activate(token.expose()).await.unwrap().0
    }

    async fn principal_with_email(&self, username: &str, email: &str) -> Principal {
        let spec = PrincipalSpec {
            username: username.into(),
            email: Some(email.into()),
            display_name: None,
            attributes: Default::default(),
            active: true,
        };
        self.principals.create(&self.admin, spec).await.unwrap()
    }

    async fn request(
        &self,
        agent: &Agent,
        extra: &[(&str, &str)],
    ) -> Result<AuthorizationRequest, (AuthorizeError, Option<ReturnTo>)> {
        let mut params = AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some(agent.client_id()),
            redirect_uri: Some(CALLBACK.into()),
            scope: Some("openid tools:read".into()),
            state: Some("xyz".into()),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            code_challenge_method: Some("S256".into()),
            ..AuthorizeParams::default()
        };
        for (name, value) in extra {
            let value = Some((*value).to_owned()).filter(|v| !v.is_empty());
            match *name {
                "client_id" => params.client_id = value,
                "redirect_uri" => params.redirect_uri = value,
                "scope" => params.scope = value,
                "code_challenge_method" => params.code_challenge_method = value,
                _ => unreachable!("a parameter the tests set"),
            }
        }
        self.authorizations
            .check(self.admin.account_id, &params)
            .await
            .map(|(request, _)| request)
    }
}

fn person(email: &str, verified: bool) -> SignedInPerson {
    SignedInPerson {
        subject: format!("sub-{email}"),
        email: Some(email.into()),
        email_verified: verified,
        name: None,
        auth_time: chrono::Utc::now(),
    }
}

#[expect(clippy::panic, reason = "a test's failure")]
fn refusal(
    result: Result<AuthorizationRequest, (AuthorizeError, Option<ReturnTo>)>,
) -> (String, bool) {
    match result {
        Err((AuthorizeError::Unredirectable { code, .. }, None)) => (code.to_owned(), false),
        Err((AuthorizeError::Redirect { error, .. }, Some(to))) => {
            assert_eq!(to.redirect_uri, CALLBACK);
            assert_eq!(to.state.as_deref(), Some("xyz"));
            (error.to_owned(), true)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_is_refused_on_a_page_until_its_client_and_redirect_uri_prove_where_to_answer() {
    let world = world();
    let agent = world.agent_with_callback().await;
    let request = world.request(&agent, &[]).await.unwrap();
    assert_eq!(request.scopes, vec!["tools:read".to_owned()]);
    assert!(
        request.openid,
        "openid asks for an ID token, not for a scope"
    );
    for (extra, expected) in [
        (vec![("client_id", "nobody")], ("invalid_client", false)),
        (
            vec![("redirect_uri", "https://app.example/other")],
            ("invalid_redirect_uri", false),
        ),
        (
            vec![("code_challenge_method", "plain")],
            ("invalid_request", true),
        ),
        (vec![("scope", "admin")], ("invalid_scope", true)),
    ] {
        let (code, redirected) = refusal(world.request(&agent, &extra).await);
        assert_eq!((code.as_str(), redirected), expected, "{extra:?}");
    }
}

#[tokio::test]
async fn an_approval_is_the_principals_grant_remembered_until_withdrawn() {
    let world = world();
    let agent = world.agent_with_callback().await;
    let ada = world.principal_with_email("ada", "Ada@Example.com").await;
    let other = world.principal_with_email("bob", "bob@example.com").await;
    let account = world.admin.account_id;
    let auth = &world.authorizations;

    // The person is the principal with the email the provider vouches for.
    let found = auth
        .principal_of(account, &person("ada@example.com", true))
        .await
        .unwrap();
    assert_eq!(found.unwrap().id, ada.id);
    for (email, verified) in [("ada@example.com", false), ("eve@example.com", true)] {
        let found = auth
            .principal_of(account, &person(email, verified))
            .await
            .unwrap();
        assert!(found.is_err(), "{email} {verified}");
    }

    let both = world
        .request(&agent, &[("scope", "tools:read tools:execute")])
        .await
        .unwrap();
    assert!(auth.remembered(&both, ada.id).await.unwrap().is_none());
    let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    // Nothing approved is a denial; naming what was not asked is refused.
    for (scopes, error) in [
        (set(&[]), "access_denied"),
        (set(&["admin"]), "invalid_request"),
    ] {
        match auth.approve(&both, ada.id, scopes, set(&[])).await {
            Err(AuthorizeError::Redirect { error: said, .. }) => assert_eq!(said, error),
            other => unreachable!("expected {error}, got {other:?}"),
        }
    }
    let grant = auth
        .approve(&both, ada.id, set(&["tools:read"]), set(&[]))
        .await
        .unwrap();
    assert_eq!(grant.grantor, Grantor::Principal(ada.id));
    assert_eq!(grant.created_by, format!("principal:{}", ada.id));
    assert_eq!(grant.scopes, set(&["tools:read"]));
    assert_eq!(grant.tools, None, "no tool was offered: none is named");

    // Remembered for what it named, not for more; another principal's consent is theirs.
    let read = world
        .request(&agent, &[("scope", "tools:read")])
        .await
        .unwrap();
    assert_eq!(
        auth.remembered(&read, ada.id).await.unwrap().map(|g| g.id),
        Some(grant.id)
    );
    assert!(auth.remembered(&both, ada.id).await.unwrap().is_none());
    assert!(auth.remembered(&read, other.id).await.unwrap().is_none());

    // The code carries what the grant named of the request.
    let code = auth
        .issue_code(&both, ada.id, &grant, world.clock.now())
        .await
        .unwrap();
    assert!(code.starts_with("d2ac_"), "{code}");
    assert_eq!(auth.consents(account, ada.id).await.unwrap().len(), 1);

    // Withdrawn by her (not by another), it is remembered no more.
    assert!(!auth.withdraw(account, other.id, grant.id).await.unwrap());
    assert!(auth.withdraw(account, ada.id, grant.id).await.unwrap());
    assert!(auth.remembered(&read, ada.id).await.unwrap().is_none());
    assert!(auth.consents(account, ada.id).await.unwrap().is_empty());
    let revoked = world.delegations.get(&world.admin, grant.id).await.unwrap();
    assert_eq!(
        revoked.revocation.map(|r| (r.reason, r.by)),
        Some(("withdrawn".to_owned(), format!("principal:{}", ada.id)))
    );
}
