use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{
    AccountId, Blocking, CacheSettings, Change, ChangeSubscriber, Clock, Code, CoherentCache,
    ErrorCode, StoreError, run_blocking,
};
use josekit::jws::JwsSigner;
use ring::digest::{SHA256, digest};
use serde::Serialize;
use serde_json::json;

use crate::key::{KeyAlgorithm, KeyError, SigningKey};
use crate::ports::{FirstKey, SigningKeyRepo};
use crate::seal::{Binding, Keyring};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for JwksError {
    fn code(&self) -> Code {
        match self {
            JwksError::Key(_) | JwksError::Signing(_) => Code::Internal,
            JwksError::Store(error) => error.code(),
        }
    }
}

/// A serialised JWKS and its strong ETag (quoted hex SHA-256 of the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksDocument {
    /// Shared, so serving it copies nothing.
    pub body: Arc<[u8]>,
    pub etag: String,
}

impl JwksDocument {
    fn of(keys: &[&SigningKey]) -> Self {
        let body = json!({ "keys": keys.iter().map(|k| &k.public).collect::<Vec<_>>() });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let etag = format!("\"{}\"", hex(digest(&SHA256, &body).as_ref()));
        Self {
            body: body.into(),
            etag,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An account's keys as of one read.
#[derive(Clone, Debug)]
pub struct KeySet {
    pub active: Option<SigningKey>,
    /// Every key: active and retired, newest first.
    pub all: Vec<SigningKey>,
    /// The published keys (active, and retired ones within the grace period).
    pub document: JwksDocument,
    /// When the oldest published retired key leaves the JWKS.
    stale_after: Option<DateTime<Utc>>,
}

/// What [`Jwks::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReplaced {
    pub new_kid: String,
    pub previous_kid: String,
    pub at: DateTime<Utc>,
    /// Until then the previous key stays in the JWKS.
    pub previous_published_until: DateTime<Utc>,
}

/// Rotations tried before giving up to concurrent ones.
const MAX_ROTATION_ATTEMPTS: usize = 3;

/// The hints a re-signed bundle's header carries after a rotation, in both spellings the
/// SDKs read (`timestamp`/`reason` and `refresh_timestamp`/`refresh_reason`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwsHeaderExtras {
    pub rotation: Option<RotationHint>,
    /// The header's `typ`; `JWT` when absent (`at+jwt` for OAuth access tokens, RFC 9068).
    pub token_type: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationHint {
    pub rotation_id: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub new_kid: String,
}

/// An account's opened signers by key id.
type SignersByKid = HashMap<String, Arc<dyn JwsSigner>>;

/// A JWS header: the algorithm, the key and the type, and a rotation's hint when there is
/// one (its members as the D2 SDK reads them).
#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
    #[serde(flatten)]
    rotation: Option<RotationMembers<'a>>,
}

#[derive(Serialize)]
struct RotationMembers<'a> {
    jwks_refresh: bool,
    rotation_id: &'a str,
    refresh_reason: &'a str,
    reason: &'a str,
    refresh_timestamp: &'a str,
    timestamp: &'a str,
    new_kid: &'a str,
}

/// Signing keys of one algorithm of every account: lazy creation, signing, the public
/// JWKS. Bundles are signed by the RS256 keys; access tokens by those of the algorithm the
/// OAuth server is configured with (a second `Jwks` when it is ES256).
pub struct Jwks {
    repo: Arc<dyn SigningKeyRepo>,
    algorithm: KeyAlgorithm,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    /// Where RSA keys are generated: tens of milliseconds of CPU, off the async workers.
    blocking: Arc<dyn Blocking>,
    grace: Duration,
    sets: CoherentCache<AccountId, Arc<KeySet>>,
    /// Opened signers by account, then key id (looked up without building a key): a row
    /// moved to another account is opened (and refused) again, never signed with from the
    /// cache.
    signers: Mutex<HashMap<AccountId, SignersByKid>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// Accounts whose opened signers are kept in memory; far more than the busiest replica
/// signs for.
const MAX_SIGNERS: usize = 10_000;

impl Jwks {
    pub fn new(
        repo: Arc<dyn SigningKeyRepo>,
        algorithm: KeyAlgorithm,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        blocking: Arc<dyn Blocking>,
        grace: Duration,
        cache: CacheSettings,
    ) -> Self {
        Self {
            repo,
            algorithm,
            keyring,
            clock,
            blocking,
            grace,
            sets: CoherentCache::new(cache),
            signers: Mutex::new(HashMap::new()),
        }
    }

    /// What this set's keys sign with.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The keys of `algorithm` of the same store, sealed under the same keyring, with a
    /// cache of their own (`cache`).
    pub fn sibling(&self, algorithm: KeyAlgorithm, cache: CacheSettings) -> Jwks {
        Jwks::new(
            Arc::clone(&self.repo),
            algorithm,
            Arc::clone(&self.keyring),
            Arc::clone(&self.clock),
            Arc::clone(&self.blocking),
            self.grace,
            cache,
        )
    }

    /// How long a retired key stays published.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Deletes signing keys retired longer ago than the grace period (no SDK can still
    /// need them); returns how many.
    pub async fn prune_retired(&self) -> Result<u64, JwksError> {
        let before = d2_kernel::earlier(self.clock.now(), self.grace);
        Ok(self.repo.prune_retired(before).await?)
    }

    /// The account's keys and JWKS document (cached).
    pub async fn key_set(&self, account_id: AccountId) -> Result<Arc<KeySet>, JwksError> {
        let now = self.clock.now();
        let set = self.load(account_id).await?;
        if set.stale_after.is_some_and(|stale| now >= stale) {
            self.sets.invalidate(&account_id).await;
            return self.load(account_id).await;
        }
        Ok(set)
    }

    async fn load(&self, account_id: AccountId) -> Result<Arc<KeySet>, JwksError> {
        self.sets
            .get_or_load(&account_id, || async {
                let keys = self.repo.keys(account_id, self.algorithm).await?;
                Ok::<_, JwksError>(Arc::new(self.assemble(keys)))
            })
            .await
    }

    fn assemble(&self, all: Vec<SigningKey>) -> KeySet {
        let now = self.clock.now();
        let published: Vec<&SigningKey> = all
            .iter()
            .filter(|k| k.is_published(now, self.grace))
            .collect();
        let stale_after = published
            .iter()
            .filter_map(|k| k.retired_at)
            .map(|retired| d2_kernel::later(retired, self.grace))
            .min();
        KeySet {
            document: JwksDocument::of(&published),
            active: all.iter().find(|k| k.is_active()).cloned(),
            stale_after,
            all,
        }
    }

    /// The account's active key, created on first use (the creation is audited by the
    /// record `audit_of` builds).
    pub async fn active_key(
        &self,
        account_id: AccountId,
        audit_of: impl FnOnce(&SigningKey) -> AuditEntry,
    ) -> Result<SigningKey, JwksError> {
        if let Some(active) = self.key_set(account_id).await?.active.clone() {
            return Ok(active);
        }
        let key = self.generate(account_id).await?;
        let audit = audit_of(&key);
        let key = match self.repo.insert_first(&key, &audit).await? {
            FirstKey::Created => {
                tracing::info!(account.id = %account_id, key.kid = %key.kid, "created the account's first signing key");
                key
            }
            FirstKey::AlreadyActive(existing) => *existing,
        };
        self.sets.invalidate(&account_id).await;
        Ok(key)
    }

    /// Replaces the account's active key with a new one; the old stays published for the
    /// grace period. `None` when the account has no key yet (its first is created on first
    /// use). Audited by `audit` (the new and previous key ids added). For keys that sign
    /// nothing stored: bundle keys rotate with their bundles (the `policy` domain).
    pub async fn rotate(
        &self,
        account_id: AccountId,
        audit: AuditEntry,
    ) -> Result<Option<KeyReplaced>, JwksError> {
        for _ in 0..MAX_ROTATION_ATTEMPTS {
            self.sets.invalidate(&account_id).await;
            let Some(previous) = self.key_set(account_id).await?.active.clone() else {
                return Ok(None);
            };
            let new_key = self.generate(account_id).await?;
            let at = self.clock.now();
            let audit = audit
                .clone()
                .target("signing_key", &new_key.kid)
                .metadata(json!({
                    "new_kid": new_key.kid,
                    "previous_kid": previous.kid,
                    "algorithm": self.algorithm.as_str(),
                }));
            if self
                .repo
                .replace_active(&new_key, &previous.kid, at, &audit)
                .await?
            {
                self.sets.invalidate(&account_id).await;
                tracing::info!(account.id = %account_id, key.kid = %new_key.kid, algorithm = self.algorithm.as_str(), "signing key rotated");
                return Ok(Some(KeyReplaced {
                    new_kid: new_key.kid,
                    previous_kid: previous.kid,
                    at,
                    previous_published_until: d2_kernel::later(at, self.grace),
                }));
            }
        }
        Err(JwksError::Store(StoreError::Conflict(
            "concurrent rotations of the account's key kept winning".into(),
        )))
    }

    /// A new key for `account_id`, not stored. Generated through the injected
    /// [`Blocking`] pool, never on the calling async task.
    pub async fn generate(&self, account_id: AccountId) -> Result<SigningKey, JwksError> {
        let keyring = Arc::clone(&self.keyring);
        let now = self.clock.now();
        let algorithm = self.algorithm;
        let generated = run_blocking(self.blocking.as_ref(), move || {
            SigningKey::generate(account_id, algorithm, &keyring, now)
        })
        .await
        .ok_or_else(|| KeyError::Generation("the key generation did not complete".into()))?;
        Ok(generated?)
    }

    /// A compact JWS of `payload`, signed with `key` (its algorithm in the header).
    ///
    /// The compact form (RFC 7515 §7.1) is written here rather than by josekit, whose header
    /// is a map of JSON values built, sorted and serialised for every token; only the
    /// signature is josekit's (or ring's, for ES256: [`crate::p256`]).
    pub fn sign(
        &self,
        key: &SigningKey,
        extras: &JwsHeaderExtras,
        payload: &[u8],
    ) -> Result<String, JwksError> {
        let signer = self.signer(key)?;
        let at = extras
            .rotation
            .as_ref()
            .map(|hint| hint.at.to_rfc3339_opts(SecondsFormat::Secs, true));
        let header = Header {
            alg: signer.algorithm().name(),
            kid: &key.kid,
            typ: extras.token_type.unwrap_or("JWT"),
            rotation: extras
                .rotation
                .as_ref()
                .zip(at.as_deref())
                .map(|(hint, at)| RotationMembers {
                    jwks_refresh: true,
                    rotation_id: &hint.rotation_id,
                    refresh_reason: &hint.reason,
                    reason: &hint.reason,
                    refresh_timestamp: at,
                    timestamp: at,
                    new_kid: &hint.new_kid,
                }),
        };
        let header = serde_json::to_vec(&header).map_err(|e| JwksError::Signing(e.to_string()))?;
        let encoded = |bytes: usize| bytes.div_ceil(3).saturating_mul(4);
        let mut jws = String::with_capacity(
            encoded(header.len())
                .saturating_add(encoded(payload.len()))
                .saturating_add(encoded(signer.signature_len()))
                .saturating_add(2),
        );
        URL_SAFE_NO_PAD.encode_string(&header, &mut jws);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
        let signature = signer
            .sign(jws.as_bytes())
            .map_err(|e| JwksError::Signing(e.to_string()))?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jws);
        Ok(jws)
    }

    /// The opened signer of `key`, from memory after its first use.
    fn signer(&self, key: &SigningKey) -> Result<Arc<dyn JwsSigner>, JwksError> {
        if let Some(signer) = self
            .signers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key.account_id)
            .and_then(|keys| keys.get(key.kid.as_str()))
        {
            return Ok(Arc::clone(signer));
        }
        let signer: Arc<dyn JwsSigner> = Arc::from(key.signer(&self.keyring)?);
        if key.sealed_private.binding == Binding::KidOnly {
            tracing::warn!(
                account.id = %key.account_id,
                key.kid = %key.kid,
                "signing key sealed without its account binding; d2ctl rotate-aes-key re-seals it"
            );
        }
        let mut signers = self.signers.lock().unwrap_or_else(PoisonError::into_inner);
        if signers.len() >= MAX_SIGNERS {
            signers.clear();
        }
        // An account signs with its active key: a key opened for it replaces the ones
        // opened before (replaced by a rotation), so each account keeps few.
        let opened = signers.entry(key.account_id).or_default();
        opened.clear();
        opened.insert(key.kid.clone(), Arc::clone(&signer));
        Ok(signer)
    }

    /// Forgets the cached keys of an account (after a change here or elsewhere).
    pub fn invalidate(&self, account_id: AccountId) {
        self.sets.invalidate_if(move |key, _| *key == account_id);
    }

    pub fn invalidate_all(&self) {
        self.sets.invalidate_all();
    }
}

/// A change of an account's keys (a first key, a rotation, a pruning), here or on another
/// replica, drops its cached set.
impl ChangeSubscriber for Jwks {
    fn on_change(&self, change: &Change) {
        match change {
            Change::Keys(account) => self.invalidate(*account),
            Change::Resync => self.invalidate_all(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use d2_audit::AuditAction;
    use d2_audit::memory::MemoryAuditLog;
    use d2_kernel::ManualClock;
    use josekit::jwk::Jwk;
    use josekit::jws::RS256;
    use serde_json::Value;

    use super::*;
    use crate::memory::MemorySigningKeys;
    use crate::seal::AesKey;

    fn jwks() -> (Jwks, Arc<MemorySigningKeys>, Arc<ManualClock>) {
        jwks_on(Arc::new(d2_kernel::blocking::Inline))
    }

    fn jwks_on(blocking: Arc<dyn Blocking>) -> (Jwks, Arc<MemorySigningKeys>, Arc<ManualClock>) {
        let audit = Arc::new(MemoryAuditLog::default());
        let repo = Arc::new(MemorySigningKeys::new(audit));
        let clock = Arc::new(ManualClock::starting_now());
        let keyring = Arc::new(Keyring::new(AesKey::new(&[9; 32]).unwrap(), vec![]));
        let service = Jwks::new(
            repo.clone(),
            crate::KeyAlgorithm::Rs256,
            keyring,
            clock.clone(),
            blocking,
            Duration::hours(1),
            CacheSettings::default(),
        );
        (service, repo, clock)
    }

    /// Runs jobs inline on a thread of its own, and counts them.
    #[derive(Default)]
    struct CountingPool {
        jobs: std::sync::atomic::AtomicUsize,
        threads: Mutex<Vec<std::thread::ThreadId>>,
    }

    #[async_trait::async_trait]
    impl Blocking for CountingPool {
        async fn run(&self, job: d2_kernel::blocking::Job) {
            self.jobs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let thread = std::thread::spawn(move || {
                job();
                std::thread::current().id()
            })
            .join()
            .unwrap();
            self.threads.lock().unwrap().push(thread);
        }
    }

    /// A pool that never runs anything.
    struct Refusing;

    #[async_trait::async_trait]
    impl Blocking for Refusing {
        async fn run(&self, _job: d2_kernel::blocking::Job) {}
    }

    #[tokio::test]
    async fn keys_are_generated_on_the_injected_pool_never_on_the_calling_task() {
        let pool = Arc::new(CountingPool::default());
        let (jwks, _, _) = jwks_on(pool.clone());
        let account = AccountId::random();
        let first = jwks.active_key(account, audit_of).await.unwrap();
        let second = jwks.generate(account).await.unwrap();
        assert_ne!(first.kid, second.kid);
        assert_eq!(pool.jobs.load(std::sync::atomic::Ordering::SeqCst), 2);
        let here = std::thread::current().id();
        assert!(pool.threads.lock().unwrap().iter().all(|t| *t != here));
        // Signing with a key made there works as with any other.
        jwks.sign(&second, &JwsHeaderExtras::default(), b"{}")
            .unwrap();
    }

    #[tokio::test]
    async fn a_rotation_replaces_the_active_key_of_its_algorithm_only() {
        let (bundles, repo, clock) = jwks();
        let tokens = bundles.sibling(crate::KeyAlgorithm::Es256, CacheSettings::default());
        let account = AccountId::random();
        let rotate = || AuditEntry::system(account, AuditAction::JwksRotate, Utc::now());
        assert_eq!(
            tokens.rotate(account, rotate()).await.unwrap(),
            None,
            "no key yet"
        );
        let bundle_key = bundles.active_key(account, audit_of).await.unwrap();
        let first = tokens.active_key(account, audit_of).await.unwrap();

        clock.advance(Duration::seconds(1));
        let replaced = tokens.rotate(account, rotate()).await.unwrap().unwrap();
        assert_eq!(replaced.previous_kid, first.kid);
        let set = tokens.key_set(account).await.unwrap();
        let active = set.active.as_ref().unwrap();
        assert_eq!(active.kid, replaced.new_kid);
        assert_eq!(active.algorithm(), crate::KeyAlgorithm::Es256);
        let document: Value = serde_json::from_slice(&set.document.body).unwrap();
        let published: Vec<&str> = document["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(published, [replaced.new_kid.as_str(), first.kid.as_str()]);
        assert_eq!(
            bundles
                .key_set(account)
                .await
                .unwrap()
                .active
                .as_ref()
                .map(|k| &k.kid),
            Some(&bundle_key.kid),
            "the bundle key stays"
        );
        let audited = repo.audit().all();
        let last = audited.last().unwrap();
        assert_eq!(last.entry.action, AuditAction::JwksRotate);
        assert_eq!(last.entry.metadata["previous_kid"], first.kid.as_str());
        assert_eq!(last.entry.metadata["new_kid"], replaced.new_kid.as_str());
    }

    #[tokio::test]
    async fn a_generation_the_pool_never_ran_is_an_error_not_a_hang() {
        let (jwks, _, _) = jwks_on(Arc::new(Refusing));
        let error = jwks.generate(AccountId::random()).await.unwrap_err();
        assert!(matches!(error, JwksError::Key(KeyError::Generation(_))));
        assert_eq!(error.code(), Code::Internal);
    }

    fn audit_of(key: &SigningKey) -> AuditEntry {
        AuditEntry::system(key.account_id, AuditAction::KeyCreate, Utc::now())
    }

    #[tokio::test]
    async fn the_first_key_is_created_once_and_signatures_verify_with_the_published_key() {
        let (jwks, repo, _) = jwks();
        let account = AccountId::random();
        assert!(jwks.key_set(account).await.unwrap().active.is_none());
        let key = jwks.active_key(account, audit_of).await.unwrap();
        let again = jwks.active_key(account, audit_of).await.unwrap();
        assert_eq!(key.kid, again.kid);
        assert_eq!(repo.lock().len(), 1);
        assert_eq!(repo.audit().all().len(), 1);

        let jws = jwks
            .sign(&key, &JwsHeaderExtras::default(), br#"{"hello":"world"}"#)
            .unwrap();
        let set = jwks.key_set(account).await.unwrap();
        let document: Value = serde_json::from_slice(&set.document.body).unwrap();
        let published = &document["keys"][0];
        assert_eq!(published["kid"], key.kid.as_str());
        assert_eq!(published["kty"], "RSA");
        assert!(published.get("d").is_none(), "never a private member");
        let jwk = Jwk::from_bytes(serde_json::to_vec(published).unwrap()).unwrap();
        let verifier = RS256.verifier_from_jwk(&jwk).unwrap();
        let (payload, header) = josekit::jws::deserialize_compact(&jws, &verifier).unwrap();
        assert_eq!(payload, br#"{"hello":"world"}"#);
        assert_eq!(header.key_id(), Some(key.kid.as_str()));
        assert_eq!(header.token_type(), Some("JWT"));
    }

    #[tokio::test]
    async fn a_key_moved_to_another_account_is_refused_even_after_it_signed() {
        let (jwks, repo, _) = jwks();
        let (a, b) = (AccountId::random(), AccountId::random());
        let key = jwks.active_key(a, audit_of).await.unwrap();
        jwks.sign(&key, &JwsHeaderExtras::default(), b"{}").unwrap();
        repo.lock()
            .iter_mut()
            .for_each(|stored| stored.account_id = b);
        let moved = jwks.active_key(b, audit_of).await.unwrap();
        assert_eq!(moved.kid, key.kid);
        let error = jwks
            .sign(&moved, &JwsHeaderExtras::default(), b"{}")
            .unwrap_err();
        assert!(
            matches!(
                error,
                JwksError::Key(KeyError::Seal(crate::SealError::Corrupt))
            ),
            "{error}"
        );
        assert_eq!(error.code(), Code::Internal);
    }

    #[tokio::test]
    async fn es256_tokens_verify_with_the_published_key_and_carry_only_their_header() {
        let (bundles, _, _) = jwks();
        let tokens = bundles.sibling(crate::KeyAlgorithm::Es256, CacheSettings::default());
        let account = AccountId::random();
        let key = tokens.active_key(account, audit_of).await.unwrap();
        let extras = JwsHeaderExtras {
            token_type: Some("at+jwt"),
            ..JwsHeaderExtras::default()
        };
        let jws = tokens.sign(&key, &extras, br#"{"sub":"agent"}"#).unwrap();
        let set = tokens.key_set(account).await.unwrap();
        let document: Value = serde_json::from_slice(&set.document.body).unwrap();
        let jwk = Jwk::from_bytes(serde_json::to_vec(&document["keys"][0]).unwrap()).unwrap();
        let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
        let (payload, header) = josekit::jws::deserialize_compact(&jws, &verifier).unwrap();
        assert_eq!(payload, br#"{"sub":"agent"}"#);
        let mut members: Vec<&String> = header.claims_set().keys().collect();
        members.sort();
        assert_eq!(members, ["alg", "kid", "typ"]);
        assert_eq!(header.algorithm(), Some("ES256"));
        assert_eq!(header.key_id(), Some(key.kid.as_str()));
        assert_eq!(header.token_type(), Some("at+jwt"));

        // A payload altered after signing no longer verifies.
        let mut parts: Vec<&str> = jws.split('.').collect();
        let forged = base64::Engine::encode(&URL_SAFE_NO_PAD, br#"{"sub":"other"}"#);
        parts[1] = &forged;
        assert!(josekit::jws::deserialize_compact(parts.join("."), &verifier).is_err());
    }

    #[tokio::test]
    async fn rotation_hints_go_in_the_header_in_both_spellings() {
        let (jwks, _, _) = jwks();
        let key = jwks
            .active_key(AccountId::random(), audit_of)
            .await
            .unwrap();
        let extras = JwsHeaderExtras {
            rotation: Some(RotationHint {
                rotation_id: "rot_1".into(),
                reason: "key_rotation".into(),
                at: Utc::now(),
                new_kid: key.kid.clone(),
            }),
            ..JwsHeaderExtras::default()
        };
        let jws = jwks.sign(&key, &extras, b"{}").unwrap();
        let header = jws.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["jwks_refresh"], true);
        for (a, b) in [
            ("reason", "refresh_reason"),
            ("timestamp", "refresh_timestamp"),
        ] {
            assert_eq!(header[a], header[b]);
            assert!(header[a].is_string());
        }
        assert_eq!(header["new_kid"], key.kid.as_str());
        assert_eq!(header["alg"], "RS256");
    }

    #[tokio::test]
    async fn retired_keys_stay_published_for_the_grace_period_only() {
        let (jwks, repo, clock) = jwks();
        let account = AccountId::random();
        let old = jwks.active_key(account, audit_of).await.unwrap();
        let new = jwks.generate(account).await.unwrap();
        {
            let mut keys = repo.lock();
            keys.iter_mut()
                .for_each(|k| k.retired_at = Some(clock.now()));
            keys.push(new.clone());
        }
        jwks.invalidate(account);
        let set = jwks.key_set(account).await.unwrap();
        assert_eq!(set.active.as_ref().unwrap().kid, new.kid);
        let body = String::from_utf8(set.document.body.to_vec()).unwrap();
        assert!(body.contains(&old.kid) && body.contains(&new.kid));
        clock.advance(Duration::minutes(61));
        let set = jwks.key_set(account).await.unwrap();
        let body = String::from_utf8(set.document.body.to_vec()).unwrap();
        assert!(
            !body.contains(&old.kid),
            "dropped after the grace period without any write"
        );
        assert!(body.contains(&new.kid));
        assert_eq!(set.all.len(), 2);
    }
}
