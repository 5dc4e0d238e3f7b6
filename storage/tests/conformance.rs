//! The conformance suite on both backends: real etcd and the embedded store.

mod etcd {
    storage::conformance_tests!(storage::testing::etcd_fixture);
}

mod embedded {
    storage::conformance_tests!(storage::testing::embedded_fixture);
}
