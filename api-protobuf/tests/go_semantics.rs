//! Hand-built bodies pin the rules that make decoded JSON match what kube-apiserver (Go)
//! would store: zero values of plain fields vanish, zero values of pointer fields stay.

use api_protobuf::{decode, encode, DecodeError};
use serde_json::{json, Value};

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn varint_field(number: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3, &mut out);
    varint(value, &mut out);
    out
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = len_field(1, api_version.as_bytes());
    type_meta.extend(len_field(2, kind.as_bytes()));
    let mut body = b"k8s\0".to_vec();
    body.extend(len_field(1, &type_meta));
    body.extend(len_field(2, raw));
    body
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn plain_int_or_string_zero_is_unset_but_pointer_zero_is_kept() {
    // ServicePort{port: 80, targetPort: IntOrString{type: Int, intVal: 0}}: Go's plain
    // targetPort field is always on the wire; zero means "default to port".
    let zero_int_or_string = concat(&[varint_field(1, 0), varint_field(2, 0), len_field(3, b"")]);
    let port = concat(&[varint_field(3, 80), len_field(4, &zero_int_or_string)]);
    let spec = len_field(1, &port);
    let service = decode(&envelope("v1", "Service", &len_field(2, &spec))).expect("decodes");
    assert_eq!(service["spec"]["ports"], json!([{"port": 80}]));

    // RollingUpdateDeployment.maxUnavailable is *IntOrString: 0 means "never go below".
    let rolling = len_field(1, &zero_int_or_string);
    let strategy = len_field(2, &rolling);
    let spec = len_field(4, &strategy);
    let deployment =
        decode(&envelope("apps/v1", "Deployment", &len_field(2, &spec))).expect("decodes");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
}

#[test]
fn zero_and_empty_times_are_absent() {
    // creationTimestamp (plain Time) as Go writes an unset one: an empty message.
    // deletionTimestamp (*Time) holding Go's zero time (year 1).
    let go_zero = varint_field(1, (-62_135_596_800_i64) as u64);
    let meta = concat(&[
        len_field(1, b"x"),
        len_field(8, b""),
        len_field(9, &go_zero),
    ]);
    let cm = decode(&envelope("v1", "ConfigMap", &len_field(1, &meta))).expect("decodes");
    assert_eq!(cm["metadata"], json!({"name": "x"}));
    // Go ignores nanos of a Time (seconds precision in JSON).
    let time = concat(&[varint_field(1, 1_764_390_000), varint_field(2, 999)]);
    let meta = concat(&[len_field(1, b"x"), len_field(8, &time)]);
    let cm = decode(&envelope("v1", "ConfigMap", &len_field(1, &meta))).expect("decodes");
    assert_eq!(cm["metadata"]["creationTimestamp"], "2025-11-29T04:20:00Z");
}

#[test]
fn packed_and_negative_repeated_integers() {
    // Job.spec.podFailurePolicy.rules[0].onExitCodes.values as packed [1, -2] (proto3-style
    // writers pack; Go's proto2 code writes them unpacked, which the round trip covers).
    let mut packed = Vec::new();
    varint(1, &mut packed);
    varint((-2_i64) as u64, &mut packed);
    let on_exit = concat(&[len_field(2, b"In"), len_field(3, &packed)]);
    let rule = concat(&[len_field(1, b"FailJob"), len_field(2, &on_exit)]);
    let policy = len_field(1, &rule);
    let spec = len_field(11, &policy);
    let job = decode(&envelope("batch/v1", "Job", &len_field(2, &spec))).expect("decodes");
    assert_eq!(
        job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"],
        json!([1, -2])
    );

    let object = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": []}}, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [-1, 0, 2147483647, -2147483648]}}
        ]}}
    });
    let decoded = decode(&encode(&object).expect("encodes")).expect("decodes");
    assert_eq!(
        decoded["spec"]["podFailurePolicy"],
        object["spec"]["podFailurePolicy"]
    );
}

#[test]
fn nested_envelopes_in_raw_extensions_decode_up_to_a_limit() {
    // ControllerRevision.data (field 2) is a RawExtension; its raw may itself be an envelope.
    let inner_raw = concat(&[len_field(1, &len_field(1, b"inner")), varint_field(3, 7)]);
    let inner = envelope("apps/v1", "ControllerRevision", &inner_raw);
    let outer_raw = concat(&[
        len_field(1, &len_field(1, b"outer")),
        len_field(2, &len_field(1, &inner)),
    ]);
    let outer = decode(&envelope("apps/v1", "ControllerRevision", &outer_raw)).expect("decodes");
    assert_eq!(
        outer["data"],
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "inner"}, "revision": 7})
    );

    let mut body = envelope("apps/v1", "ControllerRevision", &[]);
    for _ in 0..200 {
        body = envelope(
            "apps/v1",
            "ControllerRevision",
            &len_field(2, &len_field(1, &body)),
        );
    }
    let err = decode(&body).expect_err("too deep");
    assert!(matches!(err, DecodeError::InvalidValue { .. }), "{err:?}");
    assert!(err.to_string().contains("deeper than"), "{err}");
}

#[test]
fn raw_extension_json_and_fields_v1_stay_json() {
    let raw_json = br#"{"spec":{"replicas":2}}"#;
    let body = envelope(
        "apps/v1",
        "ControllerRevision",
        &concat(&[len_field(2, &len_field(1, raw_json)), varint_field(3, 1)]),
    );
    let decoded = decode(&body).expect("decodes");
    assert_eq!(decoded["data"], json!({"spec": {"replicas": 2}}));

    let bad = envelope(
        "apps/v1",
        "ControllerRevision",
        &len_field(2, &len_field(1, b"{nope")),
    );
    let err = decode(&bad).expect_err("not json");
    assert!(err.to_string().contains("data"), "{err}");
}

#[test]
fn lists_and_kinds_without_k8s_openapi_types_decode_generically() {
    let item = len_field(1, &len_field(1, b"a"));
    let list = concat(&[len_field(1, b""), len_field(2, &item), len_field(2, &item)]);
    let decoded = decode(&envelope("v1", "ConfigMapList", &list)).expect("decodes");
    assert_eq!(
        decoded,
        json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {},
               "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "a"}}]})
    );
    // apps/v1beta1 is not served by 1.32 and k8s-openapi has no type, but the schema has it.
    let decoded: Value = decode(&envelope(
        "apps/v1beta1",
        "Deployment",
        &len_field(1, &len_field(1, b"d")),
    ))
    .expect("decodes");
    assert_eq!(decoded["metadata"]["name"], "d");
}
