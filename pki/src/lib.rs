//! Cluster PKI for Coxswain: the cluster CA and the certificates kube-apiserver's peers use,
//! rustls configurations that authenticate clients the way kube-apiserver does (request a
//! client certificate, verify it after the handshake so a bad one yields 401 rather than a
//! TLS alert), kubeconfig rendering, and ServiceAccount token signing.
//!
//! One crypto provider everywhere: ring, passed explicitly, never the process default.

mod ca;
mod cluster;
mod csr;
mod der;
mod error;
mod kubeconfig;
mod tls;
mod token;

pub use ca::{Ca, CertKey, CA_VALIDITY};
pub use cluster::{ensure, ClusterPki, PkiOptions, LEAF_VALIDITY};
pub use csr::{client_identity, generate_csr, parse_csr, CsrInfo};
pub use error::Error;
pub use kubeconfig::{kubeconfig, Credentials, KUBECONFIG_NAME};
pub use tls::{
    client_config, insecure_client_config, server_config, CertIdentity, ClientCertVerifier,
};
pub use token::{
    key_id, Claims, KubernetesClaims, ObjectRef, TokenError, TokenSigner, TokenVerifier,
    TOKEN_LEEWAY_SECONDS,
};
