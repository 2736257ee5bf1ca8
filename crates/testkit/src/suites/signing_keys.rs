//! Signing keys: the first key of an account, rotations that re-sign the live bundles all
//! or nothing, re-sealing under a new AES key as compare-and-swap, pruning retired keys.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use chrono::Duration;
use d2_audit::AuditAction;
use d2_jwks::{AesKey, Binding, FirstKey, KeyAlgorithm, Keyring, Sealed, SigningKey};
use d2_kernel::{AccountId, AppName, PolicyId};
use d2_policy::{KeyRotation, RotationOutcome, Stage};

use super::policies::{Store, audit, publish, published, record};
use crate::fixtures::at;

fn keyring() -> Keyring {
    Keyring::new(
        AesKey::new(&[4; 32]).unwrap_or_else(|_| unreachable!()),
        vec![],
    )
}

/// Signing keys and rotations.
pub async fn signing_keys(store: &dyn Store, a: AccountId, b: AccountId) {
    let keyring = keyring();
    let first = SigningKey::generate(a, KeyAlgorithm::Rs256, &keyring, at(1))
        .unwrap_or_else(|e| panic!("{e}"));
    let create = audit(a, AuditAction::KeyCreate);
    assert_eq!(
        store.insert_first(&first, &create).await.ok(),
        Some(FirstKey::Created)
    );
    let second = SigningKey::generate(a, KeyAlgorithm::Rs256, &keyring, at(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(store.insert_first(&second, &create).await, Ok(FirstKey::AlreadyActive(k)) if k.kid == first.kid)
    );
    assert_eq!(
        store.keys(a, KeyAlgorithm::Rs256).await.unwrap_or_default(),
        vec![first.clone()]
    );
    assert!(
        store
            .keys(b, KeyAlgorithm::Rs256)
            .await
            .is_ok_and(|k| k.is_empty())
    );

    // Rotation: a bundle re-signed, the old key retired, all or nothing.
    let live = published(publish(store, a, "rotated", 3, None).await);
    let mut resigned = record(a, "rotated", Stage::Published, 4);
    resigned.rotation_id = Some("rot_1".into());
    let rotation = KeyRotation {
        account_id: a,
        new_key: second.clone(),
        expected_active_kid: Some("somebody-else".into()),
        at: at(4),
        bundles: vec![(resigned.clone(), live.id)],
    };
    let rotate = audit(a, AuditAction::JwksRotate);
    assert_eq!(
        store.rotate_signing_key(&rotation, &rotate).await.ok(),
        Some(RotationOutcome::Conflict)
    );
    let stale_bundle = KeyRotation {
        expected_active_kid: Some(first.kid.clone()),
        bundles: vec![(resigned.clone(), PolicyId::random())],
        ..rotation.clone()
    };
    assert_eq!(
        store.rotate_signing_key(&stale_bundle, &rotate).await.ok(),
        Some(RotationOutcome::Conflict)
    );
    assert_eq!(
        store
            .keys(a, KeyAlgorithm::Rs256)
            .await
            .unwrap_or_default()
            .len(),
        1,
        "a refused rotation writes nothing"
    );

    let rotation = KeyRotation {
        expected_active_kid: Some(first.kid.clone()),
        ..rotation
    };
    let Ok(RotationOutcome::Rotated(stored)) = store.rotate_signing_key(&rotation, &rotate).await
    else {
        panic!("rotated");
    };
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].version, live.version + 1);
    assert_eq!(stored[0].rotation_id.as_deref(), Some("rot_1"));
    let keys = store.keys(a, KeyAlgorithm::Rs256).await.unwrap_or_default();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .any(|k| k.kid == second.kid && k.retired_at.is_none())
    );
    assert!(
        keys.iter()
            .any(|k| k.kid == first.kid && k.retired_at == Some(at(4)))
    );
    let state = store
        .app_state(a, &AppName::normalise("rotated"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.active.map(|r| r.id), Some(resigned.id));

    // AES re-sealing is compare-and-swap.
    let other = Keyring::new(
        AesKey::new(&[5; 32]).unwrap_or_else(|_| unreachable!()),
        vec![AesKey::new(&[4; 32]).unwrap_or_else(|_| unreachable!())],
    );
    let pending = store
        .to_reseal(other.current_id(), 10)
        .await
        .unwrap_or_default();
    assert_eq!(pending.len(), 2);
    assert!(pending[0].kid < pending[1].kid, "in key id order");
    assert_eq!(
        store.count_to_reseal(other.current_id()).await.ok(),
        Some(2)
    );
    let target = &pending[0];
    let resealed = other
        .reseal(&target.sealed_private, target.owner())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .reseal(&target.kid, &target.sealed_private, &resealed)
            .await
            .ok(),
        Some(true)
    );
    assert_eq!(
        store
            .reseal(&target.kid, &target.sealed_private, &resealed)
            .await
            .ok(),
        Some(false)
    );
    assert_eq!(
        store
            .to_reseal(other.current_id(), 10)
            .await
            .unwrap_or_default()
            .len(),
        1
    );

    // The binding is stored with the ciphertext, compared by the swap, and a key sealed
    // with the current AES key but not bound to its account still needs a re-seal.
    let kid_only = Sealed {
        binding: Binding::KidOnly,
        ..resealed.clone()
    };
    assert_eq!(
        store.reseal(&target.kid, &resealed, &kid_only).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.reseal(&target.kid, &resealed, &resealed).await.ok(),
        Some(false),
        "the expected binding is part of the swap"
    );
    let stored = store.keys(a, KeyAlgorithm::Rs256).await.unwrap_or_default();
    assert!(
        stored
            .iter()
            .any(|k| k.kid == target.kid && k.sealed_private == kid_only)
    );
    let pending = store
        .to_reseal(other.current_id(), 10)
        .await
        .unwrap_or_default();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().any(|k| k.kid == target.kid));
    assert_eq!(
        store.count_to_reseal(other.current_id()).await.ok(),
        Some(2)
    );
    assert_eq!(
        store.reseal(&target.kid, &kid_only, &resealed).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.count_to_reseal(other.current_id()).await.ok(),
        Some(1)
    );

    assert_eq!(
        store
            .accounts_with_keys(KeyAlgorithm::Rs256)
            .await
            .unwrap_or_default(),
        vec![a]
    );
    assert_eq!(
        store.prune_retired(at(4) + Duration::seconds(1)).await.ok(),
        Some(1)
    );
    assert_eq!(
        store
            .keys(a, KeyAlgorithm::Rs256)
            .await
            .unwrap_or_default()
            .len(),
        1
    );

    // An EC key (access tokens signed ES256) stands beside them: its own active key, its
    // own list, stored with its public point, and untouched by a rotation of the bundles'.
    let generate = |algorithm, seconds| {
        SigningKey::generate(a, algorithm, &keyring, at(seconds)).unwrap_or_else(|e| panic!("{e}"))
    };
    let ec = generate(KeyAlgorithm::Es256, 10);
    assert_eq!(
        store.insert_first(&ec, &create).await.ok(),
        Some(FirstKey::Created)
    );
    let later_ec = generate(KeyAlgorithm::Es256, 11);
    assert!(
        matches!(store.insert_first(&later_ec, &create).await, Ok(FirstKey::AlreadyActive(k)) if k.kid == ec.kid)
    );
    assert_eq!(
        store.keys(a, KeyAlgorithm::Es256).await.unwrap_or_default(),
        vec![ec.clone()],
        "every column comes back as written"
    );
    assert_eq!(
        store
            .accounts_with_keys(KeyAlgorithm::Es256)
            .await
            .unwrap_or_default(),
        vec![a]
    );
    let third = generate(KeyAlgorithm::Rs256, 12);
    let bundles_only = KeyRotation {
        account_id: a,
        new_key: third.clone(),
        expected_active_kid: Some(second.kid.clone()),
        at: at(12),
        bundles: vec![],
    };
    assert!(matches!(
        store.rotate_signing_key(&bundles_only, &rotate).await,
        Ok(RotationOutcome::Rotated(_))
    ));
    let ec_keys = store.keys(a, KeyAlgorithm::Es256).await.unwrap_or_default();
    assert_eq!(ec_keys.len(), 1);
    assert!(ec_keys[0].is_active(), "the EC key is not the rotation's");
    let active_rsa = async || -> Vec<String> {
        let keys = store.keys(a, KeyAlgorithm::Rs256).await.unwrap_or_default();
        keys.into_iter()
            .filter(|k| k.is_active())
            .map(|k| k.kid)
            .collect()
    };
    assert_eq!(active_rsa().await, vec![third.kid.clone()]);

    // The EC key rotated on its own: only if it is still the active one, never touching
    // the bundles' keys; another account's key id replaces nothing.
    let next_ec = generate(KeyAlgorithm::Es256, 13);
    let replace = |expected| store.replace_active(&next_ec, expected, at(13), &rotate);
    assert_eq!(replace("somebody-else").await.ok(), Some(false));
    assert_eq!(replace(&third.kid).await.ok(), Some(false), "not an EC key");
    let elsewhere = SigningKey::generate(b, KeyAlgorithm::Es256, &keyring, at(13))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .replace_active(&elsewhere, &ec.kid, at(13), &rotate)
            .await
            .ok(),
        Some(false),
        "another account's key is not replaced"
    );
    assert_eq!(replace(&ec.kid).await.ok(), Some(true));
    assert_eq!(replace(&ec.kid).await.ok(), Some(false), "already replaced");
    let ec_keys = store.keys(a, KeyAlgorithm::Es256).await.unwrap_or_default();
    assert_eq!(
        ec_keys
            .iter()
            .map(|k| (k.kid.as_str(), k.retired_at))
            .collect::<Vec<_>>(),
        vec![
            (next_ec.kid.as_str(), None),
            (ec.kid.as_str(), Some(at(13)))
        ]
    );
    assert!(
        store
            .keys(b, KeyAlgorithm::Es256)
            .await
            .is_ok_and(|k| k.is_empty())
    );
    assert_eq!(active_rsa().await, vec![third.kid]);
}
