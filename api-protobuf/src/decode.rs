//! Protobuf → JSON, driven by the schema.
//!
//! The rules reproduce what kube-apiserver gets when it unmarshals the protobuf into the Go
//! struct and marshals that as JSON:
//!
//! * Plain Go fields (`nullable=false`) are always on the wire; a zero scalar there means
//!   "unset" and is dropped, as `omitempty` drops it. Pointer fields are only on the wire when
//!   set, so their zero values (`replicas: 0`, `automountServiceAccountToken: false`) stay.
//! * Nested structs stay even when empty (`"status": {}`), as Go prints them.
//! * Zero `Time`s vanish (Go prints `null`, k8s-openapi omits it).
//! * `bytes` become base64; maps become objects; inline-embedded structs are spread into
//!   their parent; `IntOrString`, `Quantity`, `Time`, `RawExtension` get their JSON forms.
//! * Unknown field numbers are skipped, as Go's generated code skips them.
//!
//! One difference remains: the descriptor does not say which plain fields lack `omitempty`
//! (e.g. `StatefulSetOrdinals.start`), so their zero values are dropped where Go prints them.
//! For fields k8s-openapi marks required the typed round trip in [`crate::decode`] puts the
//! zero back; for the rest, absent and zero mean the same to Kubernetes.

use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::error::{DecodeError, FieldPath};
use crate::schema::{Field, FieldType, Schema, Special};
use crate::wellknown;
use crate::wire::{RawValue, Reader, WireType};

/// How deep messages may nest. Real objects stay below 20 levels; the limit keeps a hostile
/// body (nested RawExtensions, say) from exhausting the stack of the request's thread.
pub(crate) const MAX_DEPTH: usize = 100;

pub(crate) struct Decoder<'s> {
    schema: &'s Schema,
    path: FieldPath,
    depth: usize,
}

/// What one field has collected so far; repeated fields arrive one element at a time.
enum Slot {
    Single(Option<Value>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn wire_name(wire: WireType) -> &'static str {
    match wire {
        WireType::Varint => "varint",
        WireType::Fixed64 => "64-bit",
        WireType::Len => "length-delimited",
        WireType::Fixed32 => "32-bit",
    }
}

/// Whether a scalar is Go's zero value, which `omitempty` leaves out.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

impl<'s> Decoder<'s> {
    /// A decoder whose messages start `depth` levels deep (non-zero for envelopes nested
    /// in a RawExtension).
    pub(crate) fn new(schema: &'s Schema, depth: usize) -> Self {
        Decoder {
            schema,
            path: FieldPath::default(),
            depth,
        }
    }

    fn malformed(&self, source: crate::wire::WireError) -> DecodeError {
        DecodeError::Malformed {
            path: self.path.clone(),
            source,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError::InvalidValue {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn wire_type(&self, expected: WireType, actual: WireType) -> DecodeError {
        DecodeError::WireType {
            path: self.path.clone(),
            expected: wire_name(expected),
            actual: wire_name(actual),
        }
    }

    /// Decodes one message into the JSON object of its fields.
    pub(crate) fn message(
        &mut self,
        index: usize,
        bytes: &[u8],
    ) -> Result<Map<String, Value>, DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.invalid(format!("messages nest deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = self.fields(index, bytes);
        self.depth -= 1;
        result
    }

    fn fields(&mut self, index: usize, bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
        let schema = self.schema;
        let message = schema.message(index);
        let mut slots: Vec<Option<Slot>> = message.fields.iter().map(|_| None).collect();
        let mut reader = Reader::new(bytes);
        while let Some((number, raw)) = reader.field().map_err(|e| self.malformed(e))? {
            let Some(position) = message.position(number) else {
                continue;
            };
            let field = &message.fields[position];
            // Inline fields have no JSON key of their own, so the path skips them too.
            if field.inline {
                self.field(field, raw, &mut slots[position])?;
                continue;
            }
            self.path.push_field(&field.json_name);
            let result = self.field(field, raw, &mut slots[position]);
            self.path.pop();
            result?;
        }
        let mut out = Map::new();
        for (field, slot) in message.fields.iter().zip(slots) {
            let value = match slot {
                None | Some(Slot::Single(None)) => continue,
                Some(Slot::Single(Some(v))) => v,
                Some(Slot::List(items)) => Value::Array(items),
                Some(Slot::Map(entries)) => Value::Object(entries),
            };
            match value {
                Value::Object(inner) if field.inline => out.extend(inner),
                value => {
                    out.insert(field.json_name.clone(), value);
                }
            }
        }
        Ok(out)
    }

    /// Adds one wire occurrence of `field` to its slot.
    fn field(
        &mut self,
        field: &Field,
        raw: RawValue<'_>,
        slot: &mut Option<Slot>,
    ) -> Result<(), DecodeError> {
        if field.map {
            let (key, value) = self.map_entry(field.ty, raw)?;
            if let Some(Slot::Map(entries)) = slot {
                entries.insert(key, value);
            } else {
                *slot = Some(Slot::Map(Map::from_iter([(key, value)])));
            }
            return Ok(());
        }
        if field.repeated {
            let mut items = match slot.take() {
                Some(Slot::List(items)) => items,
                _ => Vec::new(),
            };
            let packed = matches!(raw, RawValue::Len(_))
                && !matches!(
                    field.ty,
                    FieldType::String | FieldType::Bytes | FieldType::Message(_)
                );
            match raw {
                RawValue::Len(bytes) if packed => {
                    let mut packed = Reader::new(bytes);
                    while !packed.is_empty() {
                        let raw = match field.ty {
                            FieldType::Fixed64 | FieldType::Sfixed64 | FieldType::Double => {
                                packed.fixed64().map(RawValue::Fixed64)
                            }
                            FieldType::Fixed32 | FieldType::Sfixed32 | FieldType::Float => {
                                packed.fixed32().map(RawValue::Fixed32)
                            }
                            _ => packed.varint().map(RawValue::Varint),
                        }
                        .map_err(|e| self.malformed(e))?;
                        items.push(self.value(field.ty, raw)?.unwrap_or(Value::Null));
                    }
                }
                raw => {
                    self.path.push_index(items.len());
                    let value = self.value(field.ty, raw);
                    self.path.pop();
                    items.push(value?.unwrap_or(Value::Null));
                }
            }
            *slot = Some(Slot::List(items));
            return Ok(());
        }
        let value = self.value(field.ty, raw)?;
        let keep = match (&value, field.ty) {
            (None, _) => false,
            (Some(_), _) if field.nullable => true,
            // A plain struct is always printed; plain IntOrString zero is "unset", which the
            // API server then defaults (e.g. a Service port's targetPort).
            (Some(v), FieldType::Message(m)) => {
                self.schema.message(m).special != Some(Special::IntOrString) || !is_zero(v)
            }
            (Some(v), _) => !is_zero(v),
        };
        *slot = Some(Slot::Single(if keep { value } else { None }));
        Ok(())
    }

    /// Decodes a map entry message into its key and value.
    fn map_entry(
        &mut self,
        ty: FieldType,
        raw: RawValue<'_>,
    ) -> Result<(String, Value), DecodeError> {
        let FieldType::Message(entry) = ty else {
            return Err(self.invalid("map field without an entry message"));
        };
        let RawValue::Len(bytes) = raw else {
            return Err(self.wire_type(WireType::Len, raw.wire_type()));
        };
        let entry = self.schema.message(entry);
        let (Some(key_field), Some(value_field)) =
            (entry.field_by_number(1), entry.field_by_number(2))
        else {
            return Err(self.invalid("map entry without key and value fields"));
        };
        let mut key = None;
        let mut value = None;
        let mut reader = Reader::new(bytes);
        while let Some((number, raw)) = reader.field().map_err(|e| self.malformed(e))? {
            match number {
                1 => key = self.value(key_field.ty, raw)?,
                2 => {
                    self.path.push_key(match &key {
                        Some(Value::String(k)) => k,
                        _ => "",
                    });
                    let decoded = self.value(value_field.ty, raw);
                    self.path.pop();
                    value = Some(decoded?.unwrap_or(Value::Null));
                }
                _ => {}
            }
        }
        let key = match key {
            Some(Value::String(k)) => k,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let value = match value {
            Some(v) => v,
            // An absent value is the type's zero value.
            None => self
                .value(value_field.ty, zero_raw(value_field.ty))?
                .unwrap_or(Value::Null),
        };
        Ok((key, value))
    }

    /// Converts one wire value of type `ty` to JSON. `None` means "no JSON value" (a zero
    /// `Time`, an empty `RawExtension`), which the caller omits.
    fn value(&mut self, ty: FieldType, raw: RawValue<'_>) -> Result<Option<Value>, DecodeError> {
        let expected = match ty {
            FieldType::Double | FieldType::Fixed64 | FieldType::Sfixed64 => WireType::Fixed64,
            FieldType::Float | FieldType::Fixed32 | FieldType::Sfixed32 => WireType::Fixed32,
            FieldType::String | FieldType::Bytes | FieldType::Message(_) => WireType::Len,
            _ => WireType::Varint,
        };
        if raw.wire_type() != expected {
            return Err(self.wire_type(expected, raw.wire_type()));
        }
        let value = match (ty, raw) {
            (FieldType::Int32, RawValue::Varint(v)) => Value::from(v as i32),
            (FieldType::Int64, RawValue::Varint(v)) => Value::from(v as i64),
            (FieldType::Uint32, RawValue::Varint(v)) => Value::from(v as u32),
            (FieldType::Uint64, RawValue::Varint(v)) => Value::from(v),
            (FieldType::Sint32, RawValue::Varint(v)) => Value::from(zigzag(v) as i32),
            (FieldType::Sint64, RawValue::Varint(v)) => Value::from(zigzag(v)),
            (FieldType::Bool, RawValue::Varint(v)) => Value::Bool(v != 0),
            (FieldType::Fixed64, RawValue::Fixed64(v)) => Value::from(v),
            (FieldType::Sfixed64, RawValue::Fixed64(v)) => Value::from(v as i64),
            (FieldType::Double, RawValue::Fixed64(v)) => self.float(f64::from_bits(v))?,
            (FieldType::Fixed32, RawValue::Fixed32(v)) => Value::from(v),
            (FieldType::Sfixed32, RawValue::Fixed32(v)) => Value::from(v as i32),
            (FieldType::Float, RawValue::Fixed32(v)) => self.float(f64::from(f32::from_bits(v)))?,
            // Go does not validate UTF-8 in protobuf strings, and encoding/json replaces
            // invalid sequences with U+FFFD; from_utf8_lossy does the same.
            (FieldType::String, RawValue::Len(b)) => {
                Value::String(String::from_utf8_lossy(b).into_owned())
            }
            (FieldType::Bytes, RawValue::Len(b)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (FieldType::Message(m), RawValue::Len(b)) => return self.message_value(m, b),
            _ => return Err(self.wire_type(expected, raw.wire_type())),
        };
        Ok(Some(value))
    }

    fn float(&self, f: f64) -> Result<Value, DecodeError> {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| self.invalid(format!("{f} has no JSON form")))
    }

    /// The JSON form of an embedded message, honouring the custom Go JSON forms.
    fn message_value(&mut self, index: usize, bytes: &[u8]) -> Result<Option<Value>, DecodeError> {
        let special = self.schema.message(index).special;
        let Some(special) = special else {
            return Ok(Some(Value::Object(self.message(index, bytes)?)));
        };
        let fields = self.scalars(bytes)?;
        let int = |n: u32| match fields.iter().rev().find(|(f, _)| *f == n) {
            Some((_, RawValue::Varint(v))) => *v,
            _ => 0,
        };
        let bytes_of = |n: u32| match fields.iter().rev().find(|(f, _)| *f == n) {
            Some((_, RawValue::Len(b))) => *b,
            _ => &[],
        };
        let string = |n: u32| String::from_utf8_lossy(bytes_of(n)).into_owned();
        Ok(match special {
            Special::Time => {
                let seconds = int(1) as i64;
                if bytes.is_empty() || seconds == wellknown::GO_ZERO_TIME_SECONDS {
                    None
                } else {
                    Some(Value::String(
                        wellknown::format_time(seconds).map_err(|e| self.invalid(e))?,
                    ))
                }
            }
            Special::MicroTime => {
                let (seconds, nanos) = (int(1) as i64, int(2) as i32);
                if bytes.is_empty() || (seconds == wellknown::GO_ZERO_TIME_SECONDS && nanos == 0) {
                    None
                } else {
                    Some(Value::String(
                        wellknown::format_micro_time(seconds, nanos)
                            .map_err(|e| self.invalid(e))?,
                    ))
                }
            }
            Special::Duration => Some(Value::String(wellknown::format_duration(int(1) as i64))),
            Special::Quantity => {
                let s = string(1);
                Some(Value::String(if s.is_empty() {
                    "0".to_string()
                } else {
                    s
                }))
            }
            Special::IntOrString => Some(if int(1) == 1 {
                Value::String(string(3))
            } else {
                Value::from(int(2) as i32)
            }),
            Special::StringList => Some(Value::Array(
                fields
                    .iter()
                    .filter_map(|(n, raw)| match (n, raw) {
                        (1, RawValue::Len(b)) => {
                            Some(Value::String(String::from_utf8_lossy(b).into_owned()))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            Special::RawExtension | Special::FieldsV1 => {
                let raw = bytes_of(1);
                if raw.is_empty() {
                    None
                } else if special == Special::RawExtension && raw.starts_with(crate::MAGIC) {
                    // An object embedded by the protobuf serializer is itself an envelope.
                    Some(
                        crate::decode_nested(raw, self.depth + 1)
                            .map_err(|e| self.invalid(e.to_string()))?,
                    )
                } else {
                    Some(
                        serde_json::from_slice(raw).map_err(|e| {
                            self.invalid(format!("embedded document is not JSON: {e}"))
                        })?,
                    )
                }
            }
        })
    }

    /// Reads the raw fields of a special message (all of which are scalars).
    fn scalars<'b>(&self, bytes: &'b [u8]) -> Result<Vec<(u32, RawValue<'b>)>, DecodeError> {
        let mut out = Vec::new();
        let mut reader = Reader::new(bytes);
        while let Some(field) = reader.field().map_err(|e| self.malformed(e))? {
            out.push(field);
        }
        Ok(out)
    }
}

/// Decodes a zig-zag varint (`sint32`/`sint64`).
fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The wire form of a type's zero value, for map entries that omit their value.
fn zero_raw(ty: FieldType) -> RawValue<'static> {
    match ty {
        FieldType::Double | FieldType::Fixed64 | FieldType::Sfixed64 => RawValue::Fixed64(0),
        FieldType::Float | FieldType::Fixed32 | FieldType::Sfixed32 => RawValue::Fixed32(0),
        FieldType::String | FieldType::Bytes | FieldType::Message(_) => RawValue::Len(&[]),
        _ => RawValue::Varint(0),
    }
}
