//! Tokens for people: assignees, the plan's cap, one token's reads and changes, and when
//! tokens were last used.

use chrono::{Duration, SubsecRound as _};
use d2_accounts::memory::Membership;
use d2_audit::AuditAction;
use d2_kernel::{AuthContext, Clock, Code, ErrorCode, PageRequest, PlanCatalog, Role, TokenId};
use d2_members::User;

use super::{World, world};
use crate::*;

fn request(assigned_to: Option<d2_kernel::UserId>) -> TokenRequest {
    TokenRequest {
        name: Some("for someone".into()),
        grant: TokenGrant::Dev,
        app_name: None,
        expires_at: None,
        assigned_to,
    }
}

impl World {
    /// A person named `name`, a member of `account` when given.
    fn person(&self, name: &str, account: Option<d2_kernel::AccountId>) -> User {
        let user = User::invited_owner(None, Some(name.to_owned()), self.clock.now());
        self.repo.members().insert_user(user.clone());
        if let Some(account_id) = account {
            self.repo.members().accounts().put_member(Membership {
                account_id,
                user_id: user.id,
                role: Role::Developer,
                joined_at: self.clock.now(),
            });
        }
        user
    }

    async fn listed(&self, admin: &AuthContext) -> Vec<ListedToken> {
        self.tokens
            .list(admin, admin.account_id, &PageRequest::first(100))
            .await
            .unwrap()
            .items
    }
}

#[tokio::test]
async fn a_token_is_assigned_to_a_member_of_its_account_only_and_still_acts_as_its_creator() {
    let w = world();
    let (admin, _) = w.admin().await;
    let (other, _) = w.admin().await;
    let dana = w.person("Dana", Some(admin.account_id));
    let stranger = w.person("Stranger", Some(other.account_id));

    let issued = w
        .tokens
        .create(&admin, admin.account_id, request(Some(dana.id)))
        .await
        .unwrap();
    assert_eq!(issued.token.assigned_to, Some(dana.id));
    let ctx = w.verifier.verify(issued.secret.expose()).await.unwrap();
    assert_eq!(ctx.user_id, admin.user_id, "it acts as its creator's");
    let created = w.audit.all().last().unwrap().entry.clone();
    assert_eq!(created.action, AuditAction::TokenCreate);
    assert_eq!(
        created.metadata["assigned_user_id"],
        dana.id.to_string().as_str()
    );

    let before = w.audit.all().len();
    for assignee in [stranger.id, d2_kernel::UserId::random()] {
        let refused = w
            .tokens
            .create(&admin, admin.account_id, request(Some(assignee)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidAssignee);
    }
    assert_eq!(w.audit.all().len(), before, "nothing written");

    let listed = w.listed(&admin).await;
    let mine = listed
        .iter()
        .find(|t| t.token.id == issued.token.id)
        .unwrap();
    assert_eq!(mine.assigned_to_name.as_deref(), Some("Dana"));
    assert_eq!(mine.holder_name(), Some("Dana"));
    assert_eq!(mine.token.holder(), Some(dana.id));

    // A rotation keeps whom the token is for.
    let rotated = w
        .tokens
        .rotate(&admin, admin.account_id, issued.token.id)
        .await
        .unwrap();
    assert_eq!(rotated.issued.token.assigned_to, Some(dana.id));
}

#[tokio::test]
async fn the_plan_caps_the_tokens_that_work_and_a_freed_place_can_be_taken_again() {
    let w = world();
    let (admin, _) = w.admin().await;
    let max = PlanCatalog::default().trial.max_tokens;
    // The bootstrap's admin token holds one place.
    let mut issued = Vec::new();
    for _ in 1..max {
        issued.push(
            w.tokens
                .create(&admin, admin.account_id, request(None))
                .await
                .unwrap(),
        );
    }
    let refused = w
        .tokens
        .create(&admin, admin.account_id, request(None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::TokenLimit);
    assert!(refused.to_string().contains(&max.to_string()), "{refused}");

    // A rotation replaces a token: not refused at the cap.
    let first = issued.first().unwrap().token.id;
    w.tokens
        .rotate(&admin, admin.account_id, first)
        .await
        .unwrap();

    // The replacement and the old token (in its grace period) both work: two revokes
    // free one place; an expiry passing frees another.
    for revoked in issued.iter().skip(1).take(2) {
        w.tokens
            .revoke(&admin, admin.account_id, revoked.token.id)
            .await
            .unwrap();
    }
    let _taken = w
        .tokens
        .create(&admin, admin.account_id, request(None))
        .await
        .unwrap();
    w.clock.advance(Duration::minutes(11));
    w.tokens
        .create(&admin, admin.account_id, request(None))
        .await
        .expect("the rotated token's grace has ended");
    assert_eq!(
        w.tokens
            .create(&admin, admin.account_id, request(None))
            .await
            .unwrap_err()
            .code(),
        Code::TokenLimit
    );
}

#[tokio::test]
async fn one_token_is_read_and_changed_by_an_admin_of_its_account_only() {
    let w = world();
    let (admin, _) = w.admin().await;
    let (other, _) = w.admin().await;
    let secret = w.issue(&admin, TokenGrant::Dev).await;
    let ctx = w.verifier.verify(&secret).await.unwrap();
    let id = ctx.token_id().unwrap();

    let read = w.tokens.get(&admin, admin.account_id, id).await.unwrap();
    assert_eq!(read.token.id, id);
    assert_eq!(
        w.tokens
            .get(&admin, admin.account_id, TokenId::random())
            .await
            .unwrap_err()
            .code(),
        Code::TokenNotFound
    );
    assert_eq!(
        w.tokens
            .get(&other, other.account_id, id)
            .await
            .unwrap_err()
            .code(),
        Code::TokenNotFound,
        "another account's token is not found"
    );
    assert_eq!(
        w.tokens
            .get(&other, admin.account_id, id)
            .await
            .unwrap_err()
            .code(),
        Code::AccountMismatch
    );
    assert_eq!(
        w.tokens
            .get(&ctx, admin.account_id, id)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope,
        "a dev token reads no token"
    );

    // What a change must be.
    let now = w.clock.now();
    let refusals = [
        (TokenPatch::default(), Code::InvalidBody),
        (
            TokenPatch {
                expires_at: Some(Some(now)),
                ..TokenPatch::default()
            },
            Code::InvalidExpiry,
        ),
        (
            TokenPatch {
                name: Some(Some("x".repeat(101))),
                ..TokenPatch::default()
            },
            Code::InvalidTokenRequest,
        ),
    ];
    let before = w.audit.all().len();
    for (patch, code) in refusals {
        let error = w
            .tokens
            .update(&admin, admin.account_id, id, patch)
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{error}");
    }
    assert_eq!(
        w.tokens
            .update(
                &other,
                other.account_id,
                id,
                TokenPatch {
                    name: Some(None),
                    ..TokenPatch::default()
                }
            )
            .await
            .unwrap_err()
            .code(),
        Code::TokenNotFound
    );
    assert_eq!(w.audit.all().len(), before, "nothing written");

    // A shorter expiry holds at once, cached or not.
    let changed = w
        .tokens
        .update(
            &admin,
            admin.account_id,
            id,
            TokenPatch {
                name: Some(Some("  ci  ".into())),
                expires_at: Some(Some(now + Duration::minutes(5))),
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.token.name.as_deref(), Some("ci"));
    assert_eq!(changed.token.expires_at, Some(now + Duration::minutes(5)));
    let record = w.audit.all().last().unwrap().entry.clone();
    assert_eq!(record.action, AuditAction::TokenUpdate);
    assert_eq!(record.resource_id.as_deref(), Some(id.to_string().as_str()));
    assert!(record.metadata["changes"]["token_name"]["from"].is_null());
    assert_eq!(record.metadata["changes"]["token_name"]["to"], "ci");
    assert!(record.metadata["changes"]["expires_at"].is_object());
    w.clock.advance(Duration::minutes(5));
    assert_eq!(
        w.verifier.verify(&secret).await.unwrap_err().code(),
        Code::TokenExpired
    );
    assert_eq!(
        w.tokens
            .update(
                &admin,
                admin.account_id,
                id,
                TokenPatch {
                    expires_at: Some(None),
                    ..TokenPatch::default()
                }
            )
            .await
            .unwrap_err()
            .code(),
        Code::TokenAlreadyExpired,
        "an expired token stays expired"
    );

    // A revoked token is finished.
    let other_secret = w.issue(&admin, TokenGrant::Dev).await;
    let other_id = w
        .verifier
        .verify(&other_secret)
        .await
        .unwrap()
        .token_id()
        .unwrap();
    w.tokens
        .revoke(&admin, admin.account_id, other_id)
        .await
        .unwrap();
    assert_eq!(
        w.tokens
            .update(
                &admin,
                admin.account_id,
                other_id,
                TokenPatch {
                    name: Some(Some("again".into())),
                    ..TokenPatch::default()
                }
            )
            .await
            .unwrap_err()
            .code(),
        Code::TokenAlreadyRevoked
    );
}

#[tokio::test]
async fn uses_are_noted_once_a_minute_and_written_only_by_a_flush() {
    let w = world();
    let (admin, secret) = w.admin().await;
    let id = admin.token_id().unwrap();
    let last_used = || async {
        w.tokens
            .get(&admin, admin.account_id, id)
            .await
            .unwrap()
            .token
            .last_used_at
    };
    // `admin()` verified the token once: noted, not written.
    assert_eq!(last_used().await, None);
    let first_use = w.clock.now().trunc_subsecs(0);
    assert_eq!(w.tokens.flush_usage().await.unwrap(), 1);
    assert_eq!(last_used().await, Some(first_use));
    assert_eq!(
        w.tokens.flush_usage().await.unwrap(),
        0,
        "nothing new to write"
    );

    // Within the minute, uses are not noted again.
    w.clock.advance(Duration::seconds(59));
    for _ in 0..5 {
        w.verifier.verify(&secret).await.unwrap();
    }
    assert_eq!(w.tokens.flush_usage().await.unwrap(), 0);
    w.clock.advance(Duration::seconds(1));
    w.verifier.verify(&secret).await.unwrap();
    assert_eq!(w.tokens.flush_usage().await.unwrap(), 1);
    assert_eq!(last_used().await, Some(first_use + Duration::minutes(1)));

    // Refused tokens are not noted.
    w.tokens.revoke(&admin, admin.account_id, id).await.unwrap();
    w.clock.advance(Duration::minutes(5));
    assert!(w.verifier.verify(&secret).await.is_err());
    assert_eq!(w.tokens.flush_usage().await.unwrap(), 0);
}
