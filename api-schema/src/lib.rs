//! OpenAPI v2/v3 documents generated from the Kubernetes types, and strategic merge, JSON and
//! merge patch.
//!
//! kubectl cannot `apply`, `create -f` or `replace` without OpenAPI: its default
//! `--validate=strict` looks up each kind's PATCH operation in `/openapi/v3` (and, for
//! `kind: List` manifests, validates against the protobuf `/openapi/v2`); `kubectl explain`
//! reads the schemas. [`OpenApi::build`] generates all of these once, from k8s-openapi's
//! schemas of every kind in [`api_types::resources::RESOURCES`], completed with the
//! `x-kubernetes-*` extensions upstream publishes.
//!
//! The same schemas drive [`OpenApi::strategic_merge_patch`], so the merge keys the server
//! merges lists by are exactly the ones kubectl reads from the documents to compute its
//! patches.

#![deny(missing_docs)]

mod definitions;
pub mod gnostic;
mod patch;
mod paths;
mod schema_ext;
mod v2;
mod v3;

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

pub use patch::{json_patch, merge_patch, PatchError};

use definitions::Definitions;
use patch::PatchSchema;

/// The `Content-Type` of the protobuf `/openapi/v2` document, as upstream sends it.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Every OpenAPI document the API server serves, built once at start.
pub struct OpenApi {
    v3_index: Vec<u8>,
    /// Index key (`api/v1`, `apis/apps/v1`) → (document, hash).
    v3_docs: BTreeMap<String, (Vec<u8>, String)>,
    v2_json: Vec<u8>,
    v2_protobuf: Vec<u8>,
    v2_hash: String,
    patch_schema: PatchSchema,
}

/// Upper-case hex SHA-512, the hash upstream puts in `/openapi/v3` URLs and ETags.
fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

impl OpenApi {
    /// Builds every document for the served resources. Called once at API-server start.
    pub fn build() -> Self {
        let defs = Definitions::build();
        let mut v3_docs = BTreeMap::new();
        let mut all_items = Vec::new();
        for (group, versions) in api_types::resources::groups() {
            for version in versions {
                let items = paths::group_version_paths(&defs, group, version);
                let doc = v3::document(&defs, &items);
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = content_hash(&bytes);
                v3_docs.insert(paths::v3_key(group, version), (bytes, hash));
                all_items.extend(items);
            }
        }
        let index: Map<String, Value> = v3_docs
            .iter()
            .map(|(key, (_, hash))| {
                (
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
                )
            })
            .collect();
        let v3_index = serde_json::to_vec(&json!({"paths": index})).unwrap_or_default();

        let v2_doc = v2::document(&defs, &all_items);
        let v2_json = serde_json::to_vec(&v2_doc).unwrap_or_default();
        let v2_hash = content_hash(&v2_json);
        let v2_protobuf = gnostic::document(&v2_doc).encode_to_vec();

        OpenApi {
            v3_index,
            v3_docs,
            v2_json,
            v2_protobuf,
            v2_hash,
            patch_schema: PatchSchema::build(&defs),
        }
    }

    /// `/openapi/v3` index:
    /// `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=<HEX>"},"apis/apps/v1":{...}}}`
    /// (keys without leading slash) as JSON bytes.
    pub fn v3_index(&self) -> &[u8] {
        &self.v3_index
    }

    /// The v3 document of one group-version, keyed as in the index (`api/v1`,
    /// `apis/apps/v1`; a leading or trailing `/` is tolerated), with its hash: upper-case hex
    /// SHA-512 of the document, so it changes whenever the content does.
    pub fn v3_document(&self, key: &str) -> Option<(&[u8], &str)> {
        self.v3_docs
            .get(key.trim_matches('/'))
            .map(|(doc, hash)| (doc.as_slice(), hash.as_str()))
    }

    /// The index keys of every v3 document, in order.
    pub fn v3_keys(&self) -> impl Iterator<Item = &str> {
        self.v3_docs.keys().map(String::as_str)
    }

    /// The swagger 2.0 document (`/openapi/v2`) as JSON.
    pub fn v2_json(&self) -> &[u8] {
        &self.v2_json
    }

    /// The swagger 2.0 document as gnostic's `openapi.v2.Document` protobuf, which kubectl
    /// requests with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`
    /// (it needs it to validate `kind: List` manifests). Serve it with
    /// [`V2_PROTOBUF_CONTENT_TYPE`].
    pub fn v2_protobuf(&self) -> &[u8] {
        &self.v2_protobuf
    }

    /// The ETag-able hash of the v2 document (upper-case hex SHA-512 of its JSON form; the
    /// protobuf form is derived from it, so one hash covers both).
    pub fn v2_hash(&self) -> &str {
        &self.v2_hash
    }

    /// Applies a strategic merge patch to an object of the given kind, with the patch
    /// metadata (`x-kubernetes-patch-strategy`, `-patch-merge-key`) the documents publish. For
    /// kinds without a schema, maps merge and lists are replaced (JSON merge patch semantics)
    /// while directives are still honoured.
    pub fn strategic_merge_patch(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        original: &Value,
        patch: &Value,
    ) -> Result<Value, PatchError> {
        self.patch_schema
            .apply(group, version, kind, original, patch)
    }

    /// Whether strategic merge patch knows the kind's schema (upstream refuses strategic merge
    /// patches for kinds it has no Go type for, such as custom resources).
    pub fn has_patch_schema(&self, group: &str, version: &str, kind: &str) -> bool {
        self.patch_schema.knows(group, version, kind)
    }
}

#[cfg(test)]
mod tests;
