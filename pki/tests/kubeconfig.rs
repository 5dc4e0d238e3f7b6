//! kubeconfig rendering: parses as YAML with the shape kubectl expects.

use std::time::Duration;

use base64::Engine as _;
use pki::{Ca, Credentials, PkiOptions};
use serde_yaml::Value;

fn decode(v: &Value) -> String {
    let b = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    String::from_utf8(b).unwrap()
}

fn only<'a>(doc: &'a Value, list: &str) -> &'a Value {
    let items = doc[list].as_sequence().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    &items[0]
}

#[test]
fn client_cert_kubeconfig_round_trips() {
    let ca = Ca::generate("test-ca").unwrap();
    let ck = ca
        .issue_client(
            "system:node:worker-1",
            &["system:nodes".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let text = pki::kubeconfig(
        "https://127.0.0.1:6443",
        ca.cert_pem(),
        "system:node:worker-1",
        Credentials::ClientCert(&ck),
    );
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "coxswain");

    let cluster = only(&doc, "clusters");
    assert_eq!(cluster["name"], "coxswain");
    assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
    assert_eq!(
        decode(&cluster["cluster"]["certificate-authority-data"]),
        ca.cert_pem()
    );

    let user = only(&doc, "users");
    assert_eq!(user["name"], "system:node:worker-1");
    assert_eq!(
        decode(&user["user"]["client-certificate-data"]),
        ck.cert_pem
    );
    assert_eq!(decode(&user["user"]["client-key-data"]), ck.key_pem);
    assert!(user["user"].get("token").is_none());

    let context = only(&doc, "contexts");
    assert_eq!(context["name"], "coxswain");
    assert_eq!(context["context"]["cluster"], "coxswain");
    assert_eq!(context["context"]["user"], "system:node:worker-1");
    assert_eq!(context["context"]["namespace"], "default");
}

#[test]
fn token_kubeconfig_quotes_awkward_values() {
    let ca = Ca::generate("test-ca").unwrap();
    let token = "abc.def: \"#x'";
    let text = pki::kubeconfig(
        "https://[::1]:6443",
        ca.cert_pem(),
        "weird: user #1",
        Credentials::Token(token),
    );
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let user = only(&doc, "users");
    assert_eq!(user["name"], "weird: user #1");
    assert_eq!(user["user"]["token"], token);
    assert!(user["user"].get("client-key-data").is_none());
    assert_eq!(
        only(&doc, "clusters")["cluster"]["server"],
        "https://[::1]:6443"
    );
}

#[test]
fn write_kubeconfig_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki::ensure(&tmp.path().join("pki"), &PkiOptions::default()).unwrap();
    let path = tmp.path().join("kube/admin.conf");
    pki.write_kubeconfig(
        &path,
        "https://127.0.0.1:6443",
        &pki.admin,
        "kubernetes-admin",
    )
    .unwrap();
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let user = only(&doc, "users");
    assert_eq!(user["name"], "kubernetes-admin");
    assert_eq!(decode(&user["user"]["client-key-data"]), pki.admin.key_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Overwriting works (atomic replace) and keeps the mode.
    pki.write_kubeconfig(
        &path,
        "https://10.0.0.1:6443",
        &pki.admin,
        "kubernetes-admin",
    )
    .unwrap();
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        only(&doc, "clusters")["cluster"]["server"],
        "https://10.0.0.1:6443"
    );
}
