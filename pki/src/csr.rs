//! PKCS#10 certificate signing requests: generating one for a node's client key, reading what
//! one asks for (the API server validates `spec.request`, csrapproving checks the subject),
//! and signing one with the cluster CA (csrsigning).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;

use crate::ca::{add, backdated, pem_encode, random_serial, set_validity};
use crate::{der, Ca, Error};

/// What a certificate signing request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrInfo {
    /// The subject's commonName (empty if absent).
    pub common_name: String,
    /// Every organizationName of the subject, in order.
    pub organizations: Vec<String>,
    /// Requested DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// Requested IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Requested email subject alternative names.
    pub email_addresses: Vec<String>,
    /// Requested URI subject alternative names.
    pub uris: Vec<String>,
}

fn request_der(csr_pem: &str) -> Result<Vec<u8>, Error> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| Error::pem("certificate request", e))?;
    Ok(der.as_ref().to_vec())
}

/// Parses a PEM `CERTIFICATE REQUEST` and checks its self-signature (the requester holds the
/// key), returning what it asks for.
pub fn parse_csr(csr_pem: &str) -> Result<CsrInfo, Error> {
    let der = request_der(csr_pem)?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| Error::pem("certificate request", e))?;
    csr.verify_signature()
        .map_err(|e| Error::pem("certificate request", format!("bad signature: {e}")))?;
    let info = &csr.certification_request_info;
    let attr = |v: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        v.as_str().map(str::to_string).unwrap_or_default()
    };
    let mut out = CsrInfo {
        common_name: info
            .subject
            .iter_common_name()
            .next()
            .map(attr)
            .unwrap_or_default(),
        organizations: info.subject.iter_organization().map(attr).collect(),
        ..CsrInfo::default()
    };
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                use x509_parser::extensions::GeneralName;
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => out.dns_names.push((*d).to_string()),
                        GeneralName::RFC822Name(e) => out.email_addresses.push((*e).to_string()),
                        GeneralName::URI(u) => out.uris.push((*u).to_string()),
                        GeneralName::IPAddress(b) => {
                            if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                                out.ip_addresses.push(IpAddr::from(v4));
                            } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                                out.ip_addresses.push(IpAddr::from(v6));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A fresh ECDSA P-256 key and a PEM CSR for it with subject `CN=<common_name>, O=<org>`
/// (one O at most: rcgen keeps one value per attribute type). Returns `(csr_pem, key_pem)`.
pub fn generate_csr(
    common_name: &str,
    organization: Option<&str>,
) -> Result<(String, String), Error> {
    if common_name.is_empty() {
        return Err(Error::InvalidName {
            name: String::new(),
            reason: "a client certificate needs a common name (the user name)",
        });
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Checks a PEM client certificate against the CA(s) in `ca_pem` as the API server would at
/// time `at` (signed by the CA, valid then, clientAuth) and returns whom it names. A node
/// uses it to decide whether the certificate it holds is still worth using.
pub fn client_identity(
    ca_pem: &str,
    cert_pem: &str,
    at: SystemTime,
) -> Result<crate::CertIdentity, Error> {
    let chain = crate::ca::cert_chain(cert_pem)?;
    crate::ClientCertVerifier::new(ca_pem)?.verify(&chain, at)
}

impl Ca {
    /// Signs a PEM CSR as a client certificate (digitalSignature, keyEncipherment, clientAuth),
    /// valid for `validity` from now (backdated like every leaf), as the
    /// `kubernetes.io/kube-apiserver-client[-kubelet]` signers issue them. The subject (every
    /// O included) and the subject alternative names are the request's; extensions the
    /// request asks for otherwise are not trusted. Returns the certificate PEM.
    pub fn sign_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, Error> {
        let der = request_der(csr_pem)?;
        let (_, parsed) = X509CertificationRequest::from_der(&der)
            .map_err(|e| Error::pem("certificate request", e))?;
        let subject = parsed.certification_request_info.subject.as_raw().to_vec();
        let request = CertificateSigningRequestParams::from_der(&der.as_slice().into())
            .map_err(|e| Error::pem("certificate request", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = request.params.distinguished_name.clone();
        params.subject_alt_names = request
            .params
            .subject_alt_names
            .iter()
            .filter(|s| !matches!(s, SanType::OtherName(_)))
            .cloned()
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        set_validity(&mut params, backdated(now)?, add(now, validity)?)?;
        let signing = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        let cert = signing.signed_by(self.issuer())?;
        let cert_der = der::replace_subject(cert.der(), &subject, self.issuer().key())?;
        Ok(pem_encode("CERTIFICATE", &cert_der))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_and_sign() {
        let ca = Ca::generate("test-ca").unwrap();
        let (csr, key) = generate_csr("system:node:n1", Some("system:nodes")).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.contains("PRIVATE KEY"));
        let info = parse_csr(&csr).unwrap();
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, ["system:nodes"]);
        let cert = ca.sign_csr(&csr, Duration::from_secs(3600)).unwrap();
        let verifier = crate::ClientCertVerifier::new(ca.cert_pem()).unwrap();
        let der = crate::ca::first_cert_der(&cert).unwrap();
        let id = verifier.verify(&[der], SystemTime::now()).unwrap();
        assert_eq!(id.common_name, "system:node:n1");
        assert_eq!(id.organizations, ["system:nodes"]);
        // The certificate is for the CSR's key.
        let cert_der = crate::ca::first_cert_der(&cert).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(cert_der.as_ref()).unwrap();
        let key = KeyPair::from_pem(&key).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(x509.public_key().raw, key.subject_public_key_info());
        assert!(!x509.is_ca());
        let id = client_identity(ca.cert_pem(), &cert, SystemTime::now()).unwrap();
        assert_eq!(id.common_name, "system:node:n1");
        let later = SystemTime::now() + Duration::from_secs(7200);
        assert!(client_identity(ca.cert_pem(), &cert, later).is_err());
        let other = Ca::generate("other").unwrap();
        assert!(client_identity(other.cert_pem(), &cert, SystemTime::now()).is_err());
        let validity =
            x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
        assert_eq!(validity, 3600 + 300);
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(parse_csr("").is_err());
        assert!(parse_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
        .is_err());
        let ca = Ca::generate("test-ca").unwrap();
        assert!(ca.sign_csr("garbage", Duration::from_secs(60)).is_err());
        // A certificate is not a request.
        assert!(parse_csr(ca.cert_pem()).is_err());
        assert!(generate_csr("", None).is_err());
    }
}
