//! Admission policy (placeholder).
