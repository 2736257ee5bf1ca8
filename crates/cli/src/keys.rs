//! Signing-key maintenance: AES key rotation, signing-key rotation for every account,
//! pruning of retired keys.

use std::sync::Arc;

use anyhow::bail;
use d2_app::App;
use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::{KeyAlgorithm, SealError, SigningKey, SigningKeyRepo};
use indicatif::{ProgressBar, ProgressStyle};

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

const BATCH: u32 = 200;

/// Re-seals every private key that is not sealed the way the server seals now: under the
/// current AES key (`crypto.jwk_aes_key`) and bound to its account. Keys sealed with a
/// previous AES key open with `crypto.jwk_aes_previous_keys`; keys sealed before accounts
/// were bound open while `crypto.accept_legacy_seals` is true, even when the AES key does
/// not change. Each key is re-sealed, checked, and swapped in only if nobody changed it
/// meanwhile, so the command can be interrupted and run again: it resumes with what is
/// left.
pub async fn rotate_aes_key(app: &App) -> anyhow::Result<()> {
    let repo: Arc<dyn SigningKeyRepo> = app.store.signing_keys();
    let keyring = app.policies.jwks().keyring();
    let current = keyring.current_id().to_owned();
    let total = repo.count_to_reseal(&current).await?;
    if total == 0 {
        println!(
            "every signing key is sealed with the current AES key ({current}) and bound to its account"
        );
        return Ok(());
    }
    let progress = bar(total, "re-sealing signing keys");
    let mut resealed = 0u64;
    let mut skipped = 0u64;
    loop {
        let batch = repo.to_reseal(&current, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let mut progressed = false;
        for key in batch {
            let replacement = keyring
                .reseal(&key.sealed_private, key.owner())
                .map_err(|error| unopened(&key, error))?;
            if repo
                .reseal(&key.kid, &key.sealed_private, &replacement)
                .await?
            {
                resealed += 1;
                progressed = true;
            } else {
                // Changed by someone else meanwhile (another run); it is read again next round.
                skipped += 1;
            }
            progress.inc(1);
        }
        if !progressed {
            bail!("no key could be re-sealed in the last round; is another rotation running?");
        }
    }
    progress.finish_and_clear();
    println!(
        "re-sealed {resealed} signing key(s) under AES key {current}, bound to their account ({skipped} changed concurrently and were redone)"
    );
    println!(
        "every server now needs only D2__CRYPTO__JWK_AES_KEY: remove D2__CRYPTO__JWK_AES_PREVIOUS_KEYS and set D2__CRYPTO__ACCEPT_LEGACY_SEALS=false"
    );
    Ok(())
}

/// Why a key could not be opened, in the operator's terms.
fn unopened(key: &SigningKey, error: SealError) -> anyhow::Error {
    let which = format!("signing key {} of account {}", key.kid, key.account_id);
    let advice = match &error {
        SealError::UnknownKey(aes_key_id) => format!(
            "{which} is sealed with AES key {aes_key_id}, which is neither D2__CRYPTO__JWK_AES_KEY nor in D2__CRYPTO__JWK_AES_PREVIOUS_KEYS"
        ),
        SealError::LegacyRefused => format!(
            "{which} is sealed without its account binding and D2__CRYPTO__ACCEPT_LEGACY_SEALS is false; if the key predates the upgrade, run this command with D2__CRYPTO__ACCEPT_LEGACY_SEALS=true"
        ),
        SealError::Corrupt => format!(
            "{which} does not open: its ciphertext is corrupt or was sealed for another account or key id; rotate the account's key (POST /v1/jwks/rotate) and look into how the row changed"
        ),
        SealError::UnsupportedBinding(_) | SealError::Randomness => {
            format!("{which} could not be re-sealed")
        }
    };
    anyhow::Error::new(error).context(advice)
}

/// Rotates the signing key of every account that has one, re-signing its active bundles,
/// and the access-token key of every account that has one of its own (ES256).
pub async fn rotate_jwks_all(app: &App) -> anyhow::Result<()> {
    let keys = app.store.signing_keys();
    let accounts = keys.accounts_with_keys(KeyAlgorithm::Rs256).await?;
    let token_key_accounts = match app.oauth.keys.algorithm() {
        KeyAlgorithm::Rs256 => Vec::new(),
        algorithm => keys.accounts_with_keys(algorithm).await?,
    };
    let progress = bar(
        u64::try_from(accounts.len().saturating_add(token_key_accounts.len())).unwrap_or(u64::MAX),
        "rotating signing keys",
    );
    let (mut rotated, mut resigned, mut token_keys) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let audit =
        |account| AuditEntry::control_plane(account, AuditAction::JwksRotate, app.clock.now());
    for account in accounts {
        match app.policies.rotate_for(account, audit(account)).await {
            Ok(result) => {
                rotated += 1;
                resigned += result.resigned.len();
            }
            Err(error) => failures.push(format!("{account}: {error}")),
        }
        progress.inc(1);
    }
    for account in token_key_accounts {
        match app.oauth.rotate_own_key(account, audit(account)).await {
            Ok(replaced) => token_keys += usize::from(replaced.is_some()),
            Err(error) => failures.push(format!("{account} (access-token key): {error}")),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    println!(
        "rotated {rotated} account(s), re-signed {resigned} bundle(s), rotated {token_keys} access-token key(s), {} failure(s)",
        failures.len()
    );
    for failure in &failures {
        println!("  failed {failure}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{} key(s) were not rotated", failures.len())
    }
}

/// Deletes signing keys whose grace period after retirement has ended.
pub async fn prune_signing_keys(app: &App) -> anyhow::Result<()> {
    let pruned = app.policies.jwks().prune_retired().await?;
    println!("deleted {pruned} retired signing key(s) past their grace period");
    Ok(())
}
