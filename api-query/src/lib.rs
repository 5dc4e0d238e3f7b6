//! Label and field selectors, and server-side Table printing of Kubernetes objects.
//!
//! Everything here works on objects as the API server stores them, `serde_json::Value` in
//! external (v1) JSON form, so list and watch filtering and `kubectl get` output never need to
//! deserialize into typed structs. Behaviour and error wording follow kube-apiserver 1.32,
//! because kubectl, client-go and people's scripts depend on both:
//!
//! * [`LabelSelector`]: the `labelSelector=` grammar (apimachinery `labels.Parse`) and
//!   `metav1.LabelSelector` objects (`LabelSelectorAsSelector`), for lists, watches and
//!   controllers.
//! * [`FieldSelector`]: the `fieldSelector=` grammar (`fields.ParseSelector`) and which fields
//!   each kind can be selected on, with their values ([`field_value`]).
//! * [`to_table`]: `meta.k8s.io/v1` `Table` responses with upstream's columns and cells
//!   (`pkg/printers/internalversion`), AGE rendered by [`human_duration`].

#![deny(missing_docs)]

mod duration;
mod error;
mod fields;
mod labels;
mod table;
mod validation;

pub use api_types::k8s_openapi::jiff::Timestamp;

pub use duration::{human_duration, short_human_duration};
pub use error::SelectorError;
pub use fields::{escape_value, field_value, supported_fields, FieldOp, FieldSelector, FieldTerm};
pub use labels::{
    format_label_selector, format_labels, LabelSelector, Labels, Operator, Requirement,
};
pub use table::{
    column_definitions, current_time, to_table, ColumnDefinition, IncludeObject, TableOptions,
    TableVersion,
};
