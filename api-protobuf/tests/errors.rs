//! Bodies that are not valid Kubernetes protobuf, and objects that cannot be encoded, fail
//! with errors that say what and where.

use api_protobuf::{decode, encode, DecodeError, EncodeError, WireError};
use serde_json::json;

/// A length-delimited field; the tests only build short payloads.
fn len_field(number: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    let mut out = vec![(number << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

fn envelope(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    encoding: &str,
    content_type: &str,
) -> Vec<u8> {
    let mut type_meta = len_field(1, api_version.as_bytes());
    type_meta.extend(len_field(2, kind.as_bytes()));
    let mut body = b"k8s\0".to_vec();
    body.extend(len_field(1, &type_meta));
    body.extend(len_field(2, raw));
    body.extend(len_field(3, encoding.as_bytes()));
    body.extend(len_field(4, content_type.as_bytes()));
    body
}

fn configmap_body() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/configmap.pb"
    ))
    .expect("fixture")
}

#[test]
fn json_body_is_rejected_for_its_missing_magic() {
    let err = decode(br#"{"apiVersion":"v1","kind":"ConfigMap"}"#).expect_err("not protobuf");
    assert!(matches!(err, DecodeError::BadMagic), "{err:?}");
    assert!(err.to_string().contains("k8s"), "{err}");
    assert!(matches!(decode(b""), Err(DecodeError::BadMagic)));
    assert!(matches!(decode(b"k8s"), Err(DecodeError::BadMagic)));
}

#[test]
fn unknown_kind_names_api_version_and_kind() {
    let err = decode(&envelope("example.com/v1", "Widget", &[], "", "")).expect_err("unknown");
    assert!(matches!(err, DecodeError::UnknownKind { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("example.com/v1") && message.contains("Widget"),
        "{message}"
    );
    // A known group with a kind it does not have, and a message that is not an object.
    for (api_version, kind) in [("apps/v1", "Widget"), ("v1", "PodSpec")] {
        let err = decode(&envelope(api_version, kind, &[], "", "")).expect_err(kind);
        assert!(err.to_string().contains(kind), "{err}");
    }
}

#[test]
fn missing_type_meta_is_an_error() {
    let err = decode(&envelope("", "ConfigMap", &[], "", "")).expect_err("no apiVersion");
    assert!(
        matches!(err, DecodeError::MissingTypeMeta { .. }),
        "{err:?}"
    );
    let err = decode(b"k8s\0").expect_err("empty envelope");
    assert!(
        matches!(err, DecodeError::MissingTypeMeta { .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_bodies_are_errors_and_never_panic() {
    let body = configmap_body();
    // The envelope ends with contentEncoding and contentType (1a 00 22 00); cutting before
    // them lands inside `raw`.
    for cut in [1, 5, body.len() / 2] {
        let err = decode(&body[..body.len() - cut]).expect_err("truncated");
        assert!(
            matches!(err, DecodeError::Envelope(WireError::Truncated)),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    for len in 0..body.len() {
        let _ = decode(&body[..len]);
    }
}

#[test]
fn malformed_object_bytes_name_the_field() {
    // ConfigMap.data (field 2) holding a map entry whose value claims 5 bytes but has 1.
    let entry = [0x0a, 0x01, b'k', 0x12, 0x05, b'v'];
    let raw = len_field(2, &entry);
    let err = decode(&envelope("v1", "ConfigMap", &raw, "", "")).expect_err("malformed");
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("data"), "{err}");

    // ObjectMeta.name (string) sent as a varint.
    let raw = len_field(1, &[0x08, 0x01]);
    let err = decode(&envelope("v1", "ConfigMap", &raw, "", "")).expect_err("wire type");
    assert!(matches!(err, DecodeError::WireType { .. }), "{err:?}");
    assert!(err.to_string().contains("metadata.name"), "{err}");
}

#[test]
fn unknown_fields_are_skipped_like_go_does() {
    // ObjectMeta.name = "x", then field 99 (unknown) as a varint.
    let mut meta = len_field(1, b"x");
    meta.extend([0x98, 0x06, 0x01]);
    let raw = len_field(1, &meta);
    let decoded = decode(&envelope("v1", "ConfigMap", &raw, "", "")).expect("decodes");
    assert_eq!(
        decoded,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    );
}

#[test]
fn compressed_and_foreign_payloads_are_refused() {
    let err = decode(&envelope("v1", "ConfigMap", &[], "gzip", "")).expect_err("gzip");
    assert!(
        matches!(err, DecodeError::ContentEncoding(ref e) if e == "gzip"),
        "{err:?}"
    );
    let err = decode(&envelope("v1", "ConfigMap", &[], "", "application/yaml")).expect_err("yaml");
    assert!(matches!(err, DecodeError::ContentType(_)), "{err:?}");
}

#[test]
fn json_inside_the_envelope_is_accepted() {
    let raw = br#"{"metadata":{"name":"x"},"data":{"a":"b"}}"#;
    let decoded = decode(&envelope("v1", "ConfigMap", raw, "", "application/json")).expect("json");
    assert_eq!(
        decoded,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
    );
}

#[test]
fn encode_errors_name_the_field() {
    assert!(matches!(
        encode(&json!([1])),
        Err(EncodeError::NotAnObject("array"))
    ));
    assert!(matches!(
        encode(&json!({"kind": "ConfigMap"})),
        Err(EncodeError::MissingTypeMeta)
    ));
    assert!(matches!(
        encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})),
        Err(EncodeError::UnknownKind { .. })
    ));

    let err = encode(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [{"name": "a", "bogus": 1}]}}}
    }))
    .expect_err("unknown field");
    assert_eq!(
        err.to_string(),
        "unknown field spec.template.spec.containers[0].bogus"
    );

    let err =
        encode(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}}))
            .expect_err("string replicas");
    assert!(err.to_string().starts_with("field spec.replicas:"), "{err}");

    let err = encode(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 4_294_967_296_i64}}))
        .expect_err("out of range");
    assert!(err.to_string().contains("spec.replicas"), "{err}");

    let err = encode(&json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "not base64!"}}))
        .expect_err("bad base64");
    assert!(err.to_string().contains("data[k]"), "{err}");

    let err = encode(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"creationTimestamp": "yesterday"}}),
    )
    .expect_err("bad time");
    assert!(
        err.to_string().contains("metadata.creationTimestamp"),
        "{err}"
    );
}

#[test]
fn decoded_fixture_matches_a_fresh_encoding_byte_for_byte_in_meaning() {
    // kubectl writes plain Go fields even when empty; our encoder leaves them out. Both must
    // decode to the same object.
    let kubectl = configmap_body();
    let ours = encode(&decode(&kubectl).expect("decodes")).expect("encodes");
    assert!(
        ours.len() < kubectl.len(),
        "{} vs {}",
        ours.len(),
        kubectl.len()
    );
    assert_eq!(
        decode(&ours).expect("decodes"),
        decode(&kubectl).expect("decodes")
    );
}
