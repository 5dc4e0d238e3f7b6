//! The Kubernetes 1.32 protobuf schema, loaded from the descriptors kubectl itself carries.
//!
//! `data/kubernetes-1.32.fds` is a `google.protobuf.FileDescriptorSet` extracted from the
//! kubectl 1.32 binary by `tools/extract_descriptors.py`. It is the exact schema kubectl encodes
//! with, and unlike the published `.proto` files it still carries the gogoproto option
//! `nullable=false`, which marks Go fields that are not pointers. That bit decides whether a
//! zero value on the wire means "set to zero" (pointer) or "not set" (plain field, which Go
//! always encodes), so the JSON we produce drops exactly what Go's `omitempty` would.
//!
//! The descriptor is parsed once, on first use, with the same hand-written wire reader that
//! decodes request bodies; no protoc, build script or generated code is involved.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::wire::{RawValue, Reader, WireError};

/// The embedded descriptor set; see the module documentation for where it comes from.
static DESCRIPTORS: &[u8] = include_bytes!("../data/kubernetes-1.32.fds");

/// The package of `meta/v1` (ObjectMeta, Time, DeleteOptions, ...).
pub const META_PACKAGE: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// gogoproto's `nullable` field option (extension 65001 of `FieldOptions`).
const GOGO_NULLABLE: u32 = 65001;

/// Fields whose protobuf name differs from their JSON name, as `(message, field, json)`.
/// go-to-protobuf named these after the Go field instead of its JSON tag. Matching the simple
/// message name covers every version of the group. `tools/check_json_names.py` lists them.
const RENAMED_FIELDS: &[(&str, &str, &str)] = &[
    ("MutatingWebhookConfiguration", "Webhooks", "webhooks"),
    ("ValidatingWebhookConfiguration", "Webhooks", "webhooks"),
    ("Validation", "Expression", "expression"),
    ("Variable", "Expression", "expression"),
    ("Variable", "Name", "name"),
    ("BoundObjectReference", "uID", "uid"),
    ("IngressClassParametersReference", "aPIGroup", "apiGroup"),
];

/// Go structs embedded with `json:",inline"`: protobuf nests them as one field, JSON spreads
/// their fields into the parent. Listed as `(message, field)`; `tools/check_json_names.py`
/// finds them by comparing with k8s-openapi.
const INLINE_FIELDS: &[(&str, &str)] = &[
    ("NamedRuleWithOperations", "ruleWithOperations"),
    ("RuleWithOperations", "rule"),
    ("ConfigMapEnvSource", "localObjectReference"),
    ("ConfigMapKeySelector", "localObjectReference"),
    ("ConfigMapProjection", "localObjectReference"),
    ("ConfigMapVolumeSource", "localObjectReference"),
    ("SecretEnvSource", "localObjectReference"),
    ("SecretKeySelector", "localObjectReference"),
    ("SecretProjection", "localObjectReference"),
    ("EphemeralContainer", "ephemeralContainerCommon"),
    ("PersistentVolumeSpec", "persistentVolumeSource"),
    ("Probe", "handler"),
    ("Volume", "volumeSource"),
    ("IngressRule", "ingressRuleValue"),
    ("DeviceAllocationConfiguration", "deviceConfiguration"),
    ("DeviceClaimConfiguration", "deviceConfiguration"),
    ("DeviceClassConfiguration", "deviceConfiguration"),
];

/// The descriptor could not be turned into a schema. Only a corrupt or foreign descriptor
/// file causes this; the embedded one is checked by the tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedded protobuf schema is unusable: {0}")]
pub struct SchemaError(String);

impl From<WireError> for SchemaError {
    fn from(e: WireError) -> Self {
        SchemaError(e.to_string())
    }
}

/// A scalar or message type, as a field declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `double`: JSON number.
    Double,
    /// `float`: JSON number.
    Float,
    /// `int64`: JSON number (Kubernetes JSON does not quote 64-bit integers).
    Int64,
    /// `uint64`: JSON number.
    Uint64,
    /// `int32` and proto enums: JSON number.
    Int32,
    /// `fixed64`: JSON number.
    Fixed64,
    /// `fixed32`: JSON number.
    Fixed32,
    /// `bool`.
    Bool,
    /// `string`.
    String,
    /// `bytes`: base64 in JSON, like Go's `[]byte`.
    Bytes,
    /// `uint32`: JSON number.
    Uint32,
    /// `sfixed32`: JSON number.
    Sfixed32,
    /// `sfixed64`: JSON number.
    Sfixed64,
    /// `sint32` (zig-zag): JSON number.
    Sint32,
    /// `sint64` (zig-zag): JSON number.
    Sint64,
    /// An embedded message, by index into [`Schema::messages`].
    Message(usize),
}

/// Messages whose JSON form is not an object of their fields: Go gives them custom
/// `MarshalJSON` methods, so the generic mapping would be wrong for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// `meta/v1.Time`: RFC 3339 in seconds.
    Time,
    /// `meta/v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `meta/v1.Duration`: Go duration string such as `1h0m0s`.
    Duration,
    /// `resource.Quantity`: its canonical string.
    Quantity,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `runtime.RawExtension`: the embedded JSON document as is.
    RawExtension,
    /// `meta/v1.FieldsV1`: the embedded JSON document as is.
    FieldsV1,
    /// Named string slices (`ExtraValue`, `Verbs`): a JSON array of strings.
    StringList,
}

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// The protobuf field name; differs from `json_name` for the renamed fields. Kept for
    /// debugging and for the schema tests.
    #[allow(dead_code)]
    pub name: String,
    /// The key this field has in the JSON form.
    pub json_name: String,
    /// The field number.
    pub number: u32,
    /// The declared type.
    pub ty: FieldType,
    /// `repeated` (which includes maps).
    pub repeated: bool,
    /// Whether the value is a map entry message (so the field is a JSON object).
    pub map: bool,
    /// Go pointer field: present on the wire only when set, so a zero value is meaningful.
    /// Plain Go fields (`nullable=false`) are always on the wire and zero means "unset".
    pub nullable: bool,
    /// The field's message is embedded `json:",inline"` in the parent's JSON.
    pub inline: bool,
}

/// One message type.
#[derive(Debug, Clone)]
pub struct Message {
    /// The fully qualified name without the leading dot, e.g. `k8s.io.api.core.v1.Pod`.
    pub full_name: String,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// A message with a custom JSON form.
    pub special: Option<Special>,
    by_number: HashMap<u32, usize>,
}

impl Message {
    /// The position in [`Message::fields`] of the field with this number, if the schema
    /// knows it.
    pub fn position(&self, number: u32) -> Option<usize> {
        self.by_number.get(&number).copied()
    }

    /// The field with this number, if the schema knows it.
    pub fn field_by_number(&self, number: u32) -> Option<&Field> {
        self.position(number).map(|i| &self.fields[i])
    }
}

/// Every message of the embedded descriptor set.
#[derive(Debug)]
pub struct Schema {
    /// All messages, nested ones included.
    pub messages: Vec<Message>,
    by_name: HashMap<String, usize>,
}

impl Schema {
    /// The schema parsed from the embedded descriptors, built on first use.
    pub fn get() -> Result<&'static Schema, SchemaError> {
        static SCHEMA: OnceLock<Result<Schema, SchemaError>> = OnceLock::new();
        SCHEMA
            .get_or_init(|| Schema::parse(DESCRIPTORS))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The index of a message by its full name (no leading dot).
    pub fn index(&self, full_name: &str) -> Option<usize> {
        self.by_name.get(full_name).copied()
    }

    /// A message by index; indices come from this schema, so they are always in range.
    pub fn message(&self, index: usize) -> &Message {
        &self.messages[index]
    }

    /// Whether the message is a Kubernetes object or list: it has `metadata` of type
    /// `ObjectMeta` or `ListMeta`. Such Go types also embed `TypeMeta`, whose `apiVersion`
    /// and `kind` exist in JSON but not in protobuf.
    pub fn is_object(&self, index: usize) -> bool {
        self.message(index).fields.iter().any(|f| {
            f.json_name == "metadata"
                && matches!(f.ty, FieldType::Message(m)
                    if self.message(m).full_name == format!("{META_PACKAGE}.ObjectMeta")
                        || self.message(m).full_name == format!("{META_PACKAGE}.ListMeta"))
        })
    }

    /// Parses a serialized `FileDescriptorSet`.
    fn parse(bytes: &[u8]) -> Result<Schema, SchemaError> {
        let mut raw = Vec::new();
        let mut files = Reader::new(bytes);
        while let Some((number, value)) = files.field()? {
            if let (1, RawValue::Len(file)) = (number, value) {
                parse_file(file, &mut raw)?;
            }
        }
        let by_name: HashMap<String, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, m)| (m.full_name.clone(), i))
            .collect();
        let map_entries: Vec<bool> = raw.iter().map(|m| m.map_entry).collect();
        let mut messages = Vec::with_capacity(raw.len());
        for m in raw {
            let simple = m
                .full_name
                .rsplit_once('.')
                .map_or(m.full_name.as_str(), |(_, n)| n)
                .to_string();
            let mut fields = Vec::with_capacity(m.fields.len());
            for f in m.fields {
                let ty = match f.type_code {
                    1 => FieldType::Double,
                    2 => FieldType::Float,
                    3 => FieldType::Int64,
                    4 => FieldType::Uint64,
                    5 | 14 => FieldType::Int32,
                    6 => FieldType::Fixed64,
                    7 => FieldType::Fixed32,
                    8 => FieldType::Bool,
                    9 => FieldType::String,
                    11 => {
                        let target = f.type_name.strip_prefix('.').unwrap_or(&f.type_name);
                        let index = by_name.get(target).copied().ok_or_else(|| {
                            SchemaError(format!(
                                "{}.{} refers to unknown message {target}",
                                m.full_name, f.name
                            ))
                        })?;
                        FieldType::Message(index)
                    }
                    12 => FieldType::Bytes,
                    13 => FieldType::Uint32,
                    15 => FieldType::Sfixed32,
                    16 => FieldType::Sfixed64,
                    17 => FieldType::Sint32,
                    18 => FieldType::Sint64,
                    other => {
                        return Err(SchemaError(format!(
                            "{}.{} has unsupported type {other}",
                            m.full_name, f.name
                        )))
                    }
                };
                let map = match ty {
                    FieldType::Message(i) => f.repeated && map_entries[i],
                    _ => false,
                };
                let json_name = RENAMED_FIELDS
                    .iter()
                    .find(|(msg, field, _)| *msg == simple && *field == f.name)
                    .map(|(_, _, json)| (*json).to_string())
                    .or(f.json_name)
                    .unwrap_or_else(|| f.name.clone());
                let inline = INLINE_FIELDS
                    .iter()
                    .any(|(msg, field)| *msg == simple && *field == f.name);
                fields.push(Field {
                    name: f.name,
                    json_name,
                    number: f.number,
                    ty,
                    repeated: f.repeated,
                    map,
                    nullable: f.nullable,
                    inline,
                });
            }
            let by_number = fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.number, i))
                .collect();
            let special = special_kind(&m.full_name, &simple, &fields);
            messages.push(Message {
                full_name: m.full_name,
                fields,
                special,
                by_number,
            });
        }
        Ok(Schema { messages, by_name })
    }
}

/// Recognises the messages with a custom Go JSON form.
fn special_kind(full_name: &str, simple: &str, fields: &[Field]) -> Option<Special> {
    const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
    const RESOURCE: &str = "k8s.io.apimachinery.pkg.api.resource.";
    match full_name {
        n if n == format!("{META}Time") => Some(Special::Time),
        n if n == format!("{META}MicroTime") => Some(Special::MicroTime),
        n if n == format!("{META}Duration") => Some(Special::Duration),
        n if n == format!("{META}FieldsV1") => Some(Special::FieldsV1),
        n if n == format!("{RESOURCE}Quantity") || n == format!("{RESOURCE}QuantityValue") => {
            Some(Special::Quantity)
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Some(Special::IntOrString),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => Some(Special::RawExtension),
        _ if (simple == "ExtraValue" || full_name == format!("{META}Verbs"))
            && matches!(fields, [f] if f.repeated && f.ty == FieldType::String) =>
        {
            Some(Special::StringList)
        }
        _ => None,
    }
}

/// A message as the descriptor states it, before type names are resolved to indices.
struct RawMessage {
    full_name: String,
    fields: Vec<RawField>,
    map_entry: bool,
}

struct RawField {
    name: String,
    json_name: Option<String>,
    number: u32,
    type_code: u64,
    type_name: String,
    repeated: bool,
    nullable: bool,
}

fn utf8(bytes: &[u8]) -> Result<String, SchemaError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| SchemaError(e.to_string()))
}

/// `FileDescriptorProto`: package = 2, message_type = 4.
fn parse_file(bytes: &[u8], out: &mut Vec<RawMessage>) -> Result<(), SchemaError> {
    let mut package = String::new();
    let mut bodies = Vec::new();
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (2, RawValue::Len(p)) => package = utf8(p)?,
            (4, RawValue::Len(m)) => bodies.push(m),
            _ => {}
        }
    }
    for body in bodies {
        parse_message(body, &package, out)?;
    }
    Ok(())
}

/// `DescriptorProto`: name = 1, field = 2, nested_type = 3, options = 7 (map_entry = 7).
fn parse_message(bytes: &[u8], scope: &str, out: &mut Vec<RawMessage>) -> Result<(), SchemaError> {
    let mut name = String::new();
    let mut fields = Vec::new();
    let mut nested = Vec::new();
    let mut map_entry = false;
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, RawValue::Len(n)) => name = utf8(n)?,
            (2, RawValue::Len(f)) => fields.push(parse_field(f)?),
            (3, RawValue::Len(m)) => nested.push(m),
            (7, RawValue::Len(options)) => {
                let mut o = Reader::new(options);
                while let Some((number, value)) = o.field()? {
                    if let (7, RawValue::Varint(v)) = (number, value) {
                        map_entry = v != 0;
                    }
                }
            }
            _ => {}
        }
    }
    let full_name = format!("{scope}.{name}");
    for m in nested {
        parse_message(m, &full_name, out)?;
    }
    out.push(RawMessage {
        full_name,
        fields,
        map_entry,
    });
    Ok(())
}

/// `FieldDescriptorProto`: name = 1, number = 3, label = 4, type = 5, type_name = 6,
/// options = 8, json_name = 10.
fn parse_field(bytes: &[u8]) -> Result<RawField, SchemaError> {
    let mut field = RawField {
        name: String::new(),
        json_name: None,
        number: 0,
        type_code: 0,
        type_name: String::new(),
        repeated: false,
        nullable: true,
    };
    let mut r = Reader::new(bytes);
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, RawValue::Len(n)) => field.name = utf8(n)?,
            (3, RawValue::Varint(n)) => {
                field.number = u32::try_from(n).map_err(|e| SchemaError(e.to_string()))?;
            }
            (4, RawValue::Varint(label)) => field.repeated = label == 3,
            (5, RawValue::Varint(t)) => field.type_code = t,
            (6, RawValue::Len(t)) => field.type_name = utf8(t)?,
            (8, RawValue::Len(options)) => {
                let mut o = Reader::new(options);
                while let Some((number, value)) = o.field()? {
                    if let (GOGO_NULLABLE, RawValue::Varint(v)) = (number, value) {
                        field.nullable = v != 0;
                    }
                }
            }
            (10, RawValue::Len(j)) => field.json_name = Some(utf8(j)?),
            _ => {}
        }
    }
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str) -> &'static Message {
        let schema = Schema::get().expect("schema loads");
        schema.message(schema.index(name).expect(name))
    }

    fn simple_name(m: &Message) -> &str {
        m.full_name
            .rsplit_once('.')
            .map_or(m.full_name.as_str(), |(_, n)| n)
    }

    fn field<'a>(m: &'a Message, name: &str) -> &'a Field {
        m.fields.iter().find(|f| f.name == name).expect(name)
    }

    #[test]
    fn embedded_schema_loads_with_every_group() {
        let schema = Schema::get().expect("schema loads");
        assert!(schema.messages.len() > 1000, "{}", schema.messages.len());
        for name in [
            "k8s.io.api.core.v1.Pod",
            "k8s.io.api.apps.v1.Deployment",
            "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
            "k8s.io.api.authentication.v1.TokenRequest",
            "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
            "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "k8s.io.apimachinery.pkg.runtime.Unknown",
        ] {
            assert!(schema.index(name).is_some(), "{name}");
        }
    }

    #[test]
    fn gogo_nullable_marks_go_pointers() {
        let spec = message("k8s.io.api.apps.v1.DeploymentSpec");
        assert!(field(spec, "replicas").nullable, "*int32");
        assert!(!field(spec, "minReadySeconds").nullable, "int32");
        assert!(!field(spec, "paused").nullable, "bool");
        let meta = message("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        assert!(!field(meta, "name").nullable);
        assert!(field(meta, "deletionTimestamp").nullable);
        assert!(field(meta, "labels").map);
    }

    #[test]
    fn renames_inlines_and_specials_are_applied() {
        let r = message("k8s.io.api.authentication.v1.BoundObjectReference");
        assert_eq!(field(r, "uID").json_name, "uid");
        let v = message("k8s.io.api.core.v1.Volume");
        assert!(field(v, "volumeSource").inline);
        for (msg, special) in [
            ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", Special::Time),
            (
                "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
                Special::MicroTime,
            ),
            (
                "k8s.io.apimachinery.pkg.api.resource.Quantity",
                Special::Quantity,
            ),
            (
                "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
                Special::IntOrString,
            ),
            (
                "k8s.io.apimachinery.pkg.runtime.RawExtension",
                Special::RawExtension,
            ),
            (
                "k8s.io.api.authentication.v1.ExtraValue",
                Special::StringList,
            ),
            (
                "k8s.io.apimachinery.pkg.apis.meta.v1.Verbs",
                Special::StringList,
            ),
        ] {
            assert_eq!(message(msg).special, Some(special), "{msg}");
        }
        // Every table entry must hit at least one message, or it is stale.
        let schema = Schema::get().expect("schema loads");
        for (msg, name, _) in RENAMED_FIELDS {
            assert!(
                schema
                    .messages
                    .iter()
                    .any(|m| simple_name(m) == *msg && m.fields.iter().any(|f| f.name == *name)),
                "{msg}.{name}"
            );
        }
        for (msg, name) in INLINE_FIELDS {
            assert!(
                schema.messages.iter().any(|m| simple_name(m) == *msg
                    && m.fields.iter().any(|f| f.name == *name && f.inline)),
                "{msg}.{name}"
            );
        }
    }
}
