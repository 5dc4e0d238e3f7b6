//! OpenAPI v2/v3 documents generated from the Kubernetes types, and strategic merge, JSON and merge patch.
