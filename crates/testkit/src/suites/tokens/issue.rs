//! The suites of issuing tokens for people: the names lists show, the plan's cap on tokens
//! that work (and its race), changes of a token's name and expiry, and the batched record
//! of when tokens were used.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use chrono::Duration;
use d2_audit::{AuditAction, AuditEntry, AuditFilter};
use d2_kernel::{AccountId, PageRequest, Role, StoreError, TokenId, UserId};
use d2_tokens::{
    ApiToken, IssueOutcome, ListedToken, NewToken, RevokeOutcome, RotateOutcome, TokenGrant,
    TokenPatch, UpdateOutcome,
};

use super::{Store, read_token};
use crate::fixtures::{self, at, join, person_named, tenant};
use crate::suites::audit::{audit_count, records_of};

/// A dev token of `account` created at `second`, by `creator`, for `assignee`.
fn token_for(
    account: AccountId,
    second: i64,
    creator: Option<UserId>,
    assignee: Option<UserId>,
) -> NewToken {
    let mut token = fixtures::token(account, TokenGrant::Dev, at(second));
    token.token.created_by = creator;
    token.token.assigned_to = assignee;
    token
}

fn created(token: &NewToken) -> AuditEntry {
    AuditEntry::system(
        token.token.account_id,
        AuditAction::TokenCreate,
        token.token.created_at,
    )
    .user(token.token.created_by)
    .target("token", token.token.id)
}

async fn listed(store: &dyn Store, token: &ApiToken) -> ListedToken {
    store
        .listed_token(token.account_id, token.id)
        .await
        .unwrap_or_else(|e| panic!("listed token: {e}"))
        .unwrap_or_else(|| panic!("token {} listed", token.id))
}

/// Tokens for people: an assignee must be a member of the token's account (else nothing is
/// written); the list, one token and the audit trail name the people (display name, else
/// full name, else email), read with them; a token naming nobody has no names.
pub async fn token_people(store: &dyn Store) {
    let (account, owner, admin) = tenant(store, at(0)).await;
    let (other, _, _) = tenant(store, at(0)).await;
    let dana = person_named(store, "dana@contract.test", Some("Dana Dev")).await;
    let emil = person_named(store, "emil@contract.test", None).await;
    join(store, account.id, dana.id, Role::Developer).await;
    join(store, account.id, emil.id, Role::Developer).await;
    let stranger = person_named(store, "stranger@contract.test", Some("Stranger")).await;

    let for_dana = token_for(account.id, 2, Some(owner.id), Some(dana.id));
    assert_eq!(
        store.issue(&for_dana, 100, &created(&for_dana)).await.ok(),
        Some(IssueOutcome::Issued)
    );
    let by_emil = token_for(account.id, 3, Some(emil.id), None);
    assert_eq!(
        store.issue(&by_emil, 100, &created(&by_emil)).await.ok(),
        Some(IssueOutcome::Issued)
    );

    // Only members of the token's account can be assigned; a refusal writes nothing.
    let before = audit_count(store, account.id).await;
    for (assignee, in_account) in [(stranger.id, account.id), (dana.id, other.id)] {
        let refused = token_for(in_account, 4, None, Some(assignee));
        assert_eq!(
            store.issue(&refused, 100, &created(&refused)).await.ok(),
            Some(IssueOutcome::NotAMember)
        );
        assert!(
            store
                .find_by_digest(&refused.digest)
                .await
                .is_ok_and(|t| t.is_none()),
            "nothing stored"
        );
    }
    assert_eq!(audit_count(store, account.id).await, before);
    assert_eq!(audit_count(store, other.id).await, 1);

    let read = listed(store, &for_dana.token).await;
    assert_eq!(read.token, for_dana.token);
    assert_eq!(read.token.assigned_to, Some(dana.id));
    assert_eq!(read.created_by_name.as_deref(), Some("Owner"));
    assert_eq!(read.assigned_to_name.as_deref(), Some("Dana Dev"));
    assert_eq!(read.holder_name(), Some("Dana Dev"));
    let read = listed(store, &by_emil.token).await;
    assert_eq!(
        read.created_by_name.as_deref(),
        Some("emil@contract.test"),
        "no display or full name: the email"
    );
    assert_eq!(read.assigned_to_name, None);
    assert_eq!(read.holder_name(), Some("emil@contract.test"));
    assert_eq!(
        listed(store, &admin.token).await,
        ListedToken::unnamed(admin.token.clone()),
        "a token naming nobody"
    );
    assert!(
        store
            .listed_token(other.id, for_dana.token.id)
            .await
            .is_ok_and(|t| t.is_none()),
        "account-scoped"
    );

    // The list reads the same names, page after page.
    let first = store
        .list_tokens(account.id, &PageRequest::first(2))
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let next = first.next.unwrap_or_else(|| panic!("a second page"));
    let rest = store
        .list_tokens(
            account.id,
            &PageRequest::parse(Some(2), Some(&next.encode())).unwrap_or_else(|_| unreachable!()),
        )
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let names: Vec<(Option<String>, Option<String>)> = first
        .items
        .into_iter()
        .chain(rest.items)
        .map(|t| (t.created_by_name, t.assigned_to_name))
        .collect();
    assert_eq!(
        names,
        [
            (Some("emil@contract.test".to_owned()), None),
            (Some("Owner".to_owned()), Some("Dana Dev".to_owned())),
            (None, None),
        ]
    );

    // The audit trail names the person of each record.
    let creates = AuditFilter {
        action: Some(AuditAction::TokenCreate),
        ..AuditFilter::default()
    };
    let records = store
        .search(account.id, &creates, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"))
        .items;
    let named: Vec<(Option<UserId>, Option<String>)> = records
        .into_iter()
        .map(|r| (r.entry.user_id, r.user_name))
        .collect();
    assert_eq!(
        named,
        [
            (Some(emil.id), Some("emil@contract.test".to_owned())),
            (Some(owner.id), Some("Owner".to_owned())),
        ]
    );
    let bootstrap = store
        .search(
            account.id,
            &AuditFilter::default(),
            &PageRequest::first(100),
        )
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"))
        .items
        .into_iter()
        .find(|r| r.entry.action == AuditAction::AccountBootstrap)
        .unwrap_or_else(|| panic!("the bootstrap record"));
    assert_eq!(bootstrap.user_name, None, "a record naming nobody");

    // A rotation keeps the assignee.
    let replacement = token_for(account.id, 5, Some(owner.id), Some(dana.id));
    let audit = AuditEntry::system(account.id, AuditAction::TokenRotate, at(5));
    let outcome = store
        .rotate(
            account.id,
            for_dana.token.id,
            &replacement,
            at(5),
            at(5) + Duration::minutes(5),
            &audit,
        )
        .await;
    assert!(
        matches!(outcome, Ok(RotateOutcome::Rotated { .. })),
        "{outcome:?}"
    );
    let read = listed(store, &replacement.token).await;
    assert_eq!(read.assigned_to_name.as_deref(), Some("Dana Dev"));
}

/// The plan's cap on tokens that work: an issue is refused (writing nothing) while the
/// account holds `max_active` tokens neither revoked nor expired at the new token's
/// creation; revoked and expired tokens do not count, other accounts' neither, and a
/// rotation is not an issue.
pub async fn token_limit(store: &dyn Store) {
    let (account, _, admin) = tenant(store, at(0)).await;
    let (other, _, _) = tenant(store, at(0)).await;
    let max = 3;
    let mut held = vec![admin.token.clone()];
    for second in 1..=2 {
        let token = token_for(account.id, second, None, None);
        assert_eq!(
            store.issue(&token, max, &created(&token)).await.ok(),
            Some(IssueOutcome::Issued)
        );
        held.push(token.token);
    }
    let before = audit_count(store, account.id).await;
    let refused = token_for(account.id, 3, None, None);
    assert_eq!(
        store.issue(&refused, max, &created(&refused)).await.ok(),
        Some(IssueOutcome::LimitReached)
    );
    assert!(
        store
            .find_by_digest(&refused.digest)
            .await
            .is_ok_and(|t| t.is_none())
    );
    assert_eq!(audit_count(store, account.id).await, before);
    let elsewhere = token_for(other.id, 3, None, None);
    assert_eq!(
        store
            .issue(&elsewhere, max, &created(&elsewhere))
            .await
            .ok(),
        Some(IssueOutcome::Issued),
        "each account has its own"
    );

    // A rotation at the cap replaces a token.
    let replacement = token_for(account.id, 4, None, None);
    let audit = AuditEntry::system(account.id, AuditAction::TokenRotate, at(4));
    let rotated = store
        .rotate(account.id, held[1].id, &replacement, at(4), at(10), &audit)
        .await;
    assert!(
        matches!(rotated, Ok(RotateOutcome::Rotated { .. })),
        "{rotated:?}"
    );

    // A revoked token frees its place; so does one whose expiry (here, the end of a
    // rotation's grace) has passed.
    let audit = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(5));
    assert_eq!(
        store
            .revoke(account.id, held[2].id, at(5), &audit)
            .await
            .ok(),
        Some(RevokeOutcome::Revoked)
    );
    let inside_grace = token_for(account.id, 6, None, None);
    assert_eq!(
        store
            .issue(&inside_grace, max, &created(&inside_grace))
            .await
            .ok(),
        Some(IssueOutcome::LimitReached),
        "the rotated token works until its grace ends"
    );
    let after_grace = token_for(account.id, 10, None, None);
    assert_eq!(
        store
            .issue(&after_grace, max, &created(&after_grace))
            .await
            .ok(),
        Some(IssueOutcome::Issued)
    );
    let full = token_for(account.id, 11, None, None);
    assert_eq!(
        store.issue(&full, max, &created(&full)).await.ok(),
        Some(IssueOutcome::LimitReached)
    );
}

/// Concurrent issues for the last free place: of eight, exactly one is issued and
/// audited.
pub async fn token_limit_races(store: &dyn Store) {
    let (account, _, _) = tenant(store, at(0)).await;
    let racing: Vec<NewToken> = (0..8)
        .map(|_| token_for(account.id, 1, None, None))
        .collect();
    let before = audit_count(store, account.id).await;
    let outcomes = futures_util::future::join_all(
        racing
            .iter()
            .map(|token| async move { store.issue(token, 2, &created(token)).await }),
    )
    .await;
    let issued = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(IssueOutcome::Issued)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(IssueOutcome::LimitReached)))
        .count();
    assert_eq!((issued, refused), (1, 7), "{outcomes:?}");
    assert_eq!(audit_count(store, account.id).await, before + 1);
    let listed = store
        .list_tokens(account.id, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(listed.items.len(), 2);
}

/// Changes of a token's name and expiry: under the token's lock, with the audit record
/// built from before and after; a revoked or expired token is finished, a rotated one
/// keeps its expiry (the end of its grace) but may be renamed; nothing is written unless
/// the token changes.
pub async fn token_updates(store: &dyn Store) {
    let (account, _, _) = tenant(store, at(0)).await;
    let (other, _, _) = tenant(store, at(0)).await;
    let token = token_for(account.id, 1, None, None);
    store
        .insert(&token, &created(&token))
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let audit_of = |before: &ApiToken, after: &ApiToken| {
        AuditEntry::system(before.account_id, AuditAction::TokenUpdate, at(2))
            .target("token", after.id)
            .metadata(serde_json::json!({ "from": before.name, "to": after.name }))
    };
    let patch = TokenPatch {
        name: Some(Some("renamed".into())),
        expires_at: Some(Some(at(100))),
    };
    let before = audit_count(store, account.id).await;
    assert_eq!(
        store
            .update_token(other.id, token.token.id, &patch, at(2), &audit_of)
            .await
            .ok(),
        Some(UpdateOutcome::NotFound),
        "account-scoped"
    );
    let outcome = store
        .update_token(account.id, token.token.id, &patch, at(2), &audit_of)
        .await;
    let expected = ApiToken {
        name: Some("renamed".into()),
        expires_at: Some(at(100)),
        ..token.token.clone()
    };
    assert_eq!(
        outcome.ok(),
        Some(UpdateOutcome::Updated(Box::new(expected.clone())))
    );
    assert_eq!(read_token(store, &token.token).await, expected);
    let records = records_of(store, account.id, AuditAction::TokenUpdate).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].metadata["from"], "contract");
    assert_eq!(records[0].metadata["to"], "renamed");
    assert_eq!(audit_count(store, other.id).await, 1);

    // Clearing: no name, no expiry.
    let clear = TokenPatch {
        name: Some(None),
        expires_at: Some(None),
    };
    let outcome = store
        .update_token(account.id, token.token.id, &clear, at(3), &audit_of)
        .await;
    let Ok(UpdateOutcome::Updated(cleared)) = outcome else {
        panic!("updated: {outcome:?}")
    };
    assert_eq!((cleared.name, cleared.expires_at), (None, None));
    assert_eq!(audit_count(store, account.id).await, before + 2);

    // A rotated token may be renamed, but its expiry ends its grace period.
    let replacement = token_for(account.id, 4, None, None);
    let audit = AuditEntry::system(account.id, AuditAction::TokenRotate, at(4));
    let rotated = store
        .rotate(
            account.id,
            token.token.id,
            &replacement,
            at(4),
            at(50),
            &audit,
        )
        .await;
    assert!(
        matches!(rotated, Ok(RotateOutcome::Rotated { .. })),
        "{rotated:?}"
    );
    let before = audit_count(store, account.id).await;
    let extend = TokenPatch {
        expires_at: Some(Some(at(1000))),
        ..TokenPatch::default()
    };
    assert_eq!(
        store
            .update_token(account.id, token.token.id, &extend, at(5), &audit_of)
            .await
            .ok(),
        Some(UpdateOutcome::AlreadyRotated)
    );
    let rename = TokenPatch {
        name: Some(Some("old one".into())),
        ..TokenPatch::default()
    };
    let outcome = store
        .update_token(account.id, token.token.id, &rename, at(5), &audit_of)
        .await;
    let Ok(UpdateOutcome::Updated(renamed)) = outcome else {
        panic!("updated: {outcome:?}")
    };
    assert_eq!(renamed.expires_at, Some(at(50)), "the grace is kept");
    // Past its grace it is finished.
    assert_eq!(
        store
            .update_token(account.id, token.token.id, &rename, at(50), &audit_of)
            .await
            .ok(),
        Some(UpdateOutcome::Expired)
    );
    // Revoked: finished too.
    let audit = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(6));
    assert_eq!(
        store
            .revoke(account.id, replacement.token.id, at(6), &audit)
            .await
            .ok(),
        Some(RevokeOutcome::Revoked)
    );
    assert_eq!(
        store
            .update_token(account.id, replacement.token.id, &rename, at(7), &audit_of)
            .await
            .ok(),
        Some(UpdateOutcome::AlreadyRevoked)
    );
    assert_eq!(
        audit_count(store, account.id).await,
        before + 2,
        "the rename and the revoke only"
    );
    assert_eq!(
        store
            .update_token(account.id, TokenId::random(), &rename, at(7), &audit_of)
            .await
            .ok(),
        Some(UpdateOutcome::NotFound)
    );
}

/// When tokens were used: each write moves a token's `last_used_at` forward only (writers
/// of several processes flush in any order), unknown ids are ignored, nothing else of the
/// token changes and nothing is audited.
pub async fn token_usage(store: &dyn Store) {
    let (account, _, admin) = tenant(store, at(0)).await;
    let (_, _, foreign) = tenant(store, at(0)).await;
    let used = token_for(account.id, 1, None, None);
    store
        .insert(&used, &created(&used))
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let before = audit_count(store, account.id).await;
    let record = |batch: Vec<(TokenId, chrono::DateTime<chrono::Utc>)>| async move {
        store
            .record_usage(&batch)
            .await
            .unwrap_or_else(|e: StoreError| panic!("record usage: {e}"));
    };
    record(Vec::new()).await;
    assert_eq!(read_token(store, &used.token).await.last_used_at, None);

    record(vec![
        (used.token.id, at(100)),
        (admin.token.id, at(50)),
        (TokenId::random(), at(70)),
    ])
    .await;
    assert_eq!(
        read_token(store, &used.token).await,
        ApiToken {
            last_used_at: Some(at(100)),
            ..used.token.clone()
        },
        "nothing else changes"
    );
    assert_eq!(
        read_token(store, &admin.token).await.last_used_at,
        Some(at(50))
    );
    // An older use, flushed late by another process, does not move it back.
    record(vec![(used.token.id, at(90))]).await;
    assert_eq!(
        read_token(store, &used.token).await.last_used_at,
        Some(at(100))
    );
    record(vec![(used.token.id, at(200)), (foreign.token.id, at(210))]).await;
    assert_eq!(
        read_token(store, &used.token).await.last_used_at,
        Some(at(200))
    );
    assert_eq!(
        read_token(store, &foreign.token).await.last_used_at,
        Some(at(210))
    );
    let listed = store
        .list_tokens(account.id, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(
        listed
            .items
            .iter()
            .any(|t| t.token.id == used.token.id && t.token.last_used_at == Some(at(200)))
    );
    assert_eq!(audit_count(store, account.id).await, before, "not audited");
}
