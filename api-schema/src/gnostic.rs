//! The swagger 2.0 document in gnostic's protobuf encoding (`openapi.v2.Document`), which is
//! the only form kubectl asks `/openapi/v2` for
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! The messages are the subset of gnostic's `openapiv2/OpenAPIv2.proto` the document uses,
//! written out by hand with the field numbers of the published definition; fields we never set
//! are left out (a decoder treats them as absent). Vendor extensions and other free-form values
//! travel as `Any { yaml }`, which kube-openapi's model builder parses as YAML.

// The oneofs mirror the proto's shape, as prost-build would generate them; the document is
// built once, so the padding of small variants costs nothing worth boxing for.
#![allow(clippy::large_enum_variant)]

use serde_json::{Map, Value};

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    /// The swagger version, `2.0`.
    #[prost(string, tag = "1")]
    pub swagger: String,
    /// Title and version.
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    /// Global consumed MIME types.
    #[prost(string, repeated, tag = "6")]
    pub consumes: Vec<String>,
    /// Global produced MIME types.
    #[prost(string, repeated, tag = "7")]
    pub produces: Vec<String>,
    /// The operations.
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    /// The schemas.
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    /// Global security requirements.
    #[prost(message, repeated, tag = "12")]
    pub security: Vec<SecurityRequirement>,
    /// Security schemes.
    #[prost(message, optional, tag = "13")]
    pub security_definitions: Option<SecurityDefinitions>,
    /// `x-*` keys of the document.
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    /// API title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// API version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Longer description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "7")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Any`: a free-form value as YAML text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The value as YAML.
    #[prost(string, tag = "2")]
    pub yaml: String,
}

/// `openapi.v2.NamedAny`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    /// Map key.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Mapped value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// `openapi.v2.Paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    /// `x-*` keys.
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    /// The path items, by path.
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// `openapi.v2.NamedPathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    /// The path.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its operations.
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// `openapi.v2.PathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    /// `$ref`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// GET.
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    /// PUT.
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    /// POST.
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    /// DELETE.
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    /// OPTIONS.
    #[prost(message, optional, tag = "6")]
    pub options: Option<Operation>,
    /// HEAD.
    #[prost(message, optional, tag = "7")]
    pub head: Option<Operation>,
    /// PATCH.
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    /// Parameters shared by the operations.
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    /// Tags.
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    /// Short summary.
    #[prost(string, tag = "2")]
    pub summary: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Unique id.
    #[prost(string, tag = "5")]
    pub operation_id: String,
    /// Produced MIME types.
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    /// Consumed MIME types.
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    /// Parameters.
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    /// Responses by status code.
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    /// Transfer protocols.
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    /// Deprecated flag.
    #[prost(bool, tag = "11")]
    pub deprecated: bool,
    /// `x-*` keys (`x-kubernetes-action`, `x-kubernetes-group-version-kind`).
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ParametersItem`: a parameter or a reference to one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    /// The alternative.
    #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
    pub oneof: Option<parameters_item::Oneof>,
}

/// The alternatives of [`ParametersItem`].
pub mod parameters_item {
    /// A parameter or a reference.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// An inline parameter.
        #[prost(message, tag = "1")]
        Parameter(super::Parameter),
        /// A `$ref`.
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

/// `openapi.v2.JsonReference`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JsonReference {
    /// `$ref`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// Description.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `openapi.v2.Parameter`: a body or a non-body parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    /// The alternative.
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

/// The alternatives of [`Parameter`].
pub mod parameter {
    /// Body or not.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// `in: body`.
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        /// Query, path, header or form parameters.
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

/// `openapi.v2.BodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `body`.
    #[prost(string, tag = "3")]
    pub r#in: String,
    /// Whether the body is required.
    #[prost(bool, tag = "4")]
    pub required: bool,
    /// The body's schema.
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NonBodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    /// The alternative.
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

/// The alternatives of [`NonBodyParameter`] the documents use.
pub mod non_body_parameter {
    /// Query or path.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// `in: query`.
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameterSubSchema),
        /// `in: path`.
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameterSubSchema),
    }
}

/// `openapi.v2.QueryParameterSubSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameterSubSchema {
    /// Whether the parameter is required.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// `query`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Whether an empty value may be sent.
    #[prost(bool, tag = "5")]
    pub allow_empty_value: bool,
    /// Type.
    #[prost(string, tag = "6")]
    pub r#type: String,
    /// Format.
    #[prost(string, tag = "7")]
    pub format: String,
    /// Unique items.
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "23")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.PathParameterSubSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameterSubSchema {
    /// Always true for path parameters.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// `path`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Type.
    #[prost(string, tag = "5")]
    pub r#type: String,
    /// Format.
    #[prost(string, tag = "6")]
    pub format: String,
    /// Unique items.
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "22")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.Responses`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    /// Responses by status code.
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "2")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.NamedResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    /// Status code.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The response.
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `openapi.v2.ResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    /// The alternative.
    #[prost(oneof = "response_value::Oneof", tags = "1, 2")]
    pub oneof: Option<response_value::Oneof>,
}

/// The alternatives of [`ResponseValue`].
pub mod response_value {
    /// A response or a reference to one.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// Inline.
        #[prost(message, tag = "1")]
        Response(super::Response),
        /// `$ref`.
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

/// `openapi.v2.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// The body's schema.
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "5")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.SchemaItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    /// The alternative.
    #[prost(oneof = "schema_item::Oneof", tags = "1")]
    pub oneof: Option<schema_item::Oneof>,
}

/// The alternatives of [`SchemaItem`] the documents use.
pub mod schema_item {
    /// A schema.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// A JSON schema.
        #[prost(message, tag = "1")]
        Schema(super::Schema),
    }
}

/// `openapi.v2.Definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    /// Schemas by name.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Schema.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// `openapi.v2.Schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    /// `$ref`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// Format.
    #[prost(string, tag = "2")]
    pub format: String,
    /// Title.
    #[prost(string, tag = "3")]
    pub title: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
    /// Default value.
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    /// multipleOf.
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    /// maximum.
    #[prost(double, tag = "7")]
    pub maximum: f64,
    /// exclusiveMaximum.
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    /// minimum.
    #[prost(double, tag = "9")]
    pub minimum: f64,
    /// exclusiveMinimum.
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    /// maxLength.
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    /// minLength.
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    /// pattern.
    #[prost(string, tag = "13")]
    pub pattern: String,
    /// maxItems.
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    /// minItems.
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    /// uniqueItems.
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    /// maxProperties.
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    /// minProperties.
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    /// Required properties.
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    /// Allowed values.
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    /// The schema of a map's values.
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    /// Type.
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    /// The schema of an array's items.
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    /// allOf.
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    /// Properties.
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    /// discriminator.
    #[prost(string, tag = "26")]
    pub discriminator: String,
    /// readOnly.
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    /// Example value.
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    /// `x-*` keys.
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.AdditionalPropertiesItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    /// The alternative.
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

/// The alternatives of [`AdditionalPropertiesItem`].
pub mod additional_properties_item {
    /// A schema or a boolean.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// The values' schema.
        #[prost(message, tag = "1")]
        Schema(super::Schema),
        /// Whether other properties are allowed.
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

/// `openapi.v2.TypeItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    /// The types.
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.ItemsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    /// The item schema (one).
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `openapi.v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    /// Property schemas by name.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.SecurityDefinitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityDefinitions {
    /// Schemes by name.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
}

/// `openapi.v2.NamedSecurityDefinitionsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSecurityDefinitionsItem {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Scheme.
    #[prost(message, optional, tag = "2")]
    pub value: Option<SecurityDefinitionsItem>,
}

/// `openapi.v2.SecurityDefinitionsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityDefinitionsItem {
    /// The alternative.
    #[prost(oneof = "security_definitions_item::Oneof", tags = "2")]
    pub oneof: Option<security_definitions_item::Oneof>,
}

/// The alternatives of [`SecurityDefinitionsItem`] the documents use.
pub mod security_definitions_item {
    /// An API key scheme.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        /// `type: apiKey`.
        #[prost(message, tag = "2")]
        ApiKeySecurity(super::ApiKeySecurity),
    }
}

/// `openapi.v2.ApiKeySecurity`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiKeySecurity {
    /// `apiKey`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Header name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `header`.
    #[prost(string, tag = "3")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
}

/// `openapi.v2.SecurityRequirement`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityRequirement {
    /// Scheme name → scopes.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedStringArray>,
}

/// `openapi.v2.NamedStringArray`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedStringArray {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Values.
    #[prost(message, optional, tag = "2")]
    pub value: Option<StringArray>,
}

/// `openapi.v2.StringArray`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringArray {
    /// Values.
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// JSON → protobuf, the way gnostic compiles a swagger document.

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
fn b(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or_default()
}
fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_default()
}
fn i(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or_default()
}
fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A free-form value as gnostic stores it: YAML text.
fn any(v: &Value) -> Any {
    Any {
        yaml: serde_yaml::to_string(v).unwrap_or_default(),
    }
}

fn vendor_extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, x)| NamedAny {
                    name: k.clone(),
                    value: Some(any(x)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn named_schemas(m: Option<&Map<String, Value>>) -> Vec<NamedSchema> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| NamedSchema {
                name: k.clone(),
                value: Some(schema(v)),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Converts one JSON schema.
pub(crate) fn schema(v: &Value) -> Schema {
    let types = match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Schema {
        r#ref: s(v, "$ref"),
        format: s(v, "format"),
        title: s(v, "title"),
        description: s(v, "description"),
        default: v.get("default").map(any),
        multiple_of: f(v, "multipleOf"),
        maximum: f(v, "maximum"),
        exclusive_maximum: b(v, "exclusiveMaximum"),
        minimum: f(v, "minimum"),
        exclusive_minimum: b(v, "exclusiveMinimum"),
        max_length: i(v, "maxLength"),
        min_length: i(v, "minLength"),
        pattern: s(v, "pattern"),
        max_items: i(v, "maxItems"),
        min_items: i(v, "minItems"),
        unique_items: b(v, "uniqueItems"),
        max_properties: i(v, "maxProperties"),
        min_properties: i(v, "minProperties"),
        required: strings(v, "required"),
        r#enum: v
            .get("enum")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: v.get("additionalProperties").map(|a| {
            Box::new(AdditionalPropertiesItem {
                oneof: Some(match a {
                    Value::Bool(x) => additional_properties_item::Oneof::Boolean(*x),
                    other => additional_properties_item::Oneof::Schema(schema(other)),
                }),
            })
        }),
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: v.get("items").map(|x| ItemsItem {
            schema: match x {
                Value::Array(a) => a.iter().map(schema).collect(),
                other => vec![schema(other)],
            },
        }),
        all_of: v
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| Properties {
                additional_properties: named_schemas(Some(m)),
            }),
        discriminator: s(v, "discriminator"),
        read_only: b(v, "readOnly"),
        example: v.get("example").map(any),
        vendor_extension: vendor_extensions(v),
    }
}

fn parameter(p: &Value) -> ParametersItem {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        return ParametersItem {
            oneof: Some(parameters_item::Oneof::JsonReference(JsonReference {
                r#ref: r.to_string(),
                description: s(p, "description"),
            })),
        };
    }
    let inner = match p.get("in").and_then(Value::as_str) {
        Some("body") => parameter::Oneof::BodyParameter(BodyParameter {
            description: s(p, "description"),
            name: s(p, "name"),
            r#in: "body".into(),
            required: b(p, "required"),
            schema: p.get("schema").map(schema),
            vendor_extension: vendor_extensions(p),
        }),
        Some("path") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::PathParameterSubSchema(
                PathParameterSubSchema {
                    required: b(p, "required"),
                    r#in: "path".into(),
                    description: s(p, "description"),
                    name: s(p, "name"),
                    r#type: s(p, "type"),
                    format: s(p, "format"),
                    unique_items: b(p, "uniqueItems"),
                    vendor_extension: vendor_extensions(p),
                },
            )),
        }),
        // The documents have no header or form parameters; anything else is a query one.
        _ => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(
                QueryParameterSubSchema {
                    required: b(p, "required"),
                    r#in: "query".into(),
                    description: s(p, "description"),
                    name: s(p, "name"),
                    allow_empty_value: b(p, "allowEmptyValue"),
                    r#type: s(p, "type"),
                    format: s(p, "format"),
                    unique_items: b(p, "uniqueItems"),
                    vendor_extension: vendor_extensions(p),
                },
            )),
        }),
    };
    ParametersItem {
        oneof: Some(parameters_item::Oneof::Parameter(Parameter {
            oneof: Some(inner),
        })),
    }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.get("parameters")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(parameter).collect())
        .unwrap_or_default()
}

fn operation(op: &Value) -> Operation {
    let responses = op
        .get("responses")
        .and_then(Value::as_object)
        .map(|m| Responses {
            response_code: m
                .iter()
                .map(|(code, r)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        oneof: Some(match r.get("$ref").and_then(Value::as_str) {
                            Some(reference) => {
                                response_value::Oneof::JsonReference(JsonReference {
                                    r#ref: reference.to_string(),
                                    description: s(r, "description"),
                                })
                            }
                            None => response_value::Oneof::Response(Response {
                                description: s(r, "description"),
                                schema: r.get("schema").map(|x| SchemaItem {
                                    oneof: Some(schema_item::Oneof::Schema(schema(x))),
                                }),
                                vendor_extension: vendor_extensions(r),
                            }),
                        }),
                    }),
                })
                .collect(),
            vendor_extension: Vec::new(),
        });
    Operation {
        tags: strings(op, "tags"),
        summary: s(op, "summary"),
        description: s(op, "description"),
        operation_id: s(op, "operationId"),
        produces: strings(op, "produces"),
        consumes: strings(op, "consumes"),
        parameters: parameters(op),
        responses,
        schemes: strings(op, "schemes"),
        deprecated: b(op, "deprecated"),
        vendor_extension: vendor_extensions(op),
    }
}

fn path_item(v: &Value) -> PathItem {
    let op = |m: &str| v.get(m).map(operation);
    PathItem {
        r#ref: s(v, "$ref"),
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: parameters(v),
        vendor_extension: vendor_extensions(v),
    }
}

/// Converts a swagger 2.0 JSON document.
pub(crate) fn document(doc: &Value) -> Document {
    let info = doc.get("info").map(|i| Info {
        title: s(i, "title"),
        version: s(i, "version"),
        description: s(i, "description"),
        vendor_extension: vendor_extensions(i),
    });
    let paths = doc.get("paths").and_then(Value::as_object).map(|m| Paths {
        vendor_extension: Vec::new(),
        path: m
            .iter()
            .map(|(k, v)| NamedPathItem {
                name: k.clone(),
                value: Some(path_item(v)),
            })
            .collect(),
    });
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|m| Definitions {
            additional_properties: named_schemas(Some(m)),
        });
    let security = doc
        .get("security")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_object)
                .map(|req| SecurityRequirement {
                    additional_properties: req
                        .iter()
                        .map(|(k, v)| NamedStringArray {
                            name: k.clone(),
                            value: Some(StringArray {
                                value: v
                                    .as_array()
                                    .map(|x| {
                                        x.iter()
                                            .filter_map(Value::as_str)
                                            .map(str::to_string)
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                            }),
                        })
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let security_definitions = doc
        .get("securityDefinitions")
        .and_then(Value::as_object)
        .map(|m| SecurityDefinitions {
            additional_properties: m
                .iter()
                .map(|(k, v)| NamedSecurityDefinitionsItem {
                    name: k.clone(),
                    value: Some(SecurityDefinitionsItem {
                        oneof: Some(security_definitions_item::Oneof::ApiKeySecurity(
                            ApiKeySecurity {
                                r#type: s(v, "type"),
                                name: s(v, "name"),
                                r#in: s(v, "in"),
                                description: s(v, "description"),
                            },
                        )),
                    }),
                })
                .collect(),
        });
    Document {
        swagger: s(doc, "swagger"),
        info,
        consumes: strings(doc, "consumes"),
        produces: strings(doc, "produces"),
        paths,
        definitions,
        security,
        security_definitions,
        vendor_extension: vendor_extensions(doc),
    }
}
