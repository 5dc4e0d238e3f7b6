//! The one error type of this crate.

/// Why a selector could not be parsed or cannot be applied to a kind.
///
/// The `Display` text of every variant is the message kube-apiserver puts in the `400 BadRequest`
/// `Status` for the same input, so callers can answer with `err.to_string()` and clients that
/// match on upstream wording keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The `labelSelector` (or a `metav1.LabelSelector`) is malformed or has an invalid key or
    /// value, worded as apimachinery's `labels.Parse` / `LabelSelectorAsSelector`.
    #[error("{0}")]
    Label(String),
    /// The `fieldSelector` is malformed (bad term or escape), worded as `fields.ParseSelector`.
    #[error("{0}")]
    Field(String),
    /// The field selector names a field the kind does not support, worded as the kind's field
    /// label conversion function words it.
    #[error("{message}")]
    UnsupportedField {
        /// The field label as the client spelled it.
        field: String,
        /// The upstream message, e.g. `field label not supported: spec.foo`.
        message: String,
    },
}
