//! Audit policy and events (placeholder).
