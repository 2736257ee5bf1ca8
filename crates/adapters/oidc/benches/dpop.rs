//! DPoP proofs at the token endpoint: what a proof's form and signature check costs
//! (`DpopProofs::verify`: header, key, thumbprint, signature, claims parsed) for a key
//! never seen and for one whose verifier is kept, beside the signature check alone
//! (josekit with a verifier made once), for ES256 and RS256.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failure should stop it loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use d2_oauth::DpopVerifier as _;
use d2_oidc::DpopProofs;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsHeader, JwsSigner, JwsVerifier, RS256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{Value, json};

/// A proof signed by `signer`, carrying `public`.
fn proof(signer: &dyn JwsSigner, public: &Jwk) -> String {
    let mut header = JwsHeader::new();
    header.set_token_type("dpop+jwt");
    header
        .set_claim("jwk", Some(Value::Object(public.as_ref().clone())))
        .unwrap();
    let mut payload = JwtPayload::new();
    for (name, value) in [
        ("htm", json!("POST")),
        ("htu", json!("https://d2.example/oauth/a/token")),
        ("jti", json!("e1j3V_bKic8-LAEB")),
        ("iat", json!(1_796_280_000)),
    ] {
        payload.set_claim(name, Some(value)).unwrap();
    }
    jwt::encode_with_signer(&payload, &header, signer).unwrap()
}

/// A benchmark's case: the algorithm, a signer, the verifier made once, the public key.
type Case = (&'static str, Box<dyn JwsSigner>, Box<dyn JwsVerifier>, Jwk);

fn dpop(c: &mut Criterion) {
    let ec = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let rsa = Jwk::generate_rsa_key(2048).unwrap();
    let cases: [Case; 2] = [
        (
            "ES256",
            Box::new(ES256.signer_from_jwk(&ec).unwrap()),
            Box::new(
                ES256
                    .verifier_from_jwk(&ec.to_public_key().unwrap())
                    .unwrap(),
            ),
            ec.to_public_key().unwrap(),
        ),
        (
            "RS256",
            Box::new(RS256.signer_from_jwk(&rsa).unwrap()),
            Box::new(
                RS256
                    .verifier_from_jwk(&rsa.to_public_key().unwrap())
                    .unwrap(),
            ),
            rsa.to_public_key().unwrap(),
        ),
    ];
    for (alg, signer, verifier, public) in &cases {
        let text = proof(signer.as_ref(), public);
        c.bench_function(&format!("{alg}: DpopProofs::verify, a new key"), |b| {
            b.iter(|| DpopProofs::default().verify(black_box(&text)).unwrap());
        });
        let proofs = DpopProofs::default();
        assert!(proofs.verify(&text).is_ok());
        c.bench_function(
            &format!("{alg}: DpopProofs::verify, a key seen before"),
            |b| {
                b.iter(|| proofs.verify(black_box(&text)).unwrap());
            },
        );
        c.bench_function(&format!("{alg}: signature check alone"), |b| {
            b.iter(|| jwt::decode_with_verifier(black_box(&text), verifier.as_ref()).unwrap());
        });
    }
}

criterion_group!(benches, dpop);
criterion_main!(benches);
