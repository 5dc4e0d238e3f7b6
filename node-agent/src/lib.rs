//! the node agent of Coxswain.
//!
//! Nothing is here yet: the component lands with issue 6 (cox-node-agent). The binary already parses its
//! flags so that deployment files and scripts can be written against its final shape.

/// What the binary says when asked to run before the component exists.
pub const NOT_YET: &str =
    "cox-node-agent: not implemented yet; it lands with issue 6 (cox-node-agent)";
