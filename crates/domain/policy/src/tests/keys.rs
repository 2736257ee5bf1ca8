//! Publisher keys: registration, approval, and who may revoke them.

use super::*;

#[tokio::test]
async fn publisher_keys_are_idempotent_and_checked() {
    let w = world();
    let dev = w.dev();
    let public = STANDARD.encode(w.signer.public_key().as_ref());
    let (key, created) = w
        .policies
        .publisher_keys()
        .register(&dev, &public, None)
        .await
        .unwrap();
    assert!(created);
    let (again, created) = w
        .policies
        .publisher_keys()
        .register(&dev, &public, Some(&key.key_id))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.key_id, key.key_id);
    let keys = w.policies.publisher_keys();
    assert_eq!(
        keys.register(&dev, &public, Some("ed_000000000000"))
            .await
            .unwrap_err()
            .code(),
        Code::KeyIdMismatch
    );
    assert_eq!(
        keys.register(&dev, "too short", None)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidPublicKey
    );
    assert_eq!(
        keys.register(&dev, &STANDARD.encode([1u8; 31]), None)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidPublicKey
    );
    let server = caller(w.account, &[Grant::Server], Some("x"));
    assert_eq!(
        keys.register(&server, &public, None)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    keys.revoke(&dev, &key.key_id).await.unwrap();
    assert_eq!(
        keys.register(&dev, &public, None).await.unwrap_err().code(),
        Code::PublisherKeyRevoked
    );
    assert_eq!(
        keys.revoke(&dev, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    assert_eq!(keys.list(&dev, false).await.unwrap().len(), 0);
    assert_eq!(keys.list(&dev, true).await.unwrap().len(), 1);
}

#[tokio::test]
async fn with_approval_required_a_developers_key_waits_for_an_admin() {
    let w = world();
    let (dev, admin) = (w.dev(), w.admin());
    let body = serde_json::to_vec(&policy("app", &["a"], false)).unwrap();
    let before = new_signer();
    let early = register_key(&w, &dev, &before).await;
    assert_eq!(
        early.state(),
        KeyState::Active,
        "approval is off by default"
    );

    w.account_service
        .update(&admin, &approval_required(true))
        .await
        .unwrap();
    let signer = new_signer();
    let pending = register_key(&w, &dev, &signer).await;
    assert_eq!(pending.state(), KeyState::Pending);
    let upload = w
        .audit
        .all()
        .into_iter()
        .rfind(|r| r.entry.action == AuditAction::KeyUpload)
        .unwrap();
    assert_eq!(upload.entry.metadata["state"], "pending");
    let refused = publish_signed(&w, &dev, &signer, &pending.key_id, &body).await;
    assert_eq!(refused.unwrap_err().code(), Code::PublisherKeyPending);
    // Keys active before the setting was turned on stay active.
    publish_signed(&w, &dev, &before, &early.key_id, &body)
        .await
        .unwrap();
    // An admin's own key is active at once.
    let admins = register_key(&w, &admin, &new_signer()).await;
    assert_eq!(admins.state(), KeyState::Active);

    let keys = w.policies.publisher_keys();
    assert_eq!(
        keys.approve(&dev, &pending.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::InsufficientScope
    );
    let stranger = AuthContext {
        account_id: AccountId::random(),
        ..w.admin()
    };
    assert_eq!(
        keys.approve(&stranger, &pending.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    assert_eq!(
        keys.approve(&admin, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    let approved = keys.approve(&admin, &pending.key_id).await.unwrap();
    assert_eq!(approved.state(), KeyState::Active);
    let approval = approved.approval.clone().unwrap();
    assert_eq!(approval.by, admin.actor());
    assert_eq!(approval.at, w.clock.now());
    let approvals = || {
        w.audit
            .all()
            .into_iter()
            .filter(|r| r.entry.action == AuditAction::KeyApprove)
            .collect::<Vec<_>>()
    };
    assert_eq!(approvals().len(), 1);
    assert_eq!(
        approvals()[0].entry.resource_id.as_deref(),
        Some(pending.key_id.as_str())
    );
    // Approving again changes nothing and records nothing.
    assert_eq!(
        keys.approve(&admin, &pending.key_id).await.unwrap(),
        approved
    );
    assert_eq!(approvals().len(), 1);
    let body = serde_json::to_vec(&policy("app", &["a", "b"], false)).unwrap();
    publish_signed(&w, &dev, &signer, &pending.key_id, &body)
        .await
        .unwrap();

    // A pending key can be revoked by its registrant, and is never approved after.
    let rejected = register_key(&w, &dev, &new_signer()).await;
    keys.revoke(&dev, &rejected.key_id).await.unwrap();
    assert_eq!(
        keys.approve(&admin, &rejected.key_id)
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyRevoked
    );
}

#[tokio::test]
async fn only_the_registering_credential_or_an_admin_revokes_a_key() {
    let w = world();
    let user = Some(d2_kernel::UserId::random());
    // Two dev tokens minted by the same person are still two parties.
    let mine = AuthContext {
        user_id: user,
        ..w.dev()
    };
    let theirs = AuthContext {
        user_id: user,
        ..w.dev()
    };
    let keys = w.policies.publisher_keys();
    let key = register_key(&w, &mine, &new_signer()).await;
    let refused = keys.revoke(&theirs, &key.key_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::KeyOwnerOrAdminRequired);
    assert!(refused.to_string().contains("admin"));
    assert!(
        w.audit
            .all()
            .iter()
            .all(|r| r.entry.action != AuditAction::KeyRevoke)
    );
    assert_eq!(
        keys.revoke(&theirs, "ed_ffffffffffff")
            .await
            .unwrap_err()
            .code(),
        Code::PublisherKeyNotFound
    );
    keys.revoke(&mine, &key.key_id).await.unwrap();

    let admins = register_key(&w, &w.admin(), &new_signer()).await;
    assert_eq!(
        keys.revoke(&mine, &admins.key_id).await.unwrap_err().code(),
        Code::KeyOwnerOrAdminRequired
    );
    let developers = register_key(&w, &theirs, &new_signer()).await;
    keys.revoke(&w.admin(), &developers.key_id).await.unwrap();
    keys.revoke(&w.admin(), &admins.key_id).await.unwrap();
    assert_eq!(keys.list(&mine, true).await.unwrap().len(), 3);
    assert!(keys.list(&mine, false).await.unwrap().is_empty());
}
