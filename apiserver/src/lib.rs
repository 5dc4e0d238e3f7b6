//! the API server of Coxswain.
//!
//! Nothing is here yet: the component lands with issue 3 (cox-apiserver). The binary already parses its
//! flags so that deployment files and scripts can be written against its final shape.

/// What the binary says when asked to run before the component exists.
pub const NOT_YET: &str =
    "cox-apiserver: not implemented yet; it lands with issue 3 (cox-apiserver)";
