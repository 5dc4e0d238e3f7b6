//! Bodies captured from the real kubectl 1.32 (see `fixtures/README.md`) decode to the JSON
//! kubectl itself prints for the same object.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode_fixture(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.pb"));
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&body[..4], b"k8s\0", "{name} is a protobuf envelope");
    api_protobuf::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Go prints absent optional values as `null` (`"creationTimestamp": null`); k8s-openapi
/// omits them.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[test]
fn every_captured_body_decodes_to_kubectls_own_json() {
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures())
        .expect("fixtures directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let decoded = decode_fixture(&name);
        let dry_run = fixtures().join(format!("{name}.dryrun.json"));
        let expected = fixtures().join(format!("{name}.expected.json"));
        let want = if dry_run.exists() {
            without_nulls(read_json(&dry_run))
        } else if expected.exists() {
            read_json(&expected)
        } else {
            panic!("{name}.pb has neither {name}.dryrun.json nor {name}.expected.json");
        };
        assert_eq!(
            decoded,
            want,
            "{name}:\n decoded {}\n wanted  {}",
            serde_json::to_string(&decoded).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default()
        );
        // Our encoder produces a body that decodes to the same object.
        let again = api_protobuf::decode(&api_protobuf::encode(&decoded).expect("encodes"))
            .expect("decodes");
        assert_eq!(again, decoded, "{name} re-encoded");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} fixtures");
}

#[test]
fn configmap_has_binary_data_and_no_empty_metadata_strings() {
    let cm = decode_fixture("configmap");
    assert_eq!(cm["data"]["mode"], "prod");
    // 00 01 02 fe ff, as Go's []byte JSON prints it.
    assert_eq!(cm["binaryData"]["blob"], "AAEC/v8=");
    // kubectl always sends namespace "", generateName "", uid "", generation 0 ...; Go's
    // omitempty drops them and so must we, or the server would see an empty namespace.
    let meta = cm["metadata"].as_object().expect("metadata");
    assert_eq!(meta.keys().collect::<Vec<_>>(), ["name"]);
}

#[test]
fn secret_data_is_base64() {
    let secret = decode_fixture("secret");
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    assert_eq!(secret["data"]["pass"], "czNjcjN0IQ==");
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());
}

#[test]
fn auth_reviews_decode() {
    let ssar = decode_fixture("ssar_subresource");
    assert_eq!(ssar["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(ssar["kind"], "SelfSubjectAccessReview");
    let attrs = &ssar["spec"]["resourceAttributes"];
    assert_eq!(attrs["verb"], "create");
    assert_eq!(attrs["group"], "apps");
    assert_eq!(attrs["resource"], "deployments");
    assert_eq!(attrs["subresource"], "scale");
    assert_eq!(attrs["namespace"], "kube-system");

    let ssrr = decode_fixture("ssrr");
    assert_eq!(ssrr["spec"]["namespace"], "default");

    let ssr = decode_fixture("ssr");
    assert_eq!(ssr["kind"], "SelfSubjectReview");

    let token = decode_fixture("token");
    assert_eq!(
        token["spec"]["audiences"],
        serde_json::json!(["api", "vault"])
    );
    assert_eq!(token["spec"]["expirationSeconds"], 600);
}

#[test]
fn pointer_zero_values_from_kubectl_survive() {
    // `--replicas=0` and `--max-unavailable=0` are requests, not absent values.
    assert_eq!(decode_fixture("deployment_zero")["spec"]["replicas"], 0);
    assert_eq!(decode_fixture("pdb_zero")["spec"]["maxUnavailable"], 0);
    let token = decode_fixture("token_bound");
    assert_eq!(token["spec"]["boundObjectRef"]["uid"], "123e4567");
    assert_eq!(token["spec"]["expirationSeconds"], 3600);
}
