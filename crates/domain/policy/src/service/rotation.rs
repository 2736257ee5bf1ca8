//! Signing-key rotation, with every active bundle re-signed in the same change.

use super::*;

impl PolicyService {
    /// Replaces the account's signing key and re-signs every active bundle with it, as new
    /// versions whose header tells SDKs to refresh their JWKS. The old key stays published
    /// for the grace period. Audited as `jwks.rotate`. An account may rotate at most
    /// `max_rotations_per_hour` times an hour; past it `RotationRateLimited`.
    pub async fn rotate_signing_key(&self, ctx: &AuthContext) -> Result<Rotated, PolicyError> {
        ctx.require(Scope::Admin)?;
        let hourly = Rate::new(
            self.settings.max_rotations_per_hour,
            std::time::Duration::from_secs(3600),
        );
        self.rotations
            .check(&ctx.account_id, hourly)
            .map_err(PolicyError::RotationRateLimited)?;
        self.rotate_for(
            ctx.account_id,
            AuditEntry::by(ctx, AuditAction::JwksRotate, self.clock.now()),
        )
        .await
    }

    /// The rotation itself, for an authenticated admin or for the operator's command line.
    pub async fn rotate_for(
        &self,
        account_id: AccountId,
        audit: AuditEntry,
    ) -> Result<Rotated, PolicyError> {
        for _ in 0..MAX_RETRIES {
            let now = self.clock.now();
            self.jwks.invalidate(account_id);
            let previous = self.jwks.key_set(account_id).await?.active.clone();
            let new_key = self.jwks.generate(account_id).await?;
            let rotation_id = format!("rot_{}", uuid::Uuid::new_v4().simple());
            let extras = JwsHeaderExtras {
                rotation: Some(RotationHint {
                    rotation_id: rotation_id.clone(),
                    reason: "key_rotation".into(),
                    at: now,
                    new_kid: new_key.kid.clone(),
                }),
                ..JwsHeaderExtras::default()
            };
            let mut bundles = Vec::new();
            for active in self.repo.active_policies(account_id).await? {
                let (Some(mut document), _) = PolicyDocument::check(active.document.clone()) else {
                    return Err(StoreError::corrupt("a stored policy no longer validates").into());
                };
                let jws = self.sign(
                    account_id,
                    &active.app_name,
                    &mut document,
                    &new_key,
                    &extras,
                    now,
                )?;
                let mut record = active.clone();
                record.id = PolicyId::random();
                record.document = document.into_value();
                record.etag = hex_sha256(jws.as_bytes());
                record.size_bytes = u64::try_from(jws.len()).unwrap_or(u64::MAX);
                record.jws = Some(jws);
                record.kid = Some(new_key.kid.clone());
                record.created_at = now;
                record.published_at = Some(now);
                record.actor.clone_from(&audit.actor);
                record.token_id = audit.token_id;
                record.user_id = audit.user_id;
                record.rotation_id = Some(rotation_id.clone());
                bundles.push((record, active.id));
            }
            let rotation = KeyRotation {
                account_id,
                new_key: new_key.clone(),
                expected_active_kid: previous.as_ref().map(|k| k.kid.clone()),
                at: now,
                bundles,
            };
            let audit = audit.clone().target("signing_key", &new_key.kid).metadata(json!({
                "rotation_id": rotation_id,
                "new_kid": new_key.kid,
                "previous_kid": previous.as_ref().map(|k| &k.kid),
                "resigned": rotation.bundles.iter().map(|(r, _)| r.app_name.as_str()).collect::<Vec<_>>(),
            }));
            match self.repo.rotate_signing_key(&rotation, &audit).await? {
                RotationOutcome::Rotated(resigned) => {
                    self.invalidate_account(account_id);
                    tracing::info!(account.id = %account_id, key.kid = %new_key.kid, resigned = resigned.len(), "signing key rotated");
                    return Ok(Rotated {
                        rotation_id,
                        new_key,
                        previous_kid: previous.map(|k| k.kid),
                        at: now,
                        old_keys_published_until: d2_kernel::later(now, self.jwks.grace()),
                        resigned,
                    });
                }
                RotationOutcome::Conflict => {}
            }
        }
        Err(PolicyError::Conflict)
    }
}
