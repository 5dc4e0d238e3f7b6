//! Errors of [`decode`](crate::decode) and [`encode`](crate::encode).
//!
//! Every error that concerns part of an object names the field path (e.g.
//! `spec.template.spec.containers[0].ports[1].containerPort`), because the API server turns
//! these into `400 BadRequest` messages a person has to act on.

use std::fmt;

use thiserror::Error;

use crate::schema::SchemaError;
use crate::wire::WireError;

/// Where in an object a problem was found, in the dotted form kube-apiserver uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(String),
    Index(usize),
    Key(String),
}

impl FieldPath {
    pub(crate) fn push_field(&mut self, name: &str) {
        self.0.push(Segment::Field(name.to_string()));
    }

    pub(crate) fn push_index(&mut self, index: usize) {
        self.0.push(Segment::Index(index));
    }

    pub(crate) fn push_key(&mut self, key: &str) {
        self.0.push(Segment::Key(key.to_string()));
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<object>");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => write!(f, "[{key}]")?,
            }
        }
        Ok(())
    }
}

/// Why a protobuf request body could not be turned into a JSON object.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The body does not start with `k8s\0`, so it is not the Kubernetes protobuf envelope
    /// (a client that sends bare protobuf or mislabelled JSON ends up here).
    #[error("body is not a Kubernetes protobuf envelope: it does not start with the magic bytes \"k8s\\x00\"")]
    BadMagic,
    /// The `runtime.Unknown` envelope itself is malformed.
    #[error("malformed protobuf envelope: {0}")]
    Envelope(WireError),
    /// The envelope names no `apiVersion` or no `kind`, so the message type is unknown.
    #[error("protobuf envelope carries no apiVersion/kind (got apiVersion {api_version:?}, kind {kind:?})")]
    MissingTypeMeta {
        /// The `apiVersion` found, possibly empty.
        api_version: String,
        /// The `kind` found, possibly empty.
        kind: String,
    },
    /// No protobuf message is known for this kind.
    #[error("no protobuf schema for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind {
        /// The `apiVersion` of the envelope.
        api_version: String,
        /// The `kind` of the envelope.
        kind: String,
    },
    /// The envelope's `contentEncoding` is set (e.g. gzip); no client does this for requests.
    #[error("unsupported protobuf envelope contentEncoding {0:?}")]
    ContentEncoding(String),
    /// The envelope's `contentType` says the payload is neither protobuf nor JSON.
    #[error("unsupported protobuf envelope contentType {0:?}")]
    ContentType(String),
    /// The object's bytes are not well-formed protobuf.
    #[error("malformed protobuf in {path}: {source}")]
    Malformed {
        /// The field being read.
        path: FieldPath,
        /// What was wrong with the bytes.
        source: WireError,
    },
    /// A field arrived with a wire type its declared type cannot have.
    #[error("field {path} has wire type {actual} but its type needs {expected}")]
    WireType {
        /// The field.
        path: FieldPath,
        /// The wire type the schema requires.
        expected: &'static str,
        /// The wire type found.
        actual: &'static str,
    },
    /// A value is well-formed protobuf but has no JSON form (e.g. a time out of range, a
    /// RawExtension that is not JSON).
    #[error("field {path}: {reason}")]
    InvalidValue {
        /// The field.
        path: FieldPath,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded schema could not be loaded (a build defect, not a client error).
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Why a JSON object could not be encoded as a protobuf envelope.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The value is not a JSON object.
    #[error("only JSON objects can be encoded, got {0}")]
    NotAnObject(&'static str),
    /// The object has no string `apiVersion` or `kind`, so the message type is unknown.
    #[error("object has no apiVersion/kind")]
    MissingTypeMeta,
    /// No protobuf message is known for this kind.
    #[error("no protobuf schema for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The object has a field its kind does not declare; protobuf has nowhere to put it.
    #[error("unknown field {path}")]
    UnknownField {
        /// The field.
        path: FieldPath,
    },
    /// A value has the wrong JSON type or cannot be represented (bad base64, bad time,
    /// integer out of range).
    #[error("field {path}: {reason}")]
    InvalidValue {
        /// The field.
        path: FieldPath,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded schema could not be loaded (a build defect, not a caller error).
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// A short name for a JSON value's type, for error messages.
pub(crate) fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_apiserver_field_paths() {
        let mut p = FieldPath::default();
        assert_eq!(p.to_string(), "<object>");
        p.push_field("spec");
        p.push_field("containers");
        p.push_index(0);
        p.push_field("env");
        assert_eq!(p.to_string(), "spec.containers[0].env");
        p.pop();
        p.pop();
        p.pop();
        p.push_field("data");
        p.push_key("a.b");
        assert_eq!(p.to_string(), "spec.data[a.b]");
    }
}
