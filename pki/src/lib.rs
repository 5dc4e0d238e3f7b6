//! Cluster PKI (placeholder; filled by issue 7 work).
