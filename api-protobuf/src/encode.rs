//! JSON → protobuf, the inverse of [`crate::decode`](mod@crate::decode), driven by the same schema.
//!
//! Strict on purpose: a JSON key the message does not declare is an error rather than being
//! dropped, because protobuf has nowhere to keep it and silent loss would hide mistakes in
//! test fixtures and responses. `null` means "absent", as in Go's `encoding/json`.

use base64::Engine;
use serde_json::{Map, Value};

use crate::decode::MAX_DEPTH;
use crate::error::{json_type, EncodeError, FieldPath};
use crate::schema::{Field, FieldType, Message, Schema, Special};
use crate::wellknown;
use crate::wire::Writer;

pub(crate) struct Encoder<'s> {
    schema: &'s Schema,
    path: FieldPath,
    depth: usize,
}

impl<'s> Encoder<'s> {
    pub(crate) fn new(schema: &'s Schema) -> Self {
        Encoder {
            schema,
            path: FieldPath::default(),
            depth: 0,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> EncodeError {
        EncodeError::InvalidValue {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn expected(&self, what: &str, value: &Value) -> EncodeError {
        self.invalid(format!("expected {what}, got {}", json_type(value)))
    }

    /// Encodes a JSON object as message `index`.
    ///
    /// `apiVersion` and `kind` of objects are skipped: Go's `TypeMeta` has no protobuf form.
    /// At the top level they travel in the envelope; nested objects (a StatefulSet's
    /// `volumeClaimTemplates`, which k8s-openapi prints with both) lose them, as in Go.
    pub(crate) fn message(
        &mut self,
        index: usize,
        object: &Map<String, Value>,
    ) -> Result<Vec<u8>, EncodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.invalid(format!("objects nest deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = self.fields(index, object);
        self.depth -= 1;
        result
    }

    fn fields(
        &mut self,
        index: usize,
        object: &Map<String, Value>,
    ) -> Result<Vec<u8>, EncodeError> {
        let schema = self.schema;
        let message = schema.message(index);
        let type_meta = schema.is_object(index);
        for key in object.keys() {
            let skipped = type_meta && (key == "apiVersion" || key == "kind");
            if !skipped && !accepts(schema, message, key) {
                self.path.push_field(key);
                let error = EncodeError::UnknownField {
                    path: self.path.clone(),
                };
                self.path.pop();
                return Err(error);
            }
        }
        let mut fields: Vec<&Field> = message.fields.iter().collect();
        fields.sort_by_key(|f| f.number);
        let mut w = Writer::new();
        for field in fields {
            if field.inline {
                let FieldType::Message(inner) = field.ty else {
                    continue;
                };
                let part: Map<String, Value> = object
                    .iter()
                    .filter(|(k, _)| accepts(schema, schema.message(inner), k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !part.is_empty() {
                    let bytes = self.message(inner, &part)?;
                    w.bytes(field.number, &bytes);
                }
                continue;
            }
            let Some(value) = object.get(&field.json_name).filter(|v| !v.is_null()) else {
                continue;
            };
            self.path.push_field(&field.json_name);
            let result = self.field(field, value, &mut w);
            self.path.pop();
            result?;
        }
        Ok(w.into_bytes())
    }

    fn field(&mut self, field: &Field, value: &Value, w: &mut Writer) -> Result<(), EncodeError> {
        if field.map {
            let FieldType::Message(entry) = field.ty else {
                return Err(self.invalid("map field without an entry message"));
            };
            let Value::Object(entries) = value else {
                return Err(self.expected("an object", value));
            };
            let entry = self.schema.message(entry);
            let (Some(key_field), Some(value_field)) =
                (entry.field_by_number(1), entry.field_by_number(2))
            else {
                return Err(self.invalid("map entry without key and value fields"));
            };
            for (key, item) in entries {
                self.path.push_key(key);
                let mut e = Writer::new();
                let result = self
                    .value(key_field.ty, 1, &Value::String(key.clone()), &mut e)
                    .and_then(|()| match item {
                        Value::Null => Ok(()),
                        item => self.value(value_field.ty, 2, item, &mut e),
                    });
                self.path.pop();
                result?;
                w.bytes(field.number, &e.into_bytes());
            }
            return Ok(());
        }
        if field.repeated {
            let Value::Array(items) = value else {
                return Err(self.expected("an array", value));
            };
            for (i, item) in items.iter().enumerate() {
                self.path.push_index(i);
                let result = self.value(field.ty, field.number, item, w);
                self.path.pop();
                result?;
            }
            return Ok(());
        }
        self.value(field.ty, field.number, value, w)
    }

    /// Writes one value as field `number` of type `ty`.
    fn value(
        &mut self,
        ty: FieldType,
        number: u32,
        value: &Value,
        w: &mut Writer,
    ) -> Result<(), EncodeError> {
        match ty {
            FieldType::Int32 => w.varint(
                number,
                self.int(value, i32::MIN.into(), i32::MAX.into())? as u64,
            ),
            FieldType::Int64 => w.varint(number, self.int(value, i64::MIN, i64::MAX)? as u64),
            FieldType::Uint32 => w.varint(number, self.uint(value, u32::MAX.into())?),
            FieldType::Uint64 => w.varint(number, self.uint(value, u64::MAX)?),
            FieldType::Sint32 => {
                let n = self.int(value, i32::MIN.into(), i32::MAX.into())?;
                w.varint(number, ((n << 1) ^ (n >> 63)) as u64);
            }
            FieldType::Sint64 => {
                let n = self.int(value, i64::MIN, i64::MAX)?;
                w.varint(number, ((n << 1) ^ (n >> 63)) as u64);
            }
            FieldType::Fixed64 => w.fixed64(number, self.uint(value, u64::MAX)?),
            FieldType::Sfixed64 => w.fixed64(number, self.int(value, i64::MIN, i64::MAX)? as u64),
            FieldType::Fixed32 => w.fixed32(number, self.uint(value, u32::MAX.into())? as u32),
            FieldType::Sfixed32 => {
                w.fixed32(
                    number,
                    self.int(value, i32::MIN.into(), i32::MAX.into())? as i32 as u32,
                );
            }
            FieldType::Double => w.fixed64(number, self.float(value)?.to_bits()),
            FieldType::Float => w.fixed32(number, (self.float(value)? as f32).to_bits()),
            FieldType::Bool => match value {
                Value::Bool(b) => w.varint(number, u64::from(*b)),
                other => return Err(self.expected("a boolean", other)),
            },
            FieldType::String => match value {
                Value::String(s) => w.bytes(number, s.as_bytes()),
                other => return Err(self.expected("a string", other)),
            },
            FieldType::Bytes => match value {
                Value::String(s) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| self.invalid(format!("not base64: {e}")))?;
                    w.bytes(number, &bytes);
                }
                other => return Err(self.expected("a base64 string", other)),
            },
            FieldType::Message(m) => {
                let bytes = self.message_value(m, value)?;
                w.bytes(number, &bytes);
            }
        }
        Ok(())
    }

    fn int(&self, value: &Value, min: i64, max: i64) -> Result<i64, EncodeError> {
        value
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                self.invalid(format!("expected an integer in {min}..={max}, got {value}"))
            })
    }

    fn uint(&self, value: &Value, max: u64) -> Result<u64, EncodeError> {
        value
            .as_u64()
            .filter(|n| *n <= max)
            .ok_or_else(|| self.invalid(format!("expected an integer in 0..={max}, got {value}")))
    }

    fn float(&self, value: &Value) -> Result<f64, EncodeError> {
        value
            .as_f64()
            .ok_or_else(|| self.expected("a number", value))
    }

    /// The bytes of an embedded message, honouring the custom Go JSON forms.
    fn message_value(&mut self, index: usize, value: &Value) -> Result<Vec<u8>, EncodeError> {
        let Some(special) = self.schema.message(index).special else {
            let Value::Object(object) = value else {
                return Err(self.expected("an object", value));
            };
            return self.message(index, object);
        };
        let mut w = Writer::new();
        match special {
            Special::Time | Special::MicroTime => {
                let Value::String(text) = value else {
                    return Err(self.expected("an RFC 3339 time string", value));
                };
                let (seconds, nanos) = wellknown::parse_time(text).map_err(|e| self.invalid(e))?;
                w.varint(1, seconds as u64);
                if nanos != 0 {
                    w.varint(2, i64::from(nanos) as u64);
                }
            }
            Special::Duration => {
                let Value::String(text) = value else {
                    return Err(self.expected("a duration string", value));
                };
                let nanos = wellknown::parse_duration(text).map_err(|e| self.invalid(e))?;
                w.varint(1, nanos as u64);
            }
            // Go's Quantity.UnmarshalJSON also takes bare numbers.
            Special::Quantity => match value {
                Value::String(s) => w.bytes(1, s.as_bytes()),
                Value::Number(n) => w.bytes(1, n.to_string().as_bytes()),
                other => return Err(self.expected("a quantity string", other)),
            },
            // Go always writes all three fields of IntOrString.
            Special::IntOrString => match value {
                Value::Number(_) => {
                    let n = self.int(value, i32::MIN.into(), i32::MAX.into())?;
                    w.varint(1, 0);
                    w.varint(2, n as u64);
                    w.bytes(3, b"");
                }
                Value::String(s) => {
                    w.varint(1, 1);
                    w.varint(2, 0);
                    w.bytes(3, s.as_bytes());
                }
                other => return Err(self.expected("an integer or a string", other)),
            },
            Special::StringList => {
                let Value::Array(items) = value else {
                    return Err(self.expected("an array of strings", value));
                };
                for item in items {
                    match item {
                        Value::String(s) => w.bytes(1, s.as_bytes()),
                        other => return Err(self.expected("a string", other)),
                    }
                }
            }
            Special::RawExtension | Special::FieldsV1 => {
                let raw = serde_json::to_vec(value).map_err(|e| self.invalid(e.to_string()))?;
                w.bytes(1, &raw);
            }
        }
        Ok(w.into_bytes())
    }
}

/// Whether `key` is a JSON key of `message`, directly or through an inline-embedded field.
fn accepts(schema: &Schema, message: &Message, key: &str) -> bool {
    message.fields.iter().any(|f| {
        if f.inline {
            matches!(f.ty, FieldType::Message(m) if accepts(schema, schema.message(m), key))
        } else {
            f.json_name == key
        }
    })
}
