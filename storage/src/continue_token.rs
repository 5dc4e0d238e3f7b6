//! Continue tokens for paged lists.
//!
//! The format is upstream's (`base64({"v":"meta.k8s.io/v1","rv":N,"start":"<key>"})`, with
//! `start` relative to the list's prefix) so a token looks familiar to anyone debugging, and so
//! a token can never be used to read outside the prefix it was issued for: the key is always
//! re-joined to the prefix of the request presenting it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{Error, Revision};

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

/// Encodes a token: the next page starts at key `next_key` (inclusive) and reads `revision`.
pub(crate) fn encode(prefix: &str, next_key: &str, revision: Revision) -> String {
    let start = next_key.strip_prefix(prefix).unwrap_or(next_key);
    let token = Token {
        v: TOKEN_VERSION.into(),
        rv: revision as i64,
        start: start.into(),
    };
    // Serializing a struct of strings and an integer cannot fail.
    STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token into (the full key to start at, the revision to read).
pub(crate) fn decode(prefix: &str, token: &str) -> Result<(String, Revision), Error> {
    let bad = |why: &str| Error::InvalidContinue(why.to_owned());
    let bytes = STANDARD.decode(token).map_err(|_| bad("not base64"))?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad("not a continue token"))?;
    if token.v != TOKEN_VERSION {
        return Err(bad("unknown token version"));
    }
    if token.rv <= 0 {
        return Err(bad("revision must be positive"));
    }
    // `..` segments would let a token climb out of the prefix on a path-based store.
    if token.start.split('/').any(|seg| seg == "..") {
        return Err(bad("start key escapes the prefix"));
    }
    Ok((format!("{prefix}{}", token.start), token.rv as Revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_relative_to_prefix() {
        let t = encode("/registry/core/pods/", "/registry/core/pods/ns/b\0", 42);
        let (key, rev) = decode("/registry/core/pods/", &t).unwrap();
        assert_eq!(key, "/registry/core/pods/ns/b\0");
        assert_eq!(rev, 42);
        // The same token presented for another prefix stays inside that prefix.
        let (key, _) = decode("/registry/core/secrets/", &t).unwrap();
        assert!(key.starts_with("/registry/core/secrets/"));
    }

    #[test]
    fn rejects_garbage() {
        for t in ["", "!!!", "e30=", "eyJ2IjoieCIsInJ2IjoxLCJzdGFydCI6IiJ9"] {
            assert!(matches!(decode("/p/", t), Err(Error::InvalidContinue(_))));
        }
    }
}
