//! Authorization codes: stored by digest and read back whole within their account only,
//! spent exactly once with the tokens they bring (also under concurrent redemptions), a
//! spent code naming the family its first use brought, and pruned once expired.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::BTreeSet;

use d2_audit::{AuditAction, AuditEntry};
use d2_oauth::{
    AuthorizationCode, AuthorizationCodeRepo, AuthorizationRequest, Delegation, DelegationSpec,
    GrantType, Grantor, Hop, Issuance, OAuthTokenId, Prompt, Redemption, TokenKind, TokenRecord,
};
use futures_util::future::join_all;

use crate::fixtures::{Parties, at, audited, pepper};
use crate::suites::delegations::Store as DelegationStore;

/// Everything the suite needs from one store.
pub trait Store: DelegationStore + AuthorizationCodeRepo {}
impl<T: DelegationStore + AuthorizationCodeRepo> Store for T {}

/// A grant of the principal of `parties` to their first agent, stored.
async fn consent(store: &dyn Store, parties: &Parties) -> Delegation {
    let spec = DelegationSpec {
        grantor: Grantor::Principal(parties.principal),
        agent_id: parties.agents[0],
        scopes: BTreeSet::from(["reports.read".to_owned()]),
        tools: None,
        resources: BTreeSet::new(),
        task_id: None,
        max_depth: 1,
        expires_in_seconds: 3_600,
    };
    let grant = Delegation::new(parties.account, spec, "principal:contract".into(), at(0));
    let entry = AuditEntry::system(parties.account, AuditAction::DelegationCreate, at(0));
    assert!(store.create_delegation(&grant, &entry).await.unwrap());
    grant
}

fn code(parties: &Parties, grant: &Delegation) -> AuthorizationCode {
    let request = AuthorizationRequest {
        account_id: parties.account,
        agent_id: parties.agents[0],
        redirect_uri: "https://app.example/cb".into(),
        scopes: vec!["reports.read".into()],
        openid: true,
        resources: vec!["https://api.example/".into()],
        state: Some("s".into()),
        nonce: Some("n".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        prompt: Prompt::Auto,
    };
    AuthorizationCode::new(&request, parties.principal, grant.id, at(-5), at(0))
}

/// The access token a redemption of `code` brings, under its grant.
fn issuance(code: &AuthorizationCode, name: &str) -> Issuance {
    let id = OAuthTokenId::random();
    Issuance {
        access: TokenRecord {
            id,
            account_id: code.account_id,
            agent_id: code.agent_id,
            kind: TokenKind::Access,
            family_id: id,
            parent_id: None,
            subject: code.principal_id.to_string(),
            principal_id: Some(code.principal_id),
            chain: vec![Hop {
                agent_id: code.agent_id,
                delegation_id: code.delegation_id,
            }],
            may_act: None,
            dpop_jkt: None,
            scopes: code.scopes.clone(),
            audience: code.resources.clone(),
            task_id: format!("task-{name}"),
            parent_task_id: None,
            grant_type: GrantType::AuthorizationCode,
            digest: pepper().digest_text(name),
            issued_at: at(10),
            expires_at: at(3_610),
            revoked_at: None,
            revoked_reason: None,
        },
        refresh: None,
    }
}

fn issued(code: &AuthorizationCode) -> AuditEntry {
    AuditEntry::system(code.account_id, AuditAction::OAuthTokenIssue, at(10))
}

pub async fn authorization_codes(store: &dyn Store, a: Parties, b: Parties) {
    let grant = consent(store, &a).await;
    let code = code(&a, &grant);
    let digest = pepper().digest_text("d2ac_contract");
    assert!(store.create_code(&code, &digest).await.unwrap());
    assert_eq!(
        store.code(a.account, &digest).await.unwrap(),
        Some(code.clone())
    );
    assert_eq!(
        store.code(b.account, &digest).await.unwrap(),
        None,
        "another account's"
    );
    let other = pepper().digest_text("d2ac_other");
    assert_eq!(store.code(a.account, &other).await.unwrap(), None);

    // Another account cannot spend it, nor can an unknown code be spent.
    let first = issuance(&code, "first");
    for (account, digest) in [(b.account, &digest), (a.account, &other)] {
        let refused = store
            .redeem_code(account, digest, &first, &issued(&code), at(10))
            .await
            .unwrap();
        assert_eq!(refused, Redemption::Unknown);
    }
    assert_eq!(
        audited(store, a.account, AuditAction::OAuthTokenIssue).await,
        0
    );

    // Concurrent redemptions: one spends it, the others find it spent, naming the family.
    let issuances: Vec<Issuance> = (0..6)
        .map(|i| issuance(&code, &format!("race-{i}")))
        .collect();
    let entry = issued(&code);
    let outcomes = join_all(
        issuances
            .iter()
            .map(|issuance| store.redeem_code(a.account, &digest, issuance, &entry, at(10))),
    )
    .await;
    let outcomes: Vec<Redemption> = outcomes.into_iter().map(Result::unwrap).collect();
    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i] == Redemption::Redeemed)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let family = issuances[winners[0]].access.family_id;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(
                *outcome,
                Redemption::Spent {
                    family_id: Some(family)
                }
            );
        }
    }
    assert_eq!(
        audited(store, a.account, AuditAction::OAuthTokenIssue).await,
        1
    );
    let spent = store.code(a.account, &digest).await.unwrap().unwrap();
    assert_eq!(spent.spent_at, Some(at(10)));
    assert_eq!(spent.family_id, Some(family));

    // Pruned once expired, not before.
    assert_eq!(store.prune_codes(code.expires_at).await.unwrap(), 0);
    assert!(store.code(a.account, &digest).await.unwrap().is_some());
    assert_eq!(store.prune_codes(at(3_600)).await.unwrap(), 1);
    assert_eq!(store.code(a.account, &digest).await.unwrap(), None);
}
