//! Encryption at rest: kube-apiserver's `--encryption-provider-config` for any [`Storage`].
//!
//! [`EncryptionConfig`] reads an `apiserver.config.k8s.io/v1` `EncryptionConfiguration`, and
//! [`EncryptedStorage`] wraps another store so that the values of the configured resources are
//! encrypted before they reach it and decrypted on every way out (get, list, delete, watch).
//! Whoever can read the database file or an etcd snapshot then sees ciphertext, not Secrets.
//!
//! The stored format is upstream's, byte for byte, so the data stays readable by the same
//! keys whichever implementation wrote it:
//!
//! - `aesgcm`: `k8s:enc:aesgcm:v1:<key name>:` + 12-byte random nonce + ciphertext and tag, with
//!   the storage key as additional authenticated data, so a value copied under another key
//!   (say, a Secret moved into an attacker's namespace) fails to decrypt;
//! - `secretbox`: `k8s:enc:secretbox:v1:<key name>:` + 24-byte random nonce + NaCl secretbox
//!   (XSalsa20-Poly1305; like upstream, not bound to the storage key);
//! - `identity`: the plaintext, unprefixed.
//!
//! The first provider (and its first key) encrypts every write; all of them are tried on reads,
//! in order. That is what makes key rotation safe: add the new key second, restart every API
//! server, move it first, restart again, rewrite all data, and only then drop the old key.
//! With `identity` in the list, unprefixed (plaintext) values read as they are, which is how
//! encryption is turned on for a store that already holds data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use crypto_secretbox::XSalsa20Poly1305;
use futures::StreamExt;
use serde::Deserialize;

use crate::{
    Error as StorageError, KeyValue, ListOptions, ListResult, Result, Revision, Storage,
    WatchEvent, WatchOptions, WatchStream,
};

/// AES-192-GCM: upstream accepts 24-byte AES keys too, and aes-gcm has no alias for it.
type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, U12>;

/// The `apiVersion` upstream requires of the file.
const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The `kind` upstream requires of the file.
const KIND: &str = "EncryptionConfiguration";
/// What every encrypted value starts with; `identity` refuses to pass such data off as
/// plaintext, so removing encryption (identity first) still decrypts old values.
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
/// The AES-GCM nonce length (96 bits, the size GCM is defined for).
const GCM_NONCE_LEN: usize = 12;
/// The secretbox nonce length (XSalsa20's 192 bits, large enough to be random).
const SECRETBOX_NONCE_LEN: usize = 24;

/// Why an encryption configuration was rejected. The API server refuses to start with one, so
/// each message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading encryption provider configuration {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The text is not YAML (or JSON) of the expected shape.
    #[error("parsing encryption provider configuration: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A provider this implementation does not know or does not support.
    #[error("{field}: unsupported provider {name:?} (supported: aesgcm, secretbox, identity)")]
    UnknownProvider {
        /// Where in the file.
        field: String,
        /// The provider's name.
        name: String,
    },
    /// A key's secret is not valid base64 or not a valid length for its provider.
    #[error("{field}: {reason}")]
    InvalidKey {
        /// Where in the file.
        field: String,
        /// What is wrong with it (never the secret itself).
        reason: String,
    },
    /// Any other violation of upstream's validation rules.
    #[error("{0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// The file format.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<RawResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    /// One map per provider element: its single key names the provider, so an unknown provider
    /// can be reported by name rather than as a generic "unknown field".
    #[serde(default)]
    providers: Vec<BTreeMap<String, serde_yaml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

// ---------------------------------------------------------------------------------------------
// Transformers.

/// The cipher of one key.
enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<Aes192Gcm>),
    Aes256(Box<Aes256Gcm>),
    Secretbox(Box<XSalsa20Poly1305>),
    Identity,
}

/// One key of one provider, with the prefix that marks values it wrote.
struct Transformer {
    /// `k8s:enc:<provider>:v1:<key name>:`, empty for identity.
    prefix: Vec<u8>,
    /// For messages: `aesgcm key "k1"`; never the secret.
    label: String,
    cipher: Cipher,
}

impl Transformer {
    /// Encrypts `plaintext` to its stored form, prefix included. `key` is the storage key,
    /// authenticated (not stored) by AES-GCM.
    fn seal(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = self.prefix.clone();
        match &self.cipher {
            Cipher::Aes128(c) => gcm_seal(c.as_ref(), key, plaintext, &mut out)?,
            Cipher::Aes192(c) => gcm_seal(c.as_ref(), key, plaintext, &mut out)?,
            Cipher::Aes256(c) => gcm_seal(c.as_ref(), key, plaintext, &mut out)?,
            Cipher::Secretbox(c) => {
                let nonce: [u8; SECRETBOX_NONCE_LEN] = rand::random();
                let sealed = c
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plaintext)
                    .map_err(|_| format!("{} failed to encrypt", self.label))?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
            Cipher::Identity => out.extend_from_slice(plaintext),
        }
        Ok(out)
    }

    /// Decrypts `data` (the stored value with this transformer's prefix already removed).
    fn open(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.cipher {
            Cipher::Aes128(c) => gcm_open(c.as_ref(), key, data, &self.label),
            Cipher::Aes192(c) => gcm_open(c.as_ref(), key, data, &self.label),
            Cipher::Aes256(c) => gcm_open(c.as_ref(), key, data, &self.label),
            Cipher::Secretbox(c) => {
                if data.len() < SECRETBOX_NONCE_LEN {
                    return Err(format!("{}: the value is too short", self.label));
                }
                let (nonce, sealed) = data.split_at(SECRETBOX_NONCE_LEN);
                c.decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
                    .map_err(|_| format!("{}: the value failed authentication", self.label))
            }
            Cipher::Identity => {
                if data.starts_with(ENCRYPTED_PREFIX) {
                    Err("identity: the value is encrypted".to_string())
                } else {
                    Ok(data.to_vec())
                }
            }
        }
    }
}

/// Appends a fresh random nonce and the AES-GCM ciphertext of `plaintext` to `out`.
///
/// A random 96-bit nonce is what upstream uses; it stays safe for about 2^32 writes per key,
/// which is why upstream recommends rotating aesgcm keys often.
fn gcm_seal<C: Aead + AeadCore<NonceSize = U12>>(
    cipher: &C,
    key: &str,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let nonce: [u8; GCM_NONCE_LEN] = rand::random();
    let sealed = cipher
        .encrypt(
            aes_gcm::Nonce::<U12>::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: key.as_bytes(),
            },
        )
        .map_err(|_| "aesgcm failed to encrypt".to_string())?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(())
}

/// Opens an AES-GCM value: nonce, then ciphertext and tag, authenticated with the storage key.
fn gcm_open<C: Aead + AeadCore<NonceSize = U12>>(
    cipher: &C,
    key: &str,
    data: &[u8],
    label: &str,
) -> Result<Vec<u8>, String> {
    if data.len() < GCM_NONCE_LEN {
        return Err(format!("{label}: the value is too short"));
    }
    let (nonce, sealed) = data.split_at(GCM_NONCE_LEN);
    cipher
        .decrypt(
            aes_gcm::Nonce::<U12>::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: key.as_bytes(),
            },
        )
        .map_err(|_| {
            format!(
                "{label}: the value failed authentication (wrong key, tampered with, or \
                 copied from another storage key)"
            )
        })
}

/// The ordered transformers of one resource rule: every key of every provider.
struct Providers {
    transformers: Vec<Transformer>,
}

impl Providers {
    /// Whether a stored value was written by something other than the write provider (an older
    /// key, another provider, or plaintext) and should be rewritten, upstream's "stale".
    fn is_stale(&self, data: &[u8]) -> bool {
        match self.transformers.first() {
            Some(t) if t.prefix.is_empty() => data.starts_with(ENCRYPTED_PREFIX),
            Some(t) => !data.starts_with(&t.prefix),
            None => false,
        }
    }

    /// The stored form of a new write: always the first transformer.
    fn seal(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        match self.transformers.first() {
            Some(t) => t.seal(key, plaintext),
            None => Err("no provider configured".to_string()),
        }
    }

    /// Reads a stored value as upstream does: every transformer whose prefix matches is tried in
    /// order (several keys of one provider share `k8s:enc:<provider>:v1:` only up to the key
    /// name, and identity matches everything), and the first success wins.
    fn open(&self, key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let mut errors = Vec::new();
        for t in &self.transformers {
            let Some(rest) = data.strip_prefix(t.prefix.as_slice()) else {
                continue;
            };
            match t.open(key, rest) {
                Ok(plain) => return Ok(plain),
                // Identity refusing encrypted data is how removing encryption works: the next
                // provider gets its turn, and the refusal itself is no error worth reporting.
                Err(_) if t.prefix.is_empty() => continue,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Err(
                "the value matches no configured provider (plaintext without an identity \
                 provider, or written with a key that is no longer configured)"
                    .to_string(),
            )
        } else {
            Err(errors.join("; "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The configuration.

/// A parsed `EncryptionConfiguration`: which resources are encrypted, with which keys.
///
/// Resources are matched the way upstream matches them: an exact `<resource>.<group>` (plain
/// `<resource>` for the core group) first, then `*.<group>` (`*.` for the core group), then
/// `*.*`. A resource listed after a wildcard that already covers it is an error, as upstream,
/// because that rule would silently never apply.
pub struct EncryptionConfig {
    /// `(group, resource)` → providers; the core group is `""`.
    exact: HashMap<(String, String), Arc<Providers>>,
    /// `group` → providers for `*.<group>`.
    groups: HashMap<String, Arc<Providers>>,
    /// `*.*`.
    everything: Option<Arc<Providers>>,
}

impl fmt::Debug for EncryptionConfig {
    /// Lists resources and key names only: the keys must never end up in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels = |p: &Arc<Providers>| {
            p.transformers
                .iter()
                .map(|t| t.label.clone())
                .collect::<Vec<_>>()
        };
        let mut map = f.debug_map();
        for ((group, resource), p) in &self.exact {
            map.entry(&format!("{resource}.{group}"), &labels(p));
        }
        for (group, p) in &self.groups {
            map.entry(&format!("*.{group}"), &labels(p));
        }
        if let Some(p) = &self.everything {
            map.entry(&"*.*", &labels(p));
        }
        map.finish()
    }
}

impl EncryptionConfig {
    /// Reads and validates the file given to `--encryption-provider-config`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates an `EncryptionConfiguration` in YAML (or JSON, which is YAML).
    pub fn parse(yaml: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(yaml)?;
        if raw.api_version != API_VERSION || raw.kind != KIND {
            return Err(ConfigError::Invalid(format!(
                "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got {:?} and {:?}",
                raw.api_version, raw.kind
            )));
        }
        if raw.resources.is_empty() {
            return Err(ConfigError::Invalid(
                "resources: at least one resource rule is required".into(),
            ));
        }
        let mut config = EncryptionConfig {
            exact: HashMap::new(),
            groups: HashMap::new(),
            everything: None,
        };
        for (i, rule) in raw.resources.iter().enumerate() {
            let field = format!("resources[{i}]");
            if rule.resources.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{field}.resources: at least one resource is required"
                )));
            }
            let providers = Arc::new(build_providers(&field, &rule.providers)?);
            for (j, name) in rule.resources.iter().enumerate() {
                let (group, resource) =
                    parse_group_resource(&format!("{field}.resources[{j}]"), name)?;
                config.insert(group, resource, name, providers.clone())?;
            }
        }
        Ok(config)
    }

    /// Records one resource rule, refusing duplicates and rules masked by an earlier wildcard.
    fn insert(
        &mut self,
        group: String,
        resource: String,
        name: &str,
        providers: Arc<Providers>,
    ) -> Result<(), ConfigError> {
        let masked = |by: &str| {
            ConfigError::Invalid(format!(
                "resource {name:?} is masked by earlier rule {by:?}"
            ))
        };
        if self.everything.is_some() {
            return Err(masked("*.*"));
        }
        if group == "*" {
            self.everything = Some(providers);
            return Ok(());
        }
        if self.groups.contains_key(&group) {
            return Err(masked(&format!("*.{group}")));
        }
        if resource == "*" {
            self.groups.insert(group, providers);
            return Ok(());
        }
        if self.exact.insert((group, resource), providers).is_some() {
            return Err(ConfigError::Invalid(format!(
                "resource {name:?} is listed more than once"
            )));
        }
        Ok(())
    }

    /// The providers of the object stored under `key`, if its resource is configured. Keys are
    /// `/registry/<group>/<resource>/...` with `core` for the core group; any other key is
    /// never transformed.
    fn providers_for(&self, key: &str) -> Option<&Providers> {
        let mut parts = key.strip_prefix("/registry/")?.splitn(3, '/');
        let group = parts.next()?;
        let resource = parts.next()?;
        // Only a key below the resource's prefix names an object.
        parts.next()?;
        let group = if group == "core" { "" } else { group };
        self.exact
            .get(&(group.to_owned(), resource.to_owned()))
            .or_else(|| self.groups.get(group))
            .or(self.everything.as_ref())
            .map(Arc::as_ref)
    }
}

/// Splits `<resource>.<group>` at its first dot, as upstream's `ParseGroupResource`, and applies
/// upstream's rules about wildcards.
fn parse_group_resource(field: &str, name: &str) -> Result<(String, String), ConfigError> {
    let (resource, group) = match name.split_once('.') {
        Some((resource, group)) => (resource, group),
        None => (name, ""),
    };
    let invalid = |why: &str| ConfigError::Invalid(format!("{field}: {name:?}: {why}"));
    if resource.is_empty() {
        return Err(invalid("the resource name is empty"));
    }
    if name == "*" {
        return Err(invalid(
            "use '*.' to encrypt all resources of the core group or '*.*' for all resources",
        ));
    }
    if group == "*" && resource != "*" {
        return Err(invalid(
            "a wildcard group needs a wildcard resource ('*.*')",
        ));
    }
    if resource.contains('*') && resource != "*" {
        return Err(invalid("'*' can only stand for the whole resource name"));
    }
    if name != name.to_lowercase() {
        return Err(invalid("resource names are lowercase"));
    }
    Ok((group.to_owned(), resource.to_owned()))
}

/// Builds the transformers of one rule's provider list, in order.
fn build_providers(
    field: &str,
    providers: &[BTreeMap<String, serde_yaml::Value>],
) -> Result<Providers, ConfigError> {
    if providers.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{field}.providers: at least one provider is required"
        )));
    }
    let mut transformers = Vec::new();
    for (i, element) in providers.iter().enumerate() {
        let field = format!("{field}.providers[{i}]");
        let mut entries = element.iter();
        let (Some((name, value)), None) = (entries.next(), entries.next()) else {
            return Err(ConfigError::Invalid(format!(
                "{field}: exactly one provider per list element is required"
            )));
        };
        let field = format!("{field}.{name}");
        match name.as_str() {
            "identity" => transformers.push(Transformer {
                prefix: Vec::new(),
                label: "identity".into(),
                cipher: Cipher::Identity,
            }),
            "aesgcm" | "secretbox" => {
                let keys: RawKeys = serde_yaml::from_value(value.clone())
                    .map_err(|e| ConfigError::Invalid(format!("{field}: {e}")))?;
                if keys.keys.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "{field}.keys: at least one key is required"
                    )));
                }
                for (k, key) in keys.keys.iter().enumerate() {
                    let field = format!("{field}.keys[{k}]");
                    if key.name.is_empty() {
                        return Err(ConfigError::Invalid(format!("{field}.name: required")));
                    }
                    transformers.push(build_key(&field, name, key)?);
                }
            }
            _ => {
                return Err(ConfigError::UnknownProvider {
                    field,
                    name: name.clone(),
                })
            }
        }
    }
    Ok(Providers { transformers })
}

/// Decodes one key's secret and makes its cipher.
fn build_key(field: &str, provider: &str, key: &RawKey) -> Result<Transformer, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidKey {
        field: format!("{field}.secret"),
        reason,
    };
    if key.secret.is_empty() {
        return Err(invalid("required".into()));
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(key.secret.trim())
        .map_err(|e| invalid(format!("not valid base64: {e}")))?;
    let bad_length = |want: &str| {
        invalid(format!(
            "{provider} needs a {want}-byte key, this one is {} bytes",
            secret.len()
        ))
    };
    let cipher = match provider {
        "aesgcm" => match secret.len() {
            16 => Cipher::Aes128(Box::new(
                Aes128Gcm::new_from_slice(&secret).map_err(|_| bad_length("16"))?,
            )),
            24 => Cipher::Aes192(Box::new(
                Aes192Gcm::new_from_slice(&secret).map_err(|_| bad_length("24"))?,
            )),
            32 => Cipher::Aes256(Box::new(
                Aes256Gcm::new_from_slice(&secret).map_err(|_| bad_length("32"))?,
            )),
            _ => return Err(bad_length("16, 24 or 32")),
        },
        _ => match secret.len() {
            32 => Cipher::Secretbox(Box::new(
                XSalsa20Poly1305::new_from_slice(&secret).map_err(|_| bad_length("32"))?,
            )),
            _ => return Err(bad_length("32")),
        },
    };
    Ok(Transformer {
        prefix: format!("k8s:enc:{provider}:v1:{}:", key.name).into_bytes(),
        label: format!("{provider} key {:?}", key.name),
        cipher,
    })
}

// ---------------------------------------------------------------------------------------------
// The wrapper.

/// A [`Storage`] that encrypts the values of the configured resources on the way in and
/// decrypts them on the way out, around any other store.
///
/// Everything else (keys, revisions, conflicts, watches) passes through untouched, so the
/// wrapper keeps the inner store's contract. A value that cannot be decrypted surfaces as
/// [`StorageError::Internal`]: retrying will not help, and the API server answers 500 as
/// upstream does.
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    config: Arc<EncryptionConfig>,
}

impl fmt::Debug for EncryptedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStorage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EncryptedStorage {
    /// Wraps `inner`, encrypting as `config` says.
    pub fn new(inner: Arc<dyn Storage>, config: EncryptionConfig) -> Self {
        EncryptedStorage {
            inner,
            config: Arc::new(config),
        }
    }

    /// Rewrites every value under `prefix` that is not in the current write provider's form
    /// (written with an older key, another provider, or as plaintext); returns how many.
    ///
    /// This is the last step of a key rotation, and how existing data gets encrypted after
    /// encryption is turned on. Upstream relies on updating every object with unchanged
    /// content (`kubectl replace`), which works there because its GuaranteedUpdate writes a
    /// "stale" value even when nothing changed; [`crate::guaranteed_update`] skips such no-op
    /// writes, so the rewrite has to happen here. Each rewrite is conditional on the revision
    /// read: a key written meanwhile has been re-encrypted by that write and is skipped.
    pub async fn rewrite_stale(&self, prefix: &str) -> Result<u64> {
        let mut rewritten = 0;
        let mut opts = ListOptions {
            limit: Some(500),
            ..ListOptions::default()
        };
        loop {
            let page = self.inner.list(prefix, &opts).await?;
            for kv in page.items {
                let Some(providers) = self.config.providers_for(&kv.key) else {
                    continue;
                };
                if !providers.is_stale(&kv.value) {
                    continue;
                }
                let plain = decrypt(&self.config, &kv.key, kv.value)?;
                let stored = encrypt(&self.config, &kv.key, plain)?;
                match self.inner.update(&kv.key, stored, kv.mod_revision).await {
                    Ok(_) => rewritten += 1,
                    Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.continue_token {
                Some(token) => opts.continue_token = Some(token),
                None => return Ok(rewritten),
            }
        }
    }
}

/// The stored form of `value` under `key`.
fn encrypt(config: &EncryptionConfig, key: &str, value: Bytes) -> Result<Bytes> {
    match config.providers_for(key) {
        None => Ok(value),
        Some(p) => p
            .seal(key, &value)
            .map(Bytes::from)
            .map_err(|e| StorageError::Internal(format!("encrypting {key:?}: {e}"))),
    }
}

/// The plaintext of the value stored under `key`.
fn decrypt(config: &EncryptionConfig, key: &str, value: Bytes) -> Result<Bytes> {
    match config.providers_for(key) {
        None => Ok(value),
        Some(p) => p
            .open(key, &value)
            .map(Bytes::from)
            .map_err(|e| StorageError::Internal(format!("decrypting {key:?}: {e}"))),
    }
}

fn decrypt_kv(config: &EncryptionConfig, mut kv: KeyValue) -> Result<KeyValue> {
    kv.stale = config
        .providers_for(&kv.key)
        .is_some_and(|p| p.is_stale(&kv.value));
    kv.value = decrypt(config, &kv.key, kv.value)?;
    Ok(kv)
}

fn decrypt_event(config: &EncryptionConfig, event: WatchEvent) -> Result<WatchEvent> {
    Ok(match event {
        WatchEvent::Created(kv) => WatchEvent::Created(decrypt_kv(config, kv)?),
        WatchEvent::Modified { kv, prev } => {
            let prev = decrypt(config, &kv.key, prev)?;
            WatchEvent::Modified {
                kv: decrypt_kv(config, kv)?,
                prev,
            }
        }
        WatchEvent::Deleted(kv) => WatchEvent::Deleted(decrypt_kv(config, kv)?),
        WatchEvent::Progress(rev) => WatchEvent::Progress(rev),
    })
}

#[async_trait]
impl Storage for EncryptedStorage {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let stored = encrypt(&self.config, key, value)?;
        self.inner.create(key, stored).await
    }

    async fn get(&self, key: &str) -> Result<KeyValue> {
        decrypt_kv(&self.config, self.inner.get(key).await?)
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let mut page = self.inner.list(prefix, opts).await?;
        page.items = page
            .items
            .into_iter()
            .map(|kv| decrypt_kv(&self.config, kv))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let stored = encrypt(&self.config, key, value)?;
        self.inner.update(key, stored, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        decrypt_kv(&self.config, self.inner.delete(key, expected).await?)
    }

    async fn watch(&self, opts: WatchOptions) -> Result<WatchStream> {
        let config = self.config.clone();
        let mut failed = false;
        let stream = self
            .inner
            .watch(opts)
            .await?
            .map(move |event| event.and_then(|e| decrypt_event(&config, e)))
            // A watch ends with its first error: consumers re-list after one, and must not see
            // later events as if nothing had been skipped.
            .take_while(move |event| {
                let go = !failed;
                failed |= event.is_err();
                futures::future::ready(go)
            });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.inner.count(prefix).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(config: &EncryptionConfig, key: &str) -> Option<Vec<String>> {
        config
            .providers_for(key)
            .map(|p| p.transformers.iter().map(|t| t.label.clone()).collect())
    }

    #[test]
    fn resources_resolve_exact_then_group_then_everything() {
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let yaml = format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n\
             - resources: [secrets, leases.coordination.k8s.io]\n  providers: [{{aesgcm: {{keys: [{{name: a, secret: {secret}}}]}}}}]\n\
             - resources: ['*.']\n  providers: [{{secretbox: {{keys: [{{name: b, secret: {secret}}}]}}}}]\n\
             - resources: ['*.apps']\n  providers: [{{identity: {{}}}}, {{aesgcm: {{keys: [{{name: c, secret: {secret}}}]}}}}]\n"
        );
        let config = EncryptionConfig::parse(&yaml).expect("valid");
        let a = Some(vec![r#"aesgcm key "a""#.to_string()]);
        let b = Some(vec![r#"secretbox key "b""#.to_string()]);
        let c = Some(vec![
            "identity".to_string(),
            r#"aesgcm key "c""#.to_string(),
        ]);
        assert_eq!(labels(&config, "/registry/core/secrets/ns/s"), a);
        assert_eq!(
            labels(&config, "/registry/coordination.k8s.io/leases/ns/l"),
            a
        );
        assert_eq!(labels(&config, "/registry/core/configmaps/ns/c"), b);
        assert_eq!(labels(&config, "/registry/core/nodes/n1"), b);
        assert_eq!(labels(&config, "/registry/apps/deployments/ns/d"), c);
        assert_eq!(labels(&config, "/registry/batch/jobs/ns/j"), None);
        // Not object keys: prefixes and other trees.
        assert_eq!(labels(&config, "/registry/core/secrets"), None);
        assert_eq!(labels(&config, "/elsewhere/core/secrets/ns/s"), None);
    }
}
