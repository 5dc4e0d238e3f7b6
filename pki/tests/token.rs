//! ServiceAccount token signing and verification.

use base64::Engine as _;
use pki::{
    Claims, KubernetesClaims, ObjectRef, PkiOptions, TokenError, TokenSigner, TokenVerifier,
};

const ISS: &str = "https://kubernetes.default.svc.cluster.local";
const NOW: i64 = 1_800_000_000;

fn aud() -> Vec<String> {
    vec![ISS.to_string()]
}

fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        sub: "system:serviceaccount:default:builder".into(),
        aud: aud(),
        exp: NOW + 3600,
        iat: NOW,
        nbf: NOW,
        jti: Some("4f1a7c1e-0000-4000-8000-000000000001".into()),
        kubernetes: Some(KubernetesClaims {
            namespace: "default".into(),
            serviceaccount: ObjectRef {
                name: "builder".into(),
                uid: "11111111-2222-3333-4444-555555555555".into(),
            },
            pod: Some(ObjectRef {
                name: "build-1".into(),
                uid: "66666666-7777-8888-9999-000000000000".into(),
            }),
            node: None,
            secret: None,
        }),
    }
}

/// A signer/verifier pair from the keys `ensure` writes.
fn keys() -> (TokenSigner, TokenVerifier, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki::ensure(tmp.path(), &PkiOptions::default()).unwrap();
    let signer = TokenSigner::from_pem(&pki.service_account_key_pem).unwrap();
    let verifier = TokenVerifier::from_public_pems(&[&pki.service_account_public_pem]).unwrap();
    (signer, verifier, tmp)
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[test]
fn sign_verify_round_trip_with_upstream_shape() {
    let (signer, verifier, _tmp) = keys();
    let token = signer.sign(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);

    let header: serde_json::Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], signer.key_id());
    assert_eq!(signer.key_id().len(), 43, "unpadded base64url of 32 bytes");

    let payload: serde_json::Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    assert_eq!(payload["aud"], serde_json::json!([ISS]));
    assert_eq!(
        payload["kubernetes.io"]["serviceaccount"]["name"],
        "builder"
    );
    assert_eq!(payload["kubernetes.io"]["pod"]["name"], "build-1");
    assert!(payload["kubernetes.io"].get("node").is_none());

    let got = verifier.verify(&token, ISS, &aud(), NOW).unwrap();
    assert_eq!(got, claims());
    // Within the 60 s leeway on either side.
    verifier.verify(&token, ISS, &aud(), NOW - 59).unwrap();
    verifier
        .verify(&token, ISS, &aud(), NOW + 3600 + 59)
        .unwrap();
}

#[test]
fn legacy_shape_without_private_claims_and_string_aud() {
    let (signer, verifier, _tmp) = keys();
    let mut c = claims();
    c.kubernetes = None;
    c.jti = None;
    let token = signer.sign(&c).unwrap();
    assert_eq!(verifier.verify(&token, ISS, &aud(), NOW).unwrap(), c);

    // A token whose aud is a plain string (allowed by RFC 7519) is read as one audience.
    let mut json = serde_json::to_value(&c).unwrap();
    json["aud"] = serde_json::Value::String(ISS.into());
    let token = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            h.kid = Some(signer.key_id().to_string());
            h
        },
        &json,
        &jsonwebtoken::EncodingKey::from_ec_pem(
            std::fs::read(_tmp.path().join("sa.key"))
                .unwrap()
                .as_slice(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&token, ISS, &aud(), NOW).unwrap().aud,
        aud()
    );
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let (signer, verifier, _tmp) = keys();
    let token = signer.sign(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c.sub = "system:serviceaccount:kube-system:admin".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&c).unwrap()),
        parts[2]
    );
    assert_eq!(
        verifier.verify(&forged, ISS, &aud(), NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn token_from_another_key_is_a_bad_signature() {
    let (signer, _, _tmp) = keys();
    let (_, other_verifier, _tmp2) = keys();
    let token = signer.sign(&claims()).unwrap();
    assert_eq!(
        other_verifier.verify(&token, ISS, &aud(), NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn verifier_with_several_keys_accepts_each() {
    let tmp_a = tempfile::tempdir().unwrap();
    let tmp_b = tempfile::tempdir().unwrap();
    let a = pki::ensure(tmp_a.path(), &PkiOptions::default()).unwrap();
    let b = pki::ensure(tmp_b.path(), &PkiOptions::default()).unwrap();
    // Both keys in one bundle, as in a --service-account-key-file during rotation.
    let bundle = format!(
        "{}{}",
        a.service_account_public_pem, b.service_account_public_pem
    );
    let verifier = TokenVerifier::from_public_pems(&[&bundle]).unwrap();
    for pki in [&a, &b] {
        let token = TokenSigner::from_pem(&pki.service_account_key_pem)
            .unwrap()
            .sign(&claims())
            .unwrap();
        verifier.verify(&token, ISS, &aud(), NOW).unwrap();
    }
}

#[test]
fn expiry_not_before_issuer_and_audience() {
    let (signer, verifier, _tmp) = keys();
    let token = signer.sign(&claims()).unwrap();
    assert_eq!(
        verifier.verify(&token, ISS, &aud(), NOW + 3600 + 61),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(&token, ISS, &aud(), NOW - 61),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        verifier.verify(&token, "https://evil.example", &aud(), NOW),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        verifier.verify(&token, ISS, &["vault".to_string()], NOW),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        verifier.verify(&token, ISS, &[], NOW),
        Err(TokenError::WrongAudience)
    );
    // One matching audience among several is enough.
    let auds = vec!["vault".to_string(), ISS.to_string()];
    verifier.verify(&token, ISS, &auds, NOW).unwrap();
}

#[test]
fn garbage_is_rejected_without_panicking() {
    let (signer, verifier, _tmp) = keys();
    let good = signer.sign(&claims()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let junk: String = (0..10 * 1024)
        .map(|i| char::from(b"A.b-_=+/\x00\xff"[i % 10] & 0x7f))
        .collect();
    let none_alg = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
    )
    .unwrap();
    let cases = [
        String::new(),
        "a.b.c".to_string(),
        "....".to_string(),
        "a".to_string(),
        junk,
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}", parts[0], parts[1], "!!!"),
        format!("{}.{}.{}", parts[0], "e30", parts[2]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        none_alg,
        hs256,
    ];
    for case in &cases {
        let result = verifier.verify(case, ISS, &aud(), NOW);
        assert!(
            matches!(
                result,
                Err(TokenError::Malformed) | Err(TokenError::BadSignature)
            ),
            "{:?} -> {result:?}",
            &case[..case.len().min(40)]
        );
    }
}

#[test]
fn bad_keys_are_errors() {
    assert!(TokenSigner::from_pem("").is_err());
    assert!(TokenSigner::from_pem(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    .is_err());
    assert!(TokenVerifier::from_public_pems(&[]).is_err());
    assert!(TokenVerifier::from_public_pems(&["not a pem"]).is_err());
    let ca = pki::Ca::generate("x").unwrap();
    // A certificate is not a public key block.
    assert!(TokenVerifier::from_public_pems(&[ca.cert_pem()]).is_err());
}
