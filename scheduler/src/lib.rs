//! the scheduler of Coxswain.
//!
//! Nothing is here yet: the component lands with issue 4 (cox-scheduler). The binary already parses its
//! flags so that deployment files and scripts can be written against its final shape.

/// What the binary says when asked to run before the component exists.
pub const NOT_YET: &str =
    "cox-scheduler: not implemented yet; it lands with issue 4 (cox-scheduler)";
