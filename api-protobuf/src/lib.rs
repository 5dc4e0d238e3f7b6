//! Decoding of Kubernetes protobuf request bodies (the k8s envelope) into JSON objects.
//!
//! kubectl 1.32 sends `Content-Type: application/vnd.kubernetes.protobuf` bodies from every
//! command built on the typed clientset (`create configmap|secret|deployment|...`,
//! `create token`, `auth can-i`, `auth whoami`, `autoscale`) and never retries with JSON, while
//! Coxswain stores and serves JSON. [`decode`] turns such a body into the JSON the same object
//! would have had if the client had sent JSON; [`encode`] does the reverse, for tests and for
//! clients that insist on protobuf responses.
//!
//! The schema is the one kubectl itself was built with: the descriptors go-to-protobuf
//! registered in the kubectl 1.32 binary, embedded as `data/kubernetes-1.32.fds` (see
//! `tools/extract_descriptors.py`). Decoding is generic over that schema, so every Kubernetes
//! 1.32 kind works, and the result is finally passed through the kind's k8s-openapi type so
//! that it is exactly what k8s-openapi would serialize.

#![deny(missing_docs)]

mod decode;
mod encode;
mod error;
mod kinds;
mod schema;
mod wellknown;
mod wire;

use serde_json::Value;

pub use error::{DecodeError, EncodeError, FieldPath};
pub use wire::WireError;

use crate::schema::Schema;
use crate::wire::{RawValue, Reader, Writer};

/// The four bytes every Kubernetes protobuf body starts with (`k8s\0`), which distinguish it
/// from bare protobuf.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies, without parameters.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The `runtime.Unknown` envelope, as read from the wire.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl<'a> Envelope<'a> {
    /// `runtime.Unknown`: typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2,
    /// contentEncoding = 3, contentType = 4.
    fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut r = Reader::new(bytes);
        while let Some((number, value)) = r.field()? {
            match (number, value) {
                (1, RawValue::Len(type_meta)) => {
                    let mut t = Reader::new(type_meta);
                    while let Some((number, value)) = t.field()? {
                        match (number, value) {
                            (1, RawValue::Len(v)) => envelope.api_version = utf8(v),
                            (2, RawValue::Len(k)) => envelope.kind = utf8(k),
                            _ => {}
                        }
                    }
                }
                (2, RawValue::Len(raw)) => envelope.raw = raw,
                (3, RawValue::Len(e)) => envelope.content_encoding = utf8(e),
                (4, RawValue::Len(c)) => envelope.content_type = utf8(c),
                _ => {}
            }
        }
        Ok(envelope)
    }
}

/// Decodes a body sent as `application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\0`
/// followed by a `runtime.Unknown` message (typeMeta{apiVersion, kind}, raw, contentEncoding,
/// contentType), whose `raw` is the object's own protobuf message. Returns the object as JSON
/// (with `apiVersion` and `kind` set), exactly as the k8s-openapi type of that kind would
/// serialize it. Should the object not fit that type (kubectl's TokenRequest carries an empty
/// `status`, and k8s-openapi requires `status.expirationTimestamp`), the same JSON comes back
/// without the defaults k8s-openapi would print for absent required fields.
///
/// Zero values of plain (non-pointer) Go fields are left out, as Go's `omitempty` leaves them
/// out of the JSON kube-apiserver stores; for example `metadata.namespace` is absent rather
/// than `""` when kubectl did not set it. Quantities keep the spelling the client sent.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    decode_nested(body, 0)
}

/// [`decode`] for an envelope found `depth` messages deep (inside a RawExtension).
fn decode_nested(body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(DecodeError::BadMagic)?;
    let envelope = Envelope::parse(rest).map_err(DecodeError::Envelope)?;
    if !envelope.content_encoding.is_empty() {
        return Err(DecodeError::ContentEncoding(envelope.content_encoding));
    }
    if envelope.api_version.is_empty() || envelope.kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    }
    let schema = Schema::get()?;
    let unknown_kind = || DecodeError::UnknownKind {
        api_version: envelope.api_version.clone(),
        kind: envelope.kind.clone(),
    };
    let target =
        kinds::resolve(schema, &envelope.api_version, &envelope.kind).ok_or_else(unknown_kind)?;
    let mut object = match media_type(&envelope.content_type) {
        "" | CONTENT_TYPE => {
            decode::Decoder::new(schema, depth).message(target.message, envelope.raw)?
        }
        // runtime.Unknown may also wrap JSON; Go's serializer never does this for requests,
        // but the envelope allows it and the answer is obvious.
        "application/json" => match serde_json::from_slice(envelope.raw) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return Err(DecodeError::InvalidValue {
                    path: FieldPath::default(),
                    reason: format!(
                        "embedded JSON is {}, not an object",
                        error::json_type(&other)
                    ),
                })
            }
            Err(e) => {
                return Err(DecodeError::InvalidValue {
                    path: FieldPath::default(),
                    reason: format!("embedded JSON does not parse: {e}"),
                })
            }
        },
        _ => return Err(DecodeError::ContentType(envelope.content_type)),
    };
    object.insert(
        "apiVersion".to_string(),
        Value::String(envelope.api_version.clone()),
    );
    object.insert("kind".to_string(), Value::String(envelope.kind.clone()));
    let object = Value::Object(object);
    // The typed round trip only fills in defaults k8s-openapi prints for required fields. A
    // few kinds arrive without values k8s-openapi insists on (kubectl's TokenRequest has an
    // empty status, and TokenRequestStatus requires expirationTimestamp); the generic form
    // is still the faithful rendering of the body, so it is returned as is.
    Ok(match target.normalize {
        Some(normalize) => normalize(object.clone()).unwrap_or(object),
        None => object,
    })
}

/// The media type without parameters. Compared case-sensitively: the envelope's
/// `contentType` is written by serializers, not typed by people.
fn media_type(content_type: &str) -> &str {
    content_type
        .split_once(';')
        .map_or(content_type, |(t, _)| t)
        .trim()
}

/// Encodes a JSON object as a protobuf envelope (for tests and for responses if a client ever
/// requires protobuf). The object must carry `apiVersion` and `kind`; every other key must be
/// a field of that kind, since protobuf cannot carry unknown fields.
pub fn encode(object: &Value) -> Result<Vec<u8>, EncodeError> {
    let Value::Object(map) = object else {
        return Err(EncodeError::NotAnObject(error::json_type(object)));
    };
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        return Err(EncodeError::MissingTypeMeta);
    };
    let schema = Schema::get()?;
    let target =
        kinds::resolve(schema, api_version, kind).ok_or_else(|| EncodeError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    // The envelope carries apiVersion and kind, also for kinds without metadata
    // (DeleteOptions), whose messages have no such fields.
    let mut body = map.clone();
    body.remove("apiVersion");
    body.remove("kind");
    let raw = encode::Encoder::new(schema).message(target.message, &body)?;
    Ok(envelope(api_version, kind, &raw))
}

/// Wraps a message in the envelope, writing every field as Go's serializer does (empty
/// `contentEncoding` and `contentType` included).
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Writer::new();
    type_meta.bytes(1, api_version.as_bytes());
    type_meta.bytes(2, kind.as_bytes());
    let mut unknown = Writer::new();
    unknown.bytes(1, &type_meta.into_bytes());
    unknown.bytes(2, raw);
    unknown.bytes(3, b"");
    unknown.bytes(4, b"");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&unknown.into_bytes());
    out
}
