//! Signing an access token's JWS: the signer `SigningKey::signer` builds (ring for ES256,
//! OpenSSL through josekit for RS256) beside josekit's own signer of the same key.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failure should stop it loudly"
)]

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use d2_jwks::{AesKey, KeyAlgorithm, Keyring, SigningKey};
use d2_kernel::AccountId;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsHeader, JwsSigner, RS256};

/// The claims of a typical access token.
const PAYLOAD: &[u8] = br#"{"iss":"https://d2.example/oauth/4b7c4f0e-0d1c-4a59-9a8f-2f1f1f0b6a11","sub":"agent-7c1d","aud":"https://tools.example/","client_id":"agent-7c1d","scope":"tools.read tools.write","exp":1767225600,"iat":1767222000,"jti":"0b9f5a4e-8e0a-4b8e-a1c3-6f7d2e9b1c44","task_id":"task-1","parent_task_id":null}"#;

fn sign(c: &mut Criterion) {
    let keyring = Keyring::new(AesKey::new(&[7; 32]).unwrap(), vec![]);
    for algorithm in [KeyAlgorithm::Es256, KeyAlgorithm::Rs256] {
        let key =
            SigningKey::generate(AccountId::random(), algorithm, &keyring, Utc::now()).unwrap();
        let jwk = Jwk::from_bytes(
            keyring
                .open(&key.sealed_private, key.owner())
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let josekit: Box<dyn JwsSigner> = match algorithm {
            KeyAlgorithm::Es256 => Box::new(ES256.signer_from_jwk(&jwk).unwrap()),
            KeyAlgorithm::Rs256 => Box::new(RS256.signer_from_jwk(&jwk).unwrap()),
        };
        let ours = key.signer(&keyring).unwrap();
        let mut header = JwsHeader::new();
        header.set_token_type("at+jwt");
        header.set_key_id(key.kid.clone());
        let name = algorithm.as_str();
        c.bench_function(&format!("{name}: SigningKey::signer"), |b| {
            b.iter(|| josekit::jws::serialize_compact(PAYLOAD, &header, ours.as_ref()).unwrap());
        });
        c.bench_function(&format!("{name}: josekit's signer"), |b| {
            b.iter(|| josekit::jws::serialize_compact(PAYLOAD, &header, josekit.as_ref()).unwrap());
        });
    }
}

criterion_group!(benches, sign);
criterion_main!(benches);
