//! Signing-key rotation: re-signing with hints, the grace, the per-account limit.

use super::*;

#[tokio::test]
async fn rotation_resigns_every_active_bundle_with_hints_and_keeps_the_old_key_for_the_grace() {
    let w = world();
    let before = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    let rotated = w.policies.rotate_signing_key(&w.admin()).await.unwrap();
    assert_eq!(rotated.previous_kid, before.kid);
    assert_eq!(rotated.resigned.len(), 1);
    let resigned = &rotated.resigned[0];
    assert_eq!(resigned.version, 2);
    let jws = resigned.jws.as_ref().unwrap();
    let header = decode_part(jws.split('.').next().unwrap());
    assert_eq!(header["kid"], rotated.new_key.kid.as_str());
    assert_eq!(header["jwks_refresh"], true);
    assert_eq!(header["new_kid"], rotated.new_key.kid.as_str());
    assert_eq!(header["rotation_id"], rotated.rotation_id.as_str());
    let set = w.policies.jwks().key_set(w.account).await.unwrap();
    let body = String::from_utf8(set.document.body.to_vec()).unwrap();
    assert!(body.contains(before.kid.as_deref().unwrap()) && body.contains(&rotated.new_key.kid));
    w.clock.advance(Duration::hours(2));
    let set = w.policies.jwks().key_set(w.account).await.unwrap();
    let body = String::from_utf8(set.document.body.to_vec()).unwrap();
    assert!(!body.contains(before.kid.as_deref().unwrap()));
    // A later publish carries no rotation hint.
    let later = w
        .publish(&w.dev(), &policy("app", &["a"], false), None, false)
        .await
        .unwrap();
    assert!(
        decode_part(later.jws.unwrap().split('.').next().unwrap())
            .get("jwks_refresh")
            .is_none()
    );
}

#[tokio::test]
async fn key_rotations_are_limited_per_account_but_not_for_the_operator() {
    let w = world_with(PolicySettings {
        max_rotations_per_hour: 2,
        ..PolicySettings::default()
    });
    let admin = w.admin();
    for _ in 0..2 {
        w.policies.rotate_signing_key(&admin).await.unwrap();
    }
    let refused = w.policies.rotate_signing_key(&admin).await.unwrap_err();
    assert!(matches!(refused, PolicyError::RotationRateLimited(_)));
    assert_eq!(refused.code(), d2_kernel::Code::RateLimited);
    let limit = refused.rate_limit().unwrap();
    assert_eq!((limit.limit, limit.remaining), (2, 0));
    assert!((1..=1800).contains(&limit.retry_after_seconds));

    let other = AuthContext {
        account_id: AccountId::random(),
        ..w.admin()
    };
    w.policies.rotate_signing_key(&other).await.unwrap();
    // The operator's rotation of every account is not an admin's request.
    w.policies
        .rotate_for(
            w.account,
            d2_audit::AuditEntry::system(
                w.account,
                d2_audit::AuditAction::JwksRotate,
                w.clock.now(),
            ),
        )
        .await
        .unwrap();
}
