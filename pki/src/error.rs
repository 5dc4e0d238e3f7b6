//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while creating, loading or checking cluster PKI material.
///
/// Variants keep the underlying library error so callers can log the real cause; messages
/// say what was being attempted, because "invalid PEM" alone does not say which file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate or key generation/signing failed inside rcgen.
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),

    /// A rustls configuration or verification error.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),

    /// Reading or writing a PKI file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// PEM input had no usable item of the expected kind, or could not be decoded.
    #[error("invalid PEM ({what}): {detail}")]
    Pem {
        /// What the PEM was supposed to contain (e.g. "certificate", "private key").
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },

    /// A certificate could not be parsed as X.509.
    #[error("invalid certificate: {0}")]
    Certificate(String),

    /// A name (node name, common name) that cannot be used safely, e.g. one that would
    /// escape the PKI directory when used as a file name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A validity period that cannot be represented (before 1970 or overflowing).
    #[error("invalid validity period: {0}")]
    Validity(&'static str),

    /// The client presented no certificate.
    #[error("no client certificate presented")]
    NoClientCertificate,

    /// The client certificate chain does not verify against the trusted CA(s).
    #[error("client certificate rejected: {0}")]
    UntrustedClientCertificate(rustls::Error),

    /// The client certificate verified but carries no common name, so it names no user.
    #[error("client certificate has an empty common name")]
    EmptyCommonName,

    /// A signing key that the JWT library refused (wrong type or encoding).
    #[error("service account key: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn pem(what: &'static str, detail: impl ToString) -> Self {
        Error::Pem {
            what,
            detail: detail.to_string(),
        }
    }
}
