//! Agents (OAuth clients): registered pending, activated once by their registration's
//! digest (also under concurrent activations), listed newest first, updated without ever
//! becoming pending again, their secret rotated with the previous one kept, deleted; every
//! change audited, and nothing of one account reachable from another; clients named by a
//! metadata document stored once per account and URL (also under concurrent first
//! requests), following their document, and the accounts' client policies.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, PageRequest, SecretDigest};
use d2_oauth::{
    Agent, AgentRepo, AgentSpec, AgentState, AuthMethod, ClientPolicy, ClientPolicyRepo,
    OAuthTokenRepo, PendingRegistration,
};
use futures_util::future::join_all;
use serde_json::json;

use crate::fixtures::audited;
use crate::fixtures::{at, pepper};

/// Everything the suite needs from one store.
pub trait Store: AgentRepo + OAuthTokenRepo + ClientPolicyRepo + AuditLog {}
impl<T: AgentRepo + OAuthTokenRepo + ClientPolicyRepo + AuditLog> Store for T {}

fn digest(text: &str) -> SecretDigest {
    pepper().digest_text(text)
}

fn spec(name: &str) -> AgentSpec {
    AgentSpec {
        name: name.to_owned(),
        description: Some("Files reports".into()),
        scopes: vec!["reports.export".into(), "tools:read".into()],
        redirect_uris: vec!["https://agent.example/cb".into()],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::PrivateKeyJwt,
        jwks: Some(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "abc"}]})),
        jwks_uri: None,
        access_token_seconds: 600,
        refresh_token_seconds: None,
    }
}

fn entry(agent: &Agent, action: AuditAction) -> AuditEntry {
    AuditEntry::system(agent.account_id, action, at(0)).target("agent", agent.id)
}

/// Registers a pending agent of `account` named `name` at `at(seconds)`, its registration
/// token being `token`.
async fn register(
    store: &dyn Store,
    account: AccountId,
    name: &str,
    seconds: i64,
    token: &str,
) -> Agent {
    let agent = Agent::new(account, spec(name), None, at(seconds));
    let registration = PendingRegistration::new(digest(token), at(seconds));
    store
        .register(
            &agent,
            &registration,
            &entry(&agent, AuditAction::AgentRegister),
        )
        .await
        .unwrap_or_else(|e| panic!("register: {e}"));
    agent
}

async fn activate(store: &dyn Store, token: &str, secret: &str, seconds: i64) -> Option<Agent> {
    store
        .activate(&digest(token), &digest(secret), at(seconds), &|agent| {
            entry(agent, AuditAction::AgentActivate)
        })
        .await
        .unwrap_or_else(|e| panic!("activate: {e}"))
}

/// An active agent of `account` named `name`, registered with `token`.
pub(crate) async fn activated(
    store: &dyn Store,
    account: AccountId,
    name: &str,
    token: &str,
) -> Agent {
    register(store, account, name, 0, token).await;
    activate(store, token, &format!("{token}-secret"), 0)
        .await
        .unwrap_or_else(|| panic!("{name} activates"))
}

pub async fn agents(store: &dyn Store, a: AccountId, b: AccountId) {
    let pending = register(store, a, "Reporter", 0, "reg-1").await;
    assert_eq!(
        store.agent(a, pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(store.agent(b, pending.id).await.unwrap(), None);
    let (read, secrets) = store.client(pending.id).await.unwrap().unwrap();
    assert_eq!(read, pending, "every column comes back as written");
    assert_eq!(secrets, None, "no secret before activation");

    // Activation: the right token, once, before it expires.
    assert_eq!(activate(store, "reg-other", "s-0", 10).await, None);
    let active = activate(store, "reg-1", "s-1", 10).await.unwrap();
    assert_eq!(active.id, pending.id);
    assert_eq!(active.state, AgentState::Active);
    assert_eq!(active.activated_at, Some(at(10)));
    assert_eq!(
        activate(store, "reg-1", "s-2", 11).await,
        None,
        "single use"
    );
    let (_, secrets) = store.client(active.id).await.unwrap().unwrap();
    let secrets = secrets.unwrap();
    assert!(secrets.current.matches(&digest("s-1")));
    assert_eq!(secrets.previous, None);
    let late = register(store, a, "Late", 20, "reg-late").await;
    let expiry = d2_oauth::REGISTRATION_LIFETIME_HOURS * 3_600;
    assert_eq!(activate(store, "reg-late", "s-3", 20 + expiry).await, None);
    assert_eq!(
        store.agent(a, late.id).await.unwrap().unwrap().state,
        AgentState::Pending
    );

    // Rotation keeps the previous secret until the grace ends; a pending agent's stays none.
    let rotated = store
        .rotate_secret(a, active.id, &digest("s-4"), at(3_600), &|agent| {
            entry(agent, AuditAction::AgentSecretRotate)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.state, AgentState::Active);
    let secrets = store.client(active.id).await.unwrap().unwrap().1.unwrap();
    assert!(secrets.current.matches(&digest("s-4")));
    let (previous, until) = secrets.previous.unwrap();
    assert!(previous.matches(&digest("s-1")));
    assert_eq!(until, at(3_600));
    let unchanged = store
        .rotate_secret(a, late.id, &digest("s-5"), at(3_600), &|agent| {
            entry(agent, AuditAction::AgentSecretRotate)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.state, AgentState::Pending);
    assert_eq!(store.client(late.id).await.unwrap().unwrap().1, None);

    // Updates replace the spec; a pending agent stays pending.
    let new_spec = AgentSpec {
        name: "Reporter 2".into(),
        description: None,
        scopes: vec![],
        redirect_uris: vec![],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::ClientSecretPost,
        jwks: None,
        jwks_uri: None,
        access_token_seconds: 3_600,
        refresh_token_seconds: Some(7_200),
    };
    let audit_update = |agent: &Agent| entry(agent, AuditAction::AgentUpdate);
    let updated = store
        .update(
            a,
            active.id,
            &new_spec,
            Some(AgentState::Disabled),
            at(30),
            &audit_update,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.spec, new_spec);
    assert_eq!(updated.state, AgentState::Disabled);
    assert_eq!(updated.updated_at, at(30));
    assert_eq!(store.agent(a, active.id).await.unwrap(), Some(updated));
    let still_pending = store
        .update(
            a,
            late.id,
            &spec("Late"),
            Some(AgentState::Active),
            at(31),
            &audit_update,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still_pending.state, AgentState::Pending);

    // Another account reaches none of it.
    let foreign = [
        store
            .update(b, active.id, &spec("Taken"), None, at(40), &audit_update)
            .await
            .unwrap(),
        store
            .rotate_secret(b, active.id, &digest("s-6"), at(40), &|agent| {
                entry(agent, AuditAction::AgentSecretRotate)
            })
            .await
            .unwrap(),
    ];
    assert_eq!(foreign, [None, None]);
    let delete_entry = AuditEntry::system(a, AuditAction::AgentDelete, at(50));
    assert!(!store.delete(b, active.id, &delete_entry).await.unwrap());
    assert_eq!(
        store.agent(a, active.id).await.unwrap().unwrap().spec,
        new_spec
    );

    // Lists: newest first, a page at a time, one account's only.
    register(store, b, "Elsewhere", 5, "reg-b").await;
    let first = store.agents(a, &PageRequest::first(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].id, late.id);
    let cursor = first.next.unwrap().encode();
    let rest = store
        .agents(a, &PageRequest::parse(Some(10), Some(&cursor)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|x| x.id).collect::<Vec<_>>(),
        [active.id]
    );
    assert!(rest.next.is_none());
    assert_eq!(
        store
            .agents(b, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Deleted: gone, also as a client.
    assert!(store.delete(a, active.id, &delete_entry).await.unwrap());
    assert_eq!(store.client(active.id).await.unwrap(), None);
    assert!(!store.delete(a, active.id, &delete_entry).await.unwrap());

    assert_eq!(audited(store, a, AuditAction::AgentRegister).await, 2);
    assert_eq!(audited(store, a, AuditAction::AgentActivate).await, 1);
    assert_eq!(audited(store, a, AuditAction::AgentSecretRotate).await, 1);
    assert_eq!(audited(store, a, AuditAction::AgentUpdate).await, 2);
    assert_eq!(audited(store, a, AuditAction::AgentDelete).await, 1);
    assert_eq!(audited(store, b, AuditAction::AgentRegister).await, 1);
}

/// Eight concurrent activations with one registration token: one agent, one secret.
pub async fn agent_activation_races(store: &dyn Store, a: AccountId) {
    let agent = register(store, a, "Raced", 0, "reg-race").await;
    let secrets: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
    let outcomes = join_all(
        secrets
            .iter()
            .map(|secret| activate(store, "reg-race", secret, 1)),
    )
    .await;
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, outcome)| outcome.as_ref().map(|_| i))
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let stored = store.client(agent.id).await.unwrap().unwrap().1.unwrap();
    assert!(stored.current.matches(&digest(&secrets[winners[0]])));
    assert_eq!(audited(store, a, AuditAction::AgentActivate).await, 1);
}

/// A client assertion's `jti` is spent once per agent, also by eight concurrent spenders;
/// another agent's same `jti` is its own; an expired one is forgotten on the agent's next
/// spending and may then be spent again; an agent is deleted with its assertions.
pub async fn assertion_replays(store: &dyn Store, a: AccountId) {
    let first = register(store, a, "Signer", 0, "reg-signer").await;
    let second = register(store, a, "Other signer", 0, "reg-other-signer").await;
    let spend = |agent: &Agent, jti: &'static str, until: i64, now: i64| {
        let id = agent.id;
        async move {
            store
                .spend_assertion(id, jti, at(until), at(now))
                .await
                .unwrap()
        }
    };
    let outcomes = join_all((0..8).map(|_| spend(&first, "j-1", 300, 10))).await;
    assert_eq!(
        outcomes.iter().filter(|spent| **spent).count(),
        1,
        "{outcomes:?}"
    );
    assert!(spend(&second, "j-1", 300, 10).await, "another agent's jti");
    assert!(
        !spend(&first, "j-1", 300, 200).await,
        "replayed before it expires"
    );
    assert!(spend(&first, "j-2", 400, 200).await);
    // At 350 the first j-1 has expired: forgotten, it may be spent again.
    assert!(spend(&first, "j-1", 600, 350).await);
    assert!(!spend(&first, "j-2", 600, 350).await, "j-2 still lives");
    let entry = entry(&second, AuditAction::AgentDelete);
    assert!(
        store.delete(a, second.id, &entry).await.unwrap(),
        "an agent with spent assertions is deleted with them"
    );
}

/// The agent a metadata document at `url` makes in `account`, named `name`.
fn metadata_candidate(account: AccountId, url: &str, name: &str, seconds: i64) -> Agent {
    let mut candidate = Agent::new(
        account,
        AgentSpec {
            name: name.to_owned(),
            description: None,
            scopes: vec!["tools:read".into()],
            redirect_uris: vec!["https://app.example/cb".into()],
            resources: vec!["https://mcp.example/".into()],
            attributes: serde_json::Map::new(),
            auth_method: AuthMethod::None,
            jwks: None,
            jwks_uri: None,
            access_token_seconds: 600,
            refresh_token_seconds: Some(3_600),
        },
        None,
        at(seconds),
    );
    candidate.metadata_url = Some(url.to_owned());
    candidate.state = AgentState::Active;
    candidate.activated_at = Some(at(seconds));
    candidate
}

/// Clients named by a metadata document: concurrent first requests store one agent per
/// account and URL; a changed document updates what it rules and keeps what the account
/// set; an unchanged one writes nothing; another account's same URL is its own agent. And
/// the accounts' client policies, set and replaced, each account its own.
pub async fn metadata_clients(store: &dyn Store, a: AccountId, b: AccountId) {
    const URL: &str = "https://app.example/client.json";
    let audit_of = |agent: &Agent, created: bool| {
        let action = if created {
            AuditAction::AgentRegister
        } else {
            AuditAction::AgentUpdate
        };
        entry(agent, action)
    };
    assert_eq!(store.metadata_client_id(a, URL).await.unwrap(), None);
    let saves = join_all((0..6).map(|_| {
        let candidate = metadata_candidate(a, URL, "Notes", 0);
        async move {
            store
                .save_metadata_client(&candidate, &audit_of)
                .await
                .unwrap()
        }
    }))
    .await;
    let first = saves[0].id;
    assert!(
        saves.iter().all(|agent| agent.id == first),
        "one agent per URL"
    );
    assert_eq!(
        crate::fixtures::audited(store, a, AuditAction::AgentRegister).await,
        1
    );
    assert_eq!(store.metadata_client_id(a, URL).await.unwrap(), Some(first));
    assert_eq!(store.metadata_client_id(b, URL).await.unwrap(), None);
    let stored = store.agent(a, first).await.unwrap().unwrap();
    assert_eq!(stored.metadata_url.as_deref(), Some(URL));
    assert_eq!(stored.spec.auth_method, AuthMethod::None);
    assert_eq!(stored.client_id(), URL);

    // The account narrows and disables it; the document changes its name and URIs.
    let mut narrowed = stored.spec.clone();
    narrowed.scopes = vec![];
    store
        .update(
            a,
            first,
            &narrowed,
            Some(AgentState::Disabled),
            at(1),
            &|agent| entry(agent, AuditAction::AgentUpdate),
        )
        .await
        .unwrap()
        .unwrap();
    let mut changed = metadata_candidate(a, URL, "Notes 2", 2);
    changed.spec.redirect_uris = vec!["https://app.example/new".into()];
    let followed = store
        .save_metadata_client(&changed, &audit_of)
        .await
        .unwrap();
    assert_eq!(followed.id, first);
    assert_eq!(followed.spec.name, "Notes 2");
    assert_eq!(followed.spec.redirect_uris, ["https://app.example/new"]);
    assert!(
        followed.spec.scopes.is_empty(),
        "what the account set stays"
    );
    assert_eq!(followed.state, AgentState::Disabled);
    let updates = crate::fixtures::audited(store, a, AuditAction::AgentUpdate).await;
    let again = store
        .save_metadata_client(&changed, &audit_of)
        .await
        .unwrap();
    assert_eq!(again, followed, "an unchanged document changes nothing");
    assert_eq!(
        crate::fixtures::audited(store, a, AuditAction::AgentUpdate).await,
        updates,
        "and writes no audit record"
    );

    let other = store
        .save_metadata_client(&metadata_candidate(b, URL, "Notes", 3), &audit_of)
        .await
        .unwrap();
    assert_ne!(other.id, first, "another account's agent of the same URL");
    assert_eq!(
        store.metadata_client_id(b, URL).await.unwrap(),
        Some(other.id)
    );

    // Client policies.
    assert_eq!(store.client_policy(a).await.unwrap(), None);
    let policy = ClientPolicy {
        metadata_documents: true,
        dynamic_registration: false,
        initial_access: None,
        scopes: vec!["notes:read".into(), "tools:read".into()],
        resources: vec!["https://mcp.example/".into()],
        updated_at: Some(at(4)),
    };
    let policy_entry = AuditEntry::system(a, AuditAction::OAuthClientPolicyUpdate, at(4));
    store
        .set_client_policy(a, &policy, &policy_entry)
        .await
        .unwrap();
    assert_eq!(store.client_policy(a).await.unwrap(), Some(policy.clone()));
    let replaced = ClientPolicy {
        metadata_documents: false,
        scopes: vec![],
        updated_at: Some(at(5)),
        ..policy
    };
    store
        .set_client_policy(a, &replaced, &policy_entry)
        .await
        .unwrap();
    assert_eq!(store.client_policy(a).await.unwrap(), Some(replaced));
    assert_eq!(store.client_policy(b).await.unwrap(), None);
    assert_eq!(
        crate::fixtures::audited(store, a, AuditAction::OAuthClientPolicyUpdate).await,
        2
    );
}

/// Clients that register themselves: concurrent registrations of one fingerprint store one
/// agent (another account's is its own), a registration without one is always new, a
/// secret given is the one that authenticates; the reaper deletes only the old ones of
/// which no token is stored, each audited. (The SQL stores also keep those with a grant
/// in force; the delegation suites' store holds grants.)
pub async fn dynamic_clients(store: &dyn Store, a: AccountId, b: AccountId) {
    let dynamic = |account: AccountId, name: &str, seconds: i64| {
        let mut agent = metadata_candidate(account, "unused", name, seconds);
        agent.metadata_url = None;
        agent.registered_dynamically = true;
        agent
    };
    let fingerprint = digest("same metadata");
    let registrations = join_all((0..6).map(|_| {
        let agent = dynamic(a, "Desktop", 0);
        let entry = entry(&agent, AuditAction::AgentRegister);
        async move {
            store
                .register_dynamic(&agent, None, Some(&fingerprint), &entry)
                .await
                .unwrap()
        }
    }))
    .await;
    let first = registrations[0].id;
    assert!(registrations.iter().all(|agent| agent.id == first));
    assert_eq!(
        crate::fixtures::audited(store, a, AuditAction::AgentRegister).await,
        1
    );
    let stored = store.agent(a, first).await.unwrap().unwrap();
    assert!(stored.registered_dynamically);
    let elsewhere = dynamic(b, "Desktop", 1);
    let entry_b = entry(&elsewhere, AuditAction::AgentRegister);
    let theirs = store
        .register_dynamic(&elsewhere, None, Some(&fingerprint), &entry_b)
        .await
        .unwrap();
    assert_eq!(theirs.id, elsewhere.id, "another account's is its own");

    let confidential = dynamic(a, "Server", 0);
    let secret = digest("its secret");
    let entry_c = entry(&confidential, AuditAction::AgentRegister);
    store
        .register_dynamic(&confidential, Some(&secret), None, &entry_c)
        .await
        .unwrap();
    let (_, secrets) = store.client(confidential.id).await.unwrap().unwrap();
    assert!(secrets.unwrap().accept(&secret, at(1)));

    // Old and unused: the first and the confidential one once its token is gone; a young
    // one stays, and so does an old one with a token.
    let young = dynamic(a, "Young", 7_000);
    let entry_y = entry(&young, AuditAction::AgentRegister);
    store
        .register_dynamic(&young, None, None, &entry_y)
        .await
        .unwrap();
    crate::suites::oauth_tokens::granted(store, &confidential, "reaped", 10).await;
    let reaped = store
        .reap_dynamic(at(3_600), at(7_200), 100, &|agent| {
            entry(agent, AuditAction::AgentDelete)
        })
        .await
        .unwrap();
    assert_eq!(reaped, [a, b], "the oldest first, one account per agent");
    assert!(store.agent(a, first).await.unwrap().is_none());
    assert!(
        store.agent(a, confidential.id).await.unwrap().is_some(),
        "it has a token"
    );
    assert!(
        store.agent(a, young.id).await.unwrap().is_some(),
        "too young"
    );
    assert_eq!(
        crate::fixtures::audited(store, a, AuditAction::AgentDelete).await,
        1
    );
    let again = store
        .reap_dynamic(at(3_600), at(7_200), 100, &|agent| {
            entry(agent, AuditAction::AgentDelete)
        })
        .await
        .unwrap();
    assert!(again.is_empty());
}
