//! kubeconfig files for the cluster's clients (kubectl, scheduler, controller manager, nodes).

use std::path::Path;

use base64::Engine as _;

use crate::cluster::write_file;
use crate::{CertKey, ClusterPki, Error};

/// The name of the cluster and context entries in every kubeconfig we write.
pub const KUBECONFIG_NAME: &str = "coxswain";

/// How a kubeconfig user authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Credentials<'a> {
    /// A client certificate and key, embedded as `client-certificate-data`/`client-key-data`.
    ClientCert(&'a CertKey),
    /// A bearer token.
    Token(&'a str),
}

/// Renders a kubeconfig (YAML) with one cluster, one user and one context, the context
/// current and defaulting to namespace `default`. Everything is embedded (base64 PEM), so
/// the file works on its own wherever it is copied.
///
/// Scalars are written as JSON strings, which YAML reads as double-quoted scalars: names
/// such as `system:node:worker-1` contain `:` and must not be left to plain-scalar rules.
pub fn kubeconfig(
    server_url: &str,
    ca_pem: &str,
    user_name: &str,
    credentials: Credentials<'_>,
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let name = q(KUBECONFIG_NAME);
    let user = q(user_name);
    let user_fields = match credentials {
        Credentials::ClientCert(ck) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ck.cert_pem),
            b64(&ck.key_pem)
        ),
        Credentials::Token(token) => format!("    token: {}\n", q(token)),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         preferences: {{}}\n\
         clusters:\n\
         - name: {name}\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  \
           user:\n\
         {user_fields}\
         contexts:\n\
         - name: {name}\n  \
           context:\n    \
             cluster: {name}\n    \
             user: {user}\n    \
             namespace: \"default\"\n\
         current-context: {name}\n",
        server = q(server_url),
        ca = b64(ca_pem),
    )
}

impl ClusterPki {
    /// Writes a kubeconfig for `who` (a client certificate from this PKI) to `path`, mode
    /// 0600 because it embeds the private key.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        who: &CertKey,
        user_name: &str,
    ) -> Result<(), Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let text = kubeconfig(
            server_url,
            self.ca.cert_pem(),
            user_name,
            Credentials::ClientCert(who),
        );
        write_file(path, &text, 0o600)
    }
}
