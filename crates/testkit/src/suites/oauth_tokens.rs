//! Tokens issued to agents: stored with their lineage and found by id within their account
//! or by a refresh token's digest; a refresh token spent once (also under concurrent
//! spendings), a retry within the grace answered the sealed answer, a later reuse revoking
//! the family; revocations reaching a token's descendants or a whole family; lists newest
//! first with their filters; nothing of one account reachable from another, and an agent's
//! tokens gone with it.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, PageRequest, SecretDigest};
use d2_oauth::{
    Agent, AgentCounts, GrantType, Issuance, OAuthTokenId, RefreshIssuance, RefreshOutcome,
    RefreshRefusal, RevokeScope, TokenFilter, TokenKind, TokenRecord,
};
use futures_util::future::join_all;

use super::agents::{Store, activated};
use crate::fixtures::audited;
use crate::fixtures::{at, pepper};

fn digest(text: &str) -> SecretDigest {
    pepper().digest_text(text)
}

/// A token of `agent` named `name` (its digest's text), issued at `at(seconds)` for an hour.
fn record(
    agent: &Agent,
    kind: TokenKind,
    name: &str,
    family: Option<OAuthTokenId>,
    parent: Option<OAuthTokenId>,
    seconds: i64,
) -> TokenRecord {
    let id = OAuthTokenId::random();
    TokenRecord {
        id,
        account_id: agent.account_id,
        agent_id: agent.id,
        kind,
        family_id: family.unwrap_or(id),
        parent_id: parent,
        subject: agent.client_id(),
        scopes: vec!["a".into(), "b".into()],
        audience: vec!["https://api.example/".into()],
        task_id: format!("task-{name}"),
        parent_task_id: Some("task-parent".into()),
        grant_type: if parent.is_some() {
            GrantType::RefreshToken
        } else {
            GrantType::ClientCredentials
        },
        digest: digest(name),
        issued_at: at(seconds),
        expires_at: at(seconds + 3_600),
        revoked_at: None,
        revoked_reason: None,
        principal_id: None,
        chain: Vec::new(),
        may_act: None,
        dpop_jkt: None,
    }
}

fn audit(record: &TokenRecord, action: AuditAction) -> AuditEntry {
    AuditEntry::system(record.account_id, action, record.issued_at).target("oauth_token", record.id)
}

/// Access and refresh tokens of one grant, stored.
pub(crate) async fn granted(
    store: &dyn Store,
    agent: &Agent,
    name: &str,
    seconds: i64,
) -> Issuance {
    let refresh = record(
        agent,
        TokenKind::Refresh,
        &format!("{name}-rt"),
        None,
        None,
        seconds,
    );
    let access = record(
        agent,
        TokenKind::Access,
        &format!("{name}-at"),
        Some(refresh.id),
        None,
        seconds,
    );
    let issuance = Issuance {
        access,
        refresh: Some(refresh),
    };
    assert!(
        store
            .issue(
                &issuance,
                &audit(&issuance.access, AuditAction::OAuthTokenIssue)
            )
            .await
            .unwrap()
    );
    issuance
}

/// The tokens a refresh of `spent` issues, named `name`.
fn next(agent: &Agent, spent: &TokenRecord, name: &str, seconds: i64) -> RefreshIssuance {
    let refresh = record(
        agent,
        TokenKind::Refresh,
        &format!("{name}-rt"),
        Some(spent.family_id),
        Some(spent.id),
        seconds,
    );
    let access = record(
        agent,
        TokenKind::Access,
        &format!("{name}-at"),
        Some(spent.family_id),
        Some(spent.id),
        seconds,
    );
    RefreshIssuance {
        issuance: Issuance {
            access,
            refresh: Some(refresh),
        },
        sealed_answer: format!("answer of {name}").into_bytes(),
    }
}

async fn refresh(
    store: &dyn Store,
    agent: &Agent,
    presented: &str,
    next: &RefreshIssuance,
    now: DateTime<Utc>,
    replay_since: DateTime<Utc>,
) -> RefreshOutcome {
    let audit_of = |outcome: &RefreshOutcome, spent: &TokenRecord| {
        let action = match outcome {
            RefreshOutcome::Reused(_) => AuditAction::OAuthRefreshReuse,
            _ => AuditAction::OAuthTokenRefresh,
        };
        audit(spent, action)
    };
    store
        .refresh(
            &digest(presented),
            agent.id,
            now,
            replay_since,
            next,
            &audit_of,
        )
        .await
        .unwrap_or_else(|e| panic!("refresh: {e}"))
}

fn revoke_audit(account: AccountId) -> impl Fn(&[OAuthTokenId]) -> AuditEntry + Sync {
    move |_| AuditEntry::system(account, AuditAction::OAuthTokenRevoke, at(0))
}

pub async fn oauth_tokens(store: &dyn Store, a: AccountId, b: AccountId) {
    let agent = activated(store, a, "Issuer", "reg-issuer").await;
    let stranger = activated(store, b, "Stranger", "reg-stranger").await;
    let first = granted(store, &agent, "one", 0).await;
    let access = &first.access;
    let refresh_token = first.refresh.as_ref().unwrap();

    // Found by id in its account only, and refresh tokens by digest.
    assert_eq!(
        store.token(a, access.id).await.unwrap().as_ref(),
        Some(access)
    );
    assert_eq!(store.token(b, access.id).await.unwrap(), None);
    assert_eq!(
        store
            .refresh_token(&digest("one-rt"))
            .await
            .unwrap()
            .as_ref(),
        Some(refresh_token)
    );
    assert_eq!(
        store.refresh_token(&digest("one-at")).await.unwrap(),
        None,
        "refresh only"
    );

    // Refused: unknown, another client's, expired. Nothing written.
    let second = next(&agent, refresh_token, "two", 10);
    let since = at(0);
    assert_eq!(
        refresh(store, &agent, "nope", &second, at(10), since).await,
        RefreshOutcome::Refused(RefreshRefusal::Unknown)
    );
    assert_eq!(
        refresh(store, &stranger, "one-rt", &second, at(10), since).await,
        RefreshOutcome::Refused(RefreshRefusal::OtherClient)
    );
    assert_eq!(
        refresh(store, &agent, "one-rt", &second, at(3_600), since).await,
        RefreshOutcome::Refused(RefreshRefusal::Expired)
    );
    assert_eq!(
        store.token(a, second.issuance.access.id).await.unwrap(),
        None
    );

    // Spent once; a retry within the grace gets the sealed answer; a later one is a reuse.
    assert_eq!(
        refresh(store, &agent, "one-rt", &second, at(10), at(0)).await,
        RefreshOutcome::Rotated
    );
    let stored = store
        .token(a, second.issuance.access.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, second.issuance.access);
    assert_eq!(stored.parent_id, Some(refresh_token.id));
    let third = next(&agent, refresh_token, "three", 12);
    assert_eq!(
        refresh(store, &agent, "one-rt", &third, at(12), at(2)).await,
        RefreshOutcome::Replayed(b"answer of two".to_vec())
    );
    assert_eq!(
        store.token(a, third.issuance.access.id).await.unwrap(),
        None
    );
    let RefreshOutcome::Reused(revoked) =
        refresh(store, &agent, "one-rt", &third, at(30), at(20)).await
    else {
        panic!("a reuse after the grace");
    };
    let mut family: Vec<OAuthTokenId> = first
        .records()
        .chain(second.issuance.records())
        .map(|r| r.id)
        .collect();
    family.sort();
    assert_eq!(revoked, family);
    for id in &family {
        let token = store.token(a, *id).await.unwrap().unwrap();
        assert_eq!(token.revoked_at, Some(at(30)));
        assert_eq!(token.revoked_reason.as_deref(), Some("reuse"));
    }
    assert_eq!(
        refresh(store, &agent, "two-rt", &third, at(31), at(21)).await,
        RefreshOutcome::Refused(RefreshRefusal::Revoked)
    );

    // Revocation: a token and its descendants, or a family; only what still works.
    let root = granted(store, &agent, "root", 100).await;
    let child = record(
        &agent,
        TokenKind::Access,
        "child",
        Some(root.access.family_id),
        Some(root.access.id),
        101,
    );
    let grandchild = record(
        &agent,
        TokenKind::Access,
        "grandchild",
        Some(root.access.family_id),
        Some(child.id),
        102,
    );
    for token in [&child, &grandchild] {
        let issuance = Issuance {
            access: token.clone(),
            refresh: None,
        };
        assert!(
            store
                .issue(&issuance, &audit(token, AuditAction::OAuthTokenIssue))
                .await
                .unwrap()
        );
    }
    let audit_a = revoke_audit(a);
    assert_eq!(
        store
            .revoke(
                b,
                RevokeScope::WithDescendants(root.access.id),
                "admin",
                at(103),
                &revoke_audit(b)
            )
            .await
            .unwrap(),
        Vec::<OAuthTokenId>::new(),
        "another account revokes nothing"
    );
    let mut tree = vec![root.access.id, child.id, grandchild.id];
    tree.sort();
    assert_eq!(
        store
            .revoke(
                a,
                RevokeScope::WithDescendants(root.access.id),
                "admin",
                at(103),
                &audit_a
            )
            .await
            .unwrap(),
        tree
    );
    assert!(
        store
            .token(a, root.refresh.as_ref().unwrap().id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert_eq!(
        store
            .revoke(
                a,
                RevokeScope::WithDescendants(root.access.id),
                "admin",
                at(104),
                &audit_a
            )
            .await
            .unwrap(),
        Vec::<OAuthTokenId>::new(),
        "already revoked"
    );
    assert_eq!(
        store
            .revoke(
                a,
                RevokeScope::Family(root.access.family_id),
                "client",
                at(104),
                &audit_a
            )
            .await
            .unwrap(),
        vec![root.refresh.as_ref().unwrap().id]
    );

    // Lists, newest first, filtered, paged; counts.
    let live = granted(store, &agent, "live", 200).await;
    let all = store
        .tokens(a, &TokenFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.items[0].issued_at, at(200));
    let active = TokenFilter {
        active_at: Some(at(201)),
        ..TokenFilter::default()
    };
    let working = store
        .tokens(a, &active, &PageRequest::first(100))
        .await
        .unwrap();
    let mut working: Vec<OAuthTokenId> = working.items.iter().map(|t| t.id).collect();
    working.sort();
    let mut expected: Vec<OAuthTokenId> = live.records().map(|r| r.id).collect();
    expected.sort();
    assert_eq!(working, expected);
    let by_task = TokenFilter {
        task_id: Some("task-live-at".into()),
        kind: Some(TokenKind::Access),
        agent_id: Some(agent.id),
        ..TokenFilter::default()
    };
    let found = store
        .tokens(a, &by_task, &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(found.items, vec![live.access.clone()]);
    let page = store
        .tokens(a, &TokenFilter::default(), &PageRequest::first(5))
        .await
        .unwrap();
    let rest = store
        .tokens(
            a,
            &TokenFilter::default(),
            &PageRequest::parse(Some(100), page.next.as_ref().map(|c| c.encode()).as_deref())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len() + rest.items.len(), 10);
    assert!(rest.items.iter().all(|t| !page.items.contains(t)));
    assert_eq!(
        store
            .tokens(b, &TokenFilter::default(), &PageRequest::first(100))
            .await
            .unwrap()
            .items,
        vec![]
    );
    for (account, seconds) in [(a, 100), (a, 160), (b, 160)] {
        let denial = AuditEntry::system(account, AuditAction::OAuthTokenDeny, at(seconds));
        store.audit_refusal(&denial).await.unwrap();
    }
    let counts = store.counts(a, at(201), &[at(0), at(150)]).await.unwrap();
    assert_eq!((counts.active_access, counts.active_refresh), (1, 1));
    assert_eq!(counts.issued_since, vec![6, 1]);
    assert_eq!(
        counts.denied_since,
        vec![2, 1],
        "denials of the account only"
    );
    assert_eq!(
        counts.agents,
        AgentCounts {
            pending: 0,
            active: 1,
            disabled: 0
        }
    );

    // An agent's tokens go with it; none is issued to an agent that is gone.
    let entry = AuditEntry::system(a, AuditAction::AgentDelete, at(300)).target("agent", agent.id);
    assert!(store.delete(a, agent.id, &entry).await.unwrap());
    assert_eq!(store.token(a, live.access.id).await.unwrap(), None);
    let orphan = Issuance {
        access: record(&agent, TokenKind::Access, "orphan", None, None, 301),
        refresh: None,
    };
    assert!(
        !store
            .issue(
                &orphan,
                &audit(&orphan.access, AuditAction::OAuthTokenIssue)
            )
            .await
            .unwrap()
    );
    assert_eq!(store.token(a, orphan.access.id).await.unwrap(), None);
}

/// Eight concurrent refreshes with one token: one spends it, the others get its answer.
pub async fn refresh_races(store: &dyn Store, a: AccountId) {
    let agent = activated(store, a, "Racer", "reg-racer").await;
    let first = granted(store, &agent, "race", 0).await;
    let spent = first.refresh.as_ref().unwrap();
    let attempts: Vec<RefreshIssuance> = (0..8)
        .map(|i| next(&agent, spent, &format!("r{i}"), 5))
        .collect();
    let outcomes = join_all(
        attempts
            .iter()
            .map(|attempt| refresh(store, &agent, "race-rt", attempt, at(5), at(0))),
    )
    .await;
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| **outcome == RefreshOutcome::Rotated)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let answer = format!("answer of r{}", winners[0]).into_bytes();
    for (i, outcome) in outcomes.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(outcome, &RefreshOutcome::Replayed(answer.clone()));
        }
    }
    let stored = store
        .tokens(a, &TokenFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(stored.items.len(), 4, "one grant and one rotation");
}

/// Grants are pruned whole, in every account, once every token of theirs expired before the
/// cut: a refreshed grant whose newest token still works stays, with its oldest tokens.
pub async fn token_pruning(store: &dyn Store, a: AccountId, b: AccountId) {
    let agent = activated(store, a, "Pruned", "reg-pruned").await;
    let other = activated(store, b, "Elsewhere", "reg-elsewhere").await;
    // Expired at 3,600: one grant in each account.
    let old = granted(store, &agent, "old", 0).await;
    let elsewhere = granted(store, &other, "elsewhere", 0).await;
    // Issued at 0 and refreshed at 3,000: its newest tokens expire at 6,600.
    let living = granted(store, &agent, "living", 0).await;
    let spent = living.refresh.as_ref().unwrap();
    let refreshed = next(&agent, spent, "living-2", 3_000);
    assert_eq!(
        refresh(store, &agent, "living-rt", &refreshed, at(3_000), at(2_990)).await,
        RefreshOutcome::Rotated
    );

    assert_eq!(store.prune(at(3_600), 100).await.unwrap(), 0, "not before");
    let pruned = store.prune(at(5_000), 100).await.unwrap();
    assert_eq!(pruned, 4, "both expired grants, access and refresh");
    for gone in [&old.access, &elsewhere.access] {
        assert_eq!(store.token(gone.account_id, gone.id).await.unwrap(), None);
    }
    assert!(
        store.token(a, living.access.id).await.unwrap().is_some(),
        "a grant goes whole or not at all"
    );
    assert_eq!(store.prune(at(5_000), 100).await.unwrap(), 0);

    // A batch takes at most the families asked.
    for n in 0..3 {
        granted(store, &agent, &format!("batch-{n}"), 0).await;
    }
    assert_eq!(store.prune(at(5_000), 2).await.unwrap(), 4);
    assert_eq!(store.prune(at(5_000), 2).await.unwrap(), 2);
    assert_eq!(
        store.prune(at(7_000), 100).await.unwrap(),
        4,
        "the refreshed grant"
    );
}

/// Many issuances at once, as a busy token endpoint makes them (a store may commit them in
/// groups): each answered `true` and durable with its audit record, except those of an
/// agent deleted before they were written, answered `false` with nothing of theirs
/// written, whoever shares their transaction.
pub async fn issuance_races(store: &dyn Store, a: AccountId) {
    let kept = activated(store, a, "Kept", "reg-kept").await;
    let deleted = activated(store, a, "Deleted", "reg-deleted").await;
    let removal = AuditEntry::system(a, AuditAction::AgentDelete, at(1));
    assert!(store.delete(a, deleted.id, &removal).await.unwrap());
    let issuances: Vec<(Issuance, bool)> = (0..48)
        .map(|i| {
            let agent = if i % 3 == 0 { &deleted } else { &kept };
            let access = record(
                agent,
                TokenKind::Access,
                &format!("burst-{i}"),
                None,
                None,
                2,
            );
            let issuance = Issuance {
                access,
                refresh: None,
            };
            (issuance, agent.id == kept.id)
        })
        .collect();
    let audits: Vec<AuditEntry> = issuances
        .iter()
        .map(|(issuance, _)| audit(&issuance.access, AuditAction::OAuthTokenIssue))
        .collect();
    let outcomes = join_all(
        issuances
            .iter()
            .zip(&audits)
            .map(|((issuance, _), audit)| store.issue(issuance, audit)),
    )
    .await;
    for ((issuance, live), outcome) in issuances.iter().zip(outcomes) {
        assert_eq!(outcome.unwrap(), *live, "{}", issuance.access.task_id);
        let stored = store.token(a, issuance.access.id).await.unwrap();
        assert_eq!(stored.is_some(), *live, "{}", issuance.access.task_id);
    }
    assert_eq!(audited(store, a, AuditAction::OAuthTokenIssue).await, 32);
    let listed = store
        .tokens(a, &TokenFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 32);
}
