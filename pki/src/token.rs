//! ServiceAccount tokens: ES256 JWTs shaped like the ones kube-apiserver issues.

use std::collections::HashSet;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::{KeyPair, PublicKeyData as _, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Digest as _;

use crate::ca::pem_encode;
use crate::Error;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, as kube-apiserver does (60 s).
pub const TOKEN_LEEWAY_SECONDS: i64 = 60;

/// The claims of a ServiceAccount token (the `kubernetes.io` private claim holds the bound
/// objects, as in upstream's bound service account tokens).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Issuer (the API server's `--service-account-issuer`).
    pub iss: String,
    /// Subject: `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// Audiences. Accepted as a JSON string or array when reading (RFC 7519 allows both);
    /// always written as an array, as kube-apiserver does.
    #[serde(deserialize_with = "string_or_array")]
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Token ID, for audit correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Kubernetes' private claims.
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
}

/// The `kubernetes.io` claim: the ServiceAccount and the objects the token is bound to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The node the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// The secret the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
}

/// Name and UID of a bound object; the UID makes a token die with the object it is bound
/// to even if an object of the same name is recreated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Object name.
    pub name: String,
    /// Object UID.
    pub uid: String,
}

fn string_or_array<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why a token was rejected. Deliberately coarse: the API server answers 401 for all of
/// them and only logs the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT (wrong number of parts, bad base64 or JSON, claims of the wrong shape).
    #[error("malformed token")]
    Malformed,
    /// Not signed by any trusted key (or with an algorithm other than ES256).
    #[error("token signature is invalid")]
    BadSignature,
    /// Past `exp` (plus leeway).
    #[error("token has expired")]
    Expired,
    /// Before `nbf` or `iat` (minus leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// No `aud` entry is an accepted audience.
    #[error("token audience is not accepted")]
    WrongAudience,
}

/// The key ID kube-apiserver derives from a public key: unpadded base64url of the SHA-256 of
/// its DER SubjectPublicKeyInfo. Verifiers (and OIDC discovery's JWKS) use it to pick the key.
pub fn key_id(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(spki_der))
}

/// Signs ServiceAccount tokens with the cluster's P-256 key (`sa.key`).
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads a PKCS#8 PEM P-256 private key (what [`crate::ensure`] writes as `sa.key`).
    pub fn from_pem(private_key_pem: &str) -> Result<Self, Error> {
        let pair = KeyPair::from_pem(private_key_pem)
            .map_err(|e| Error::pem("service account private key", e))?;
        if !pair.is_compatible(&PKCS_ECDSA_P256_SHA256) {
            return Err(Error::pem(
                "service account private key",
                "not an ECDSA P-256 key (tokens are ES256)",
            ));
        }
        let key = EncodingKey::from_ec_pem(private_key_pem.as_bytes())?;
        Ok(TokenSigner {
            key,
            kid: key_id(&pair.subject_public_key_info()),
        })
    }

    /// The `kid` put in every token's header.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as a compact JWS (ES256, `kid` in the header).
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

/// Verifies ServiceAccount tokens against one or more public keys (several during key
/// rotation).
pub struct TokenVerifier {
    keys: Vec<(String, DecodingKey)>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field(
                "kids",
                &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TokenVerifier {
    /// Trusts every `PUBLIC KEY` (SPKI) block in `pems`; each string may hold several, like
    /// kube-apiserver's `--service-account-key-file`. Only EC keys are accepted.
    pub fn from_public_pems(pems: &[&str]) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for pem in pems {
            let blocks = SubjectPublicKeyInfoDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::pem("service account public key", e))?;
            if blocks.is_empty() {
                return Err(Error::pem(
                    "service account public key",
                    "no PUBLIC KEY block found",
                ));
            }
            for spki in blocks {
                let decoding =
                    DecodingKey::from_ec_pem(pem_encode("PUBLIC KEY", &spki).as_bytes())?;
                keys.push((key_id(&spki), decoding));
            }
        }
        if keys.is_empty() {
            return Err(Error::pem("service account public key", "no keys given"));
        }
        Ok(TokenVerifier { keys })
    }

    /// Verifies `token`: ES256 signature by a trusted key, `iss == issuer`, at least one
    /// `aud` in `audiences`, and `exp`/`nbf`/`iat` against `now_unix` with
    /// [`TOKEN_LEEWAY_SECONDS`]. The time is a parameter so callers and tests control it.
    /// Whether the bound objects still exist is the caller's business.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[String],
        now_unix: i64,
    ) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // Only ES256: accepting the header's choice would invite algorithm confusion.
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::BadSignature);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        // Claims are checked below against the caller's clock, not the library's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;

        // The kid only narrows the search; a token without (or with an unknown) kid is
        // tried against every key, as kube-apiserver does.
        let by_kid: Vec<&DecodingKey> = self
            .keys
            .iter()
            .filter(|(kid, _)| header.kid.as_deref() == Some(kid.as_str()))
            .map(|(_, k)| k)
            .collect();
        let candidates: Vec<&DecodingKey> = if by_kid.is_empty() {
            self.keys.iter().map(|(_, k)| k).collect()
        } else {
            by_kid
        };

        let mut claims = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::Crypto(_) => continue,
                    ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                        return Err(TokenError::BadSignature);
                    }
                    _ => return Err(TokenError::Malformed),
                },
            }
        }
        let claims = claims.ok_or(TokenError::BadSignature)?;

        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if now_unix.saturating_sub(TOKEN_LEEWAY_SECONDS) > claims.exp {
            return Err(TokenError::Expired);
        }
        let earliest = now_unix.saturating_add(TOKEN_LEEWAY_SECONDS);
        if claims.nbf > earliest || claims.iat > earliest {
            return Err(TokenError::NotYetValid);
        }
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}
