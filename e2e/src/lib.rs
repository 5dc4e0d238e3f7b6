//! End-to-end tests of Coxswain as a user meets it: real binaries, real etcd, real containerd
//! and the real `kubectl`.
//!
//! Empty until the API server lands (issue 3); the scenarios live in `tests/` of this crate.
