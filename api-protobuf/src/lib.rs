//! Decoding of Kubernetes protobuf request bodies (the k8s envelope) into JSON objects.
