//! Admission policy as pure functions: Pod Security Admission, LimitRanger and ResourceQuota
//! arithmetic.
//!
//! Nothing here does I/O or awaits: the API server looks up namespaces, LimitRanges and quotas
//! and applies the outcome (rejection, mutation, status update), so these rules can be tested
//! exhaustively against upstream's exact messages without a cluster.

pub mod limit_ranger;
pub mod pod_security;
pub mod quota;
pub mod resources;
