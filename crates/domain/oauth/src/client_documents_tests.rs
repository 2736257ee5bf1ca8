//! Clients named by a metadata document: which URLs name one, what a document must say,
//! and the agent each becomes, against the in-memory store and documents served from a map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, ManualClock, Pepper};
use serde_json::{Value, json};

use crate::memory::MemoryAgents;
use crate::tests::admin;
use crate::*;

const URL: &str = "https://app.example/oauth/client.json";

/// Documents by URL, counting fetches; a URL it does not hold is refused.
#[derive(Default)]
struct Served {
    documents: Mutex<HashMap<String, Vec<u8>>>,
    fetches: Mutex<u32>,
}

impl Served {
    fn serve(&self, url: &str, document: &Value) {
        self.documents
            .lock()
            .unwrap()
            .insert(url.to_owned(), serde_json::to_vec(document).unwrap());
    }
}

#[async_trait]
impl ClientDocuments for Served {
    async fn document(&self, url: &url::Url) -> Result<Arc<[u8]>, FetchRefusal> {
        let mut fetches = self.fetches.lock().unwrap();
        *fetches = fetches.saturating_add(1);
        drop(fetches);
        self.documents
            .lock()
            .unwrap()
            .get(url.as_str())
            .map(|bytes| Arc::from(bytes.as_slice()))
            .ok_or_else(|| FetchRefusal(format!("{url} answered 404 Not Found")))
    }
}

struct World {
    served: Arc<Served>,
    policies: Arc<ClientPolicies>,
    clients: MetadataClients,
    agents: AgentService,
    authenticator: ClientAuthenticator,
    audit: Arc<MemoryAuditLog>,
    account: AccountId,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let repo = Arc::new(MemoryAgents::new(audit.clone()));
    let cache = Arc::new(AgentCache::new(
        repo.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    let served = Arc::new(Served::default());
    let policies = Arc::new(ClientPolicies::new(
        repo.clone(),
        clock.clone(),
        d2_kernel::CacheSettings::default(),
    ));
    let pepper = Arc::new(Pepper::new(&[9; 32]).unwrap());
    World {
        clients: MetadataClients::new(
            repo.clone(),
            cache.clone(),
            policies.clone(),
            served.clone(),
            clock.clone(),
        ),
        agents: AgentService::new(
            repo.clone(),
            cache.clone(),
            pepper.clone(),
            clock.clone(),
            chrono::Duration::hours(1),
        ),
        authenticator: ClientAuthenticator::new(
            repo,
            cache,
            pepper,
            Arc::new(crate::memory::NamedSignatures),
            clock,
        ),
        served,
        policies,
        audit,
        account: AccountId::random(),
    }
}

fn document() -> Value {
    json!({
        "client_id": URL,
        "client_name": "Notes app",
        "redirect_uris": ["https://app.example/callback", "http://127.0.0.1:3000/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "notes:read notes:write",
        "logo_uri": "https://app.example/logo.png",
    })
}

async fn accepting(world: &World) {
    world
        .policies
        .set(
            &admin(world.account),
            ClientPolicy {
                metadata_documents: true,
                dynamic_registration: false,
                initial_access: None,
                scopes: vec!["notes:read".into(), "notes:write".into(), "admin".into()],
                resources: vec!["https://mcp.example/".into()],
                updated_at: None,
            },
        )
        .await
        .unwrap();
}

#[test]
fn only_https_urls_with_a_clean_path_name_a_document() {
    for good in [
        URL,
        "https://app.example/c",
        "https://app.example:8443/c?version=2",
    ] {
        assert!(client_id_url(good).is_some(), "{good}");
    }
    for bad in [
        "http://app.example/client.json",
        "https://app.example",
        "https://app.example/",
        "https://app.example/client.json#frag",
        "https://user:pass@app.example/client.json",
        "https://app.example/a/../client.json",
        "https://app.example/./client.json",
        "https:///client.json",
        "https://App.example/client.json",
        "https://app.example:443/client.json",
        "urn:example:client",
        "not a url",
    ] {
        assert!(client_id_url(bad).is_none(), "{bad}");
    }
    let long = format!("https://app.example/{}", "a".repeat(2_000));
    assert!(client_id_url(&long).is_none());
}

#[test]
fn a_document_must_name_itself_and_hold_no_secret() {
    let url = client_id_url(URL).unwrap();
    let parse =
        |document: Value| ClientDocument::parse(&url, &serde_json::to_vec(&document).unwrap());
    let parsed = parse(document()).unwrap();
    assert_eq!(parsed.name, "Notes app");
    assert_eq!(
        parsed.redirect_uris,
        ["http://127.0.0.1:3000/cb", "https://app.example/callback"]
    );
    let refusals = [
        (
            json!({"client_id": "https://other.example/client.json"}),
            "not exactly the URL",
        ),
        (json!({"client_secret": "s3cret"}), "client secret"),
        (
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            "must be `none`",
        ),
        (
            json!({"grant_types": ["client_credentials"]}),
            "`grant_types`",
        ),
        (json!({"response_types": ["token"]}), "`response_types`"),
        (json!({"redirect_uris": []}), "at least one"),
        (
            json!({"redirect_uris": ["http://app.example/cb"]}),
            "not a redirect URI",
        ),
        (json!({"client_name": "x".repeat(101)}), "at most 100"),
    ];
    for (change, why) in refusals {
        let mut changed = document();
        for (name, value) in change.as_object().unwrap() {
            changed[name] = value.clone();
        }
        let error = parse(changed).unwrap_err().to_string();
        assert!(error.contains(why), "{why}: {error}");
    }
    let not_json = ClientDocument::parse(&url, b"<html>")
        .unwrap_err()
        .to_string();
    assert!(not_json.contains("not a JSON object"), "{not_json}");
    let mut nameless = document();
    nameless.as_object_mut().unwrap().remove("client_name");
    assert_eq!(parse(nameless).unwrap().name, "app.example");
}

#[tokio::test]
async fn an_account_accepts_no_document_until_its_policy_says_so() {
    let world = world();
    world.served.serve(URL, &document());
    let refused = world.clients.resolve(world.account, URL).await.unwrap_err();
    assert!(
        matches!(refused, ClientDocumentError::NotAccepted),
        "{refused}"
    );
    assert_eq!(
        *world.served.fetches.lock().unwrap(),
        0,
        "nothing is fetched"
    );
}

#[tokio::test]
async fn a_document_becomes_a_public_agent_once_and_follows_the_document() {
    let world = world();
    accepting(&world).await;
    world.served.serve(URL, &document());
    let agent = world.clients.resolve(world.account, URL).await.unwrap();
    assert_eq!(agent.client_id(), URL);
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!(agent.spec.auth_method, AuthMethod::None);
    assert_eq!(agent.spec.name, "Notes app");
    assert_eq!(
        agent.spec.scopes,
        ["notes:read", "notes:write"],
        "what the document asks, of what the policy allows"
    );
    assert_eq!(agent.spec.resources, ["https://mcp.example/"]);
    let again = world.clients.resolve(world.account, URL).await.unwrap();
    assert_eq!(again.id, agent.id, "one agent per account and URL");
    let registered = world
        .audit
        .all()
        .into_iter()
        .filter(|e| e.entry.action == (AuditAction::AgentRegister))
        .count();
    assert_eq!(registered, 1);

    // The document changes: its agent follows; what the account set stays.
    let mut changed = document();
    changed["client_name"] = json!("Notes app 2");
    changed["redirect_uris"] = json!(["https://app.example/new-callback"]);
    world.served.serve(URL, &changed);
    let followed = world.clients.resolve(world.account, URL).await.unwrap();
    assert_eq!(followed.id, agent.id);
    assert_eq!(followed.spec.name, "Notes app 2");
    assert_eq!(
        followed.spec.redirect_uris,
        ["https://app.example/new-callback"]
    );
    assert_eq!(followed.spec.scopes, agent.spec.scopes);

    // An admin's update keeps what the document says; disabling it refuses it.
    let mut update = followed.spec.clone();
    update.name = "Renamed by admin".into();
    update.auth_method = AuthMethod::ClientSecretBasic;
    update.scopes = vec!["notes:read".into()];
    let updated = world
        .agents
        .update(
            &admin(world.account),
            agent.id,
            update,
            Some(AgentState::Disabled),
        )
        .await
        .unwrap();
    assert_eq!(updated.spec.name, "Notes app 2");
    assert_eq!(updated.spec.auth_method, AuthMethod::None);
    assert_eq!(updated.spec.scopes, ["notes:read"]);
    let refused = world.clients.resolve(world.account, URL).await.unwrap_err();
    assert!(
        matches!(refused, ClientDocumentError::Disabled),
        "{refused}"
    );
}

#[tokio::test]
async fn a_public_agent_authenticates_by_its_url_in_its_own_account_only() {
    let world = world();
    accepting(&world).await;
    world.served.serve(URL, &document());
    let agent = world.clients.resolve(world.account, URL).await.unwrap();
    let by_url = world
        .authenticator
        .authenticate_public(world.account, URL)
        .await
        .unwrap();
    assert_eq!(by_url.id, agent.id);
    let by_id = world
        .authenticator
        .authenticate_public(world.account, &agent.id.to_string())
        .await
        .unwrap();
    assert_eq!(by_id.id, agent.id);
    for (account, client_id) in [
        (AccountId::random(), URL.to_owned()),
        (AccountId::random(), agent.id.to_string()),
        (world.account, "https://app.example/other.json".to_owned()),
    ] {
        assert!(
            world
                .authenticator
                .authenticate_public(account, &client_id)
                .await
                .is_err(),
            "{client_id}"
        );
    }
    // A confidential agent is never authenticated by its id alone.
    let (registered, token) = world
        .agents
        .register(&admin(world.account), crate::tests::spec("Confidential"))
        .await
        .unwrap();
    world.agents.activate(token.expose()).await.unwrap();
    let refused = world
        .authenticator
        .authenticate_public(world.account, &registered.id.to_string())
        .await
        .unwrap_err();
    assert!(matches!(refused, ClientAuthError::InvalidClient(_)));
}

#[tokio::test]
async fn a_document_that_cannot_be_fetched_or_is_invalid_is_refused() {
    let world = world();
    accepting(&world).await;
    let missing = world.clients.resolve(world.account, URL).await.unwrap_err();
    assert!(
        missing.to_string().contains("could not be fetched: "),
        "{missing}"
    );
    let mut lying = document();
    lying["client_id"] = json!("https://evil.example/client.json");
    world.served.serve(URL, &lying);
    let refused = world.clients.resolve(world.account, URL).await.unwrap_err();
    assert!(
        refused.to_string().contains("not exactly the URL"),
        "{refused}"
    );
    let bad_url = world
        .clients
        .resolve(world.account, "https://app.example/")
        .await
        .unwrap_err();
    assert!(matches!(bad_url, ClientDocumentError::BadUrl));
}

#[tokio::test]
async fn a_policy_is_checked_and_audited() {
    let world = world();
    let ctx = admin(world.account);
    let bad = world
        .policies
        .set(
            &ctx,
            ClientPolicy {
                metadata_documents: true,
                dynamic_registration: false,
                initial_access: None,
                scopes: vec!["has space".into()],
                resources: vec![],
                updated_at: None,
            },
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("is not a scope"), "{bad}");
    let default = world.policies.get(&ctx).await.unwrap();
    assert!(!default.metadata_documents);
    assert_eq!(default.updated_at, None);
    accepting(&world).await;
    let set = world.policies.get(&ctx).await.unwrap();
    assert_eq!(set.scopes, ["admin", "notes:read", "notes:write"], "sorted");
    assert!(set.updated_at.is_some());
    let audited = world
        .audit
        .all()
        .into_iter()
        .filter(|e| e.entry.action == (AuditAction::OAuthClientPolicyUpdate))
        .count();
    assert_eq!(audited, 1);
    let member = crate::tests::caller(world.account, &[]);
    assert!(world.policies.get(&member).await.is_err());
}
