//! Encryption at rest through [`EncryptedStorage`] over the embedded store: what reaches the
//! inner store is ciphertext in upstream's format, what comes out is the plaintext.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use storage::embedded::{EmbeddedConfig, EmbeddedStore};
use storage::encryption::{ConfigError, EncryptedStorage, EncryptionConfig};
use storage::testing::embedded_path;
use storage::{Error, ListOptions, Storage, WatchEvent, WatchOptions};

const SECRET_KEY: &str = "/registry/core/secrets/default/db-password";
const PLAINTEXT: &[u8] = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;

/// A base64 key of `len` bytes, all `fill`.
fn key(fill: u8, len: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![fill; len])
}

fn config(providers: &str) -> EncryptionConfig {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers:\n{providers}"
    );
    EncryptionConfig::parse(&yaml).expect("valid configuration")
}

fn aesgcm(name: &str, fill: u8) -> String {
    format!(
        "  - aesgcm:\n      keys:\n      - name: {name}\n        secret: {}\n",
        key(fill, 32)
    )
}

fn secretbox(name: &str, fill: u8) -> String {
    format!(
        "  - secretbox:\n      keys:\n      - name: {name}\n        secret: {}\n",
        key(fill, 32)
    )
}

const IDENTITY: &str = "  - identity: {}\n";

struct Fixture {
    inner: Arc<dyn Storage>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(EmbeddedConfig::new(embedded_path(dir.path())))
        .expect("open the embedded store");
    Fixture {
        inner: Arc::new(store),
        _dir: dir,
    }
}

/// The next watch event, failing the test if none comes in time.
async fn next(w: &mut storage::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event ok")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn secrets_are_ciphertext_inside_and_plaintext_outside() {
    let f = fixture();
    let store = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    let mut watch = store
        .watch(WatchOptions::new("/registry/", 0))
        .await
        .expect("watch");

    let rev = store
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    let raw = f.inner.get(SECRET_KEY).await.expect("raw get");
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    assert!(!contains(&raw.value, b"aHVudGVyMg=="));
    // Prefix, 12-byte nonce, ciphertext as long as the plaintext, 16-byte tag.
    assert_eq!(
        raw.value.len(),
        "k8s:enc:aesgcm:v1:k1:".len() + 12 + PLAINTEXT.len() + 16
    );

    let kv = store.get(SECRET_KEY).await.expect("get");
    assert_eq!(kv.value, PLAINTEXT);
    assert_eq!(kv.mod_revision, rev);

    let page = store
        .list("/registry/core/secrets/", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].value, PLAINTEXT);

    let updated = br#"{"kind":"Secret","data":{"password":"c3dvcmRmaXNo"}}"#;
    let rev2 = store
        .update(SECRET_KEY, Bytes::from_static(updated), rev)
        .await
        .expect("update");
    let raw2 = f.inner.get(SECRET_KEY).await.expect("raw get");
    assert!(!contains(&raw2.value, b"c3dvcmRmaXNo"));
    // A fresh nonce per write: the same plaintext never encrypts the same way twice.
    let nonce = |v: &[u8]| v["k8s:enc:aesgcm:v1:k1:".len()..][..12].to_vec();
    assert_ne!(nonce(&raw.value), nonce(&raw2.value));

    let deleted = store.delete(SECRET_KEY, Some(rev2)).await.expect("delete");
    assert_eq!(deleted.value, &updated[..]);

    match next(&mut watch).await {
        WatchEvent::Created(kv) => assert_eq!(kv.value, PLAINTEXT),
        other => panic!("expected Created, got {other:?}"),
    }
    match next(&mut watch).await {
        WatchEvent::Modified { kv, prev } => {
            assert_eq!(kv.value, &updated[..]);
            assert_eq!(prev, PLAINTEXT);
        }
        other => panic!("expected Modified, got {other:?}"),
    }
    match next(&mut watch).await {
        WatchEvent::Deleted(kv) => assert_eq!(kv.value, &updated[..]),
        other => panic!("expected Deleted, got {other:?}"),
    }
}

#[tokio::test]
async fn unconfigured_resources_stay_plaintext() {
    let f = fixture();
    let store = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    let key = "/registry/core/configmaps/default/settings";
    let value = Bytes::from_static(br#"{"kind":"ConfigMap"}"#);
    store.create(key, value.clone()).await.expect("create");
    assert_eq!(f.inner.get(key).await.expect("raw").value, value);
    assert_eq!(store.get(key).await.expect("get").value, value);
    // Keys outside the /registry/<group>/<resource>/ scheme are never touched either.
    store
        .create("/other/secrets", value.clone())
        .await
        .expect("create");
    assert_eq!(
        f.inner.get("/other/secrets").await.expect("raw").value,
        value
    );
}

#[tokio::test]
async fn key_rotation_reads_data_written_with_the_old_key() {
    let f = fixture();
    let old = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("old", 1)));
    let rev = old
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");

    // Step 1 of a rotation: the new key is added second (every server can then read it).
    let both = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{}", aesgcm("old", 1), aesgcm("new", 2))),
    );
    assert_eq!(both.get(SECRET_KEY).await.expect("get").value, PLAINTEXT);

    // Step 2: the new key moves first; old data still reads, new writes use the new key.
    let rotated = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{}", aesgcm("new", 2), aesgcm("old", 1))),
    );
    assert_eq!(rotated.get(SECRET_KEY).await.expect("get").value, PLAINTEXT);
    rotated
        .update(SECRET_KEY, Bytes::from_static(PLAINTEXT), rev)
        .await
        .expect("rewrite");
    let raw = f.inner.get(SECRET_KEY).await.expect("raw");
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:new:"));

    // Step 3: the old key is gone; the rewritten data is still readable.
    let new_only = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("new", 2)));
    assert_eq!(
        new_only.get(SECRET_KEY).await.expect("get").value,
        PLAINTEXT
    );

    // Data nobody rewrote is unreadable once its key is removed.
    old.create(
        "/registry/core/secrets/default/forgotten",
        Bytes::from_static(PLAINTEXT),
    )
    .await
    .expect("create");
    let err = new_only
        .get("/registry/core/secrets/default/forgotten")
        .await
        .expect_err("the old key is gone");
    assert!(matches!(err, Error::Internal(_)), "{err}");
}

#[tokio::test]
async fn a_wrong_key_with_the_same_name_fails() {
    let f = fixture();
    let writer = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    writer
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    let reader = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 9)));
    let err = reader.get(SECRET_KEY).await.expect_err("wrong key");
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[tokio::test]
async fn secretbox_round_trips() {
    let f = fixture();
    let store = EncryptedStorage::new(f.inner.clone(), config(&secretbox("sb", 3)));
    store
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    let raw = f.inner.get(SECRET_KEY).await.expect("raw");
    assert!(raw.value.starts_with(b"k8s:enc:secretbox:v1:sb:"));
    assert!(!contains(&raw.value, b"aHVudGVyMg=="));
    // Prefix, 24-byte nonce, 16-byte tag, ciphertext.
    assert_eq!(
        raw.value.len(),
        "k8s:enc:secretbox:v1:sb:".len() + 24 + 16 + PLAINTEXT.len()
    );
    assert_eq!(store.get(SECRET_KEY).await.expect("get").value, PLAINTEXT);

    // Rotating from secretbox to aesgcm: both providers, aesgcm first.
    let mixed = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{}", aesgcm("k1", 1), secretbox("sb", 3))),
    );
    assert_eq!(mixed.get(SECRET_KEY).await.expect("get").value, PLAINTEXT);
}

#[tokio::test]
async fn aesgcm_value_moved_to_another_key_fails_to_decrypt() {
    let f = fixture();
    let store = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    store
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    let raw = f.inner.get(SECRET_KEY).await.expect("raw");
    let stolen = "/registry/core/secrets/attacker/db-password";
    f.inner.create(stolen, raw.value).await.expect("raw copy");
    let err = store.get(stolen).await.expect_err("bound to its key");
    assert!(matches!(err, Error::Internal(_)), "{err}");
    assert!(err.to_string().contains(stolen), "{err}");
    // A list that includes the moved value fails as a whole rather than skipping it silently.
    store
        .list("/registry/core/secrets/", &ListOptions::default())
        .await
        .expect_err("list includes the moved value");
}

#[tokio::test]
async fn identity_reads_existing_plaintext_and_without_it_plaintext_is_an_error() {
    let f = fixture();
    // A store that held Secrets before encryption was turned on.
    f.inner
        .create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("raw create");

    let with_identity = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{IDENTITY}", aesgcm("k1", 1))),
    );
    assert_eq!(
        with_identity.get(SECRET_KEY).await.expect("get").value,
        PLAINTEXT
    );

    let strict = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    let err = strict.get(SECRET_KEY).await.expect_err("plaintext refused");
    assert!(err.to_string().contains("no configured provider"), "{err}");

    // Turning encryption off: identity first still reads encrypted data, writes plaintext.
    let key2 = "/registry/core/secrets/default/other";
    let rev = strict
        .create(key2, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    let off = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{IDENTITY}{}", aesgcm("k1", 1))),
    );
    assert_eq!(off.get(key2).await.expect("get").value, PLAINTEXT);
    off.update(key2, Bytes::from_static(PLAINTEXT), rev)
        .await
        .expect("update");
    assert_eq!(f.inner.get(key2).await.expect("raw").value, PLAINTEXT);
}

#[tokio::test]
async fn watch_ends_with_an_error_on_an_undecryptable_event() {
    let f = fixture();
    let store = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("k1", 1)));
    let mut watch = store
        .watch(WatchOptions::new("/registry/core/secrets/", 0))
        .await
        .expect("watch");
    f.inner
        .create(
            SECRET_KEY,
            Bytes::from_static(b"k8s:enc:aesgcm:v1:k1:garbage"),
        )
        .await
        .expect("raw create");
    store
        .create(
            "/registry/core/secrets/default/fine",
            Bytes::from_static(PLAINTEXT),
        )
        .await
        .expect("create");
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("in time")
        .expect("an item");
    assert!(first.is_err());
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("in time");
    assert!(end.is_none(), "the stream ends after its error");
}

#[test]
fn wildcards_and_group_resources_match_as_upstream() {
    let yaml = format!(
        r#"
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets, deployments.apps]
  providers: [{{aesgcm: {{keys: [{{name: a, secret: "{a}"}}]}}}}]
- resources: ["*.batch"]
  providers: [{{secretbox: {{keys: [{{name: b, secret: "{b}"}}]}}}}]
- resources: ["*.*"]
  providers: [{{identity: {{}}}}]
"#,
        a = key(1, 16),
        b = key(2, 32)
    );
    let config = EncryptionConfig::parse(&yaml).expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("deployments.apps"), "{debug}");
    assert!(!debug.contains(&key(1, 16)), "keys never in Debug: {debug}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let f = fixture();
        let store = EncryptedStorage::new(f.inner.clone(), config);
        for (key, prefix) in [
            ("/registry/core/secrets/ns/s", &b"k8s:enc:aesgcm:v1:a:"[..]),
            ("/registry/apps/deployments/ns/d", b"k8s:enc:aesgcm:v1:a:"),
            ("/registry/batch/jobs/ns/j", b"k8s:enc:secretbox:v1:b:"),
            ("/registry/batch/cronjobs/ns/c", b"k8s:enc:secretbox:v1:b:"),
            ("/registry/apps/statefulsets/ns/s", b"{"),
            ("/registry/core/configmaps/ns/c", b"{"),
        ] {
            store
                .create(key, Bytes::from_static(b"{}"))
                .await
                .expect("create");
            let raw = f.inner.get(key).await.expect("raw");
            assert!(raw.value.starts_with(prefix), "{key}: {:?}", raw.value);
            assert_eq!(store.get(key).await.expect("get").value, &b"{}"[..]);
        }
    });
}

fn parse_err(yaml: &str) -> ConfigError {
    EncryptionConfig::parse(yaml).expect_err("invalid configuration")
}

fn with_providers(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers:\n{providers}"
    )
}

#[test]
fn garbage_configurations_are_rejected_clearly() {
    let err = parse_err(&with_providers(
        "  - aesgcm:\n      keys:\n      - name: k1\n        secret: '!!not base64!!'\n",
    ));
    assert!(matches!(err, ConfigError::InvalidKey { .. }), "{err}");
    assert!(err.to_string().contains("base64"), "{err}");
    assert!(
        err.to_string()
            .contains("resources[0].providers[0].aesgcm.keys[0].secret"),
        "{err}"
    );

    let err = parse_err(&with_providers(&format!(
        "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {}\n",
        key(1, 20)
    )));
    assert!(matches!(err, ConfigError::InvalidKey { .. }), "{err}");
    assert!(err.to_string().contains("20 bytes"), "{err}");

    let err = parse_err(&with_providers(&format!(
        "  - secretbox:\n      keys:\n      - name: k1\n        secret: {}\n",
        key(1, 16)
    )));
    assert!(err.to_string().contains("32-byte"), "{err}");

    let err = parse_err(&with_providers("  - rot13: {}\n"));
    assert!(
        matches!(&err, ConfigError::UnknownProvider { name, .. } if name == "rot13"),
        "{err}"
    );

    let err = parse_err(&with_providers(&format!(
        "  - aesgcm:\n      keys:\n      - secret: {}\n",
        key(1, 32)
    )));
    assert!(err.to_string().contains("keys[0].name: required"), "{err}");

    let err = parse_err(&with_providers(&format!(
        "  - aesgcm:\n      keys:\n      - name: k1\n        secret: {k}\n    identity: {{}}\n",
        k = key(1, 32)
    )));
    assert!(err.to_string().contains("exactly one provider"), "{err}");

    let err = parse_err(&with_providers("  - aesgcm:\n      keys: []\n"));
    assert!(err.to_string().contains("at least one key"), "{err}");

    let err = parse_err("apiVersion: v1\nkind: ConfigMap\nresources: []\n");
    assert!(err.to_string().contains("EncryptionConfiguration"), "{err}");

    let err = parse_err("resources: [[[");
    assert!(matches!(err, ConfigError::Parse(_)), "{err}");

    let masked =
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: ['*.']\n  providers: [identity: {}]\n\
         - resources: [secrets]\n  providers: [identity: {}]\n";
    let err = parse_err(masked);
    assert!(err.to_string().contains("masked by earlier rule"), "{err}");

    let star =
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: ['*']\n  providers: [identity: {}]\n";
    let err = parse_err(star);
    assert!(err.to_string().contains("'*.*'"), "{err}");

    let err = EncryptionConfig::from_file(std::path::Path::new("/nonexistent/enc.yaml"))
        .expect_err("missing file");
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
}

#[test]
fn all_aes_key_sizes_are_accepted() {
    for len in [16, 24, 32] {
        let yaml = with_providers(&format!(
            "  - aesgcm:\n      keys:\n      - name: k\n        secret: {}\n",
            key(7, len)
        ));
        EncryptionConfig::parse(&yaml).expect("valid key size");
    }
}

#[tokio::test]
async fn rewrite_stale_moves_everything_to_the_write_key() {
    let f = fixture();
    // Plaintext from before encryption, and values under the old key.
    f.inner
        .create(
            "/registry/core/secrets/ns/plain",
            Bytes::from_static(PLAINTEXT),
        )
        .await
        .expect("raw create");
    let old = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{IDENTITY}", aesgcm("old", 1))),
    );
    // More than one page of the rewrite's list (500).
    for i in 0..600 {
        old.create(
            &format!("/registry/core/secrets/ns/s{i:04}"),
            Bytes::from_static(PLAINTEXT),
        )
        .await
        .expect("create");
    }
    old.create("/registry/core/configmaps/ns/c", Bytes::from_static(b"{}"))
        .await
        .expect("create");

    let rotated = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!(
            "{}{}{IDENTITY}",
            aesgcm("new", 2),
            aesgcm("old", 1)
        )),
    );
    assert_eq!(
        rotated.rewrite_stale("/registry/").await.expect("rewrite"),
        601
    );
    assert_eq!(
        rotated.rewrite_stale("/registry/").await.expect("rewrite"),
        0,
        "nothing left to rewrite"
    );
    let raw = f
        .inner
        .list("/registry/core/secrets/", &ListOptions::default())
        .await
        .expect("raw list");
    assert_eq!(raw.items.len(), 601);
    assert!(raw
        .items
        .iter()
        .all(|kv| kv.value.starts_with(b"k8s:enc:aesgcm:v1:new:")));
    // The old key can go now.
    let new_only = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("new", 2)));
    let page = new_only
        .list("/registry/core/secrets/", &ListOptions::default())
        .await
        .expect("list");
    assert!(page.items.iter().all(|kv| kv.value == PLAINTEXT));
    // Unconfigured resources are left alone.
    assert_eq!(
        f.inner
            .get("/registry/core/configmaps/ns/c")
            .await
            .expect("raw")
            .value,
        &b"{}"[..]
    );

    // Turning encryption off: identity first rewrites ciphertext as plaintext.
    let off = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{IDENTITY}{}", aesgcm("new", 2))),
    );
    assert_eq!(off.rewrite_stale("/registry/").await.expect("rewrite"), 601);
    assert_eq!(
        f.inner
            .get("/registry/core/secrets/ns/plain")
            .await
            .expect("raw")
            .value,
        PLAINTEXT
    );
}

/// The embedded store behind an encrypting wrapper that covers every resource (`*.*`, with
/// identity as a second provider): the conformance suite below proves the wrapper keeps the
/// storage contract (revisions, conflicts, paging, watches) while every value is encrypted.
async fn encrypted_fixture() -> storage::testing::Fixture {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: ['*.*']\n  providers:\n{}{IDENTITY}",
        aesgcm("conformance", 5)
    );
    let config = EncryptionConfig::parse(&yaml).expect("valid configuration");
    let inner = storage::testing::embedded_fixture().await;
    storage::testing::Fixture {
        store: Arc::new(EncryptedStorage::new(inner.store, config)),
        guard: inner.guard,
    }
}

mod conformance {
    storage::conformance_tests!(super::encrypted_fixture);
}

#[tokio::test]
async fn values_under_an_older_key_read_as_stale_and_an_unchanged_update_rewrites_them() {
    let f = fixture();
    let old = EncryptedStorage::new(f.inner.clone(), config(&aesgcm("old", 1)));
    old.create(SECRET_KEY, Bytes::from_static(PLAINTEXT))
        .await
        .expect("create");
    assert!(!old.get(SECRET_KEY).await.expect("get").stale);
    let rotated = EncryptedStorage::new(
        f.inner.clone(),
        config(&format!("{}{}", aesgcm("new", 2), aesgcm("old", 1))),
    );
    assert!(rotated.get(SECRET_KEY).await.expect("get").stale);
    // The read-modify-write helper writes a stale value even though the content is unchanged
    // (upstream's GuaranteedUpdate), which is what completes a rotation.
    storage::guaranteed_update(&rotated, SECRET_KEY, |current| {
        Ok::<_, std::convert::Infallible>(current.map(|kv| kv.value.clone()).unwrap_or_default())
    })
    .await
    .expect("rewrite");
    let raw = f.inner.get(SECRET_KEY).await.expect("raw");
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:new:"));
    assert!(!rotated.get(SECRET_KEY).await.expect("get").stale);
}
