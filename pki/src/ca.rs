//! The cluster certificate authority and the leaf certificates it issues.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use crate::{der, Error};

/// How far leaf and CA certificates are backdated, so a peer whose clock is a little behind
/// ours does not reject a certificate we just issued as "not yet valid" (kubeadm does the same).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The CA lives for ten years, like kubeadm's: rotating it means redistributing every
/// kubeconfig, so it should outlive the leaf certificates by far.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM encoded.
    pub key_pem: String,
}

impl fmt::Debug for CertKey {
    /// Never prints the private key: these structs end up in logs via `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A certificate authority: its certificate and key, ready to sign leaf certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    /// Never prints the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new self-signed CA (ECDSA P-256, valid ten years).
    pub fn generate(common_name: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        set_validity(&mut params, backdated(now)?, add(now, CA_VALIDITY)?)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA, checking that the key belongs to the certificate and that the
    /// certificate is a CA: a mismatched pair would issue certificates nobody can verify.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::pem("CA private key", e))?;
        let der = first_cert_der(cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::Certificate(
                "CA private key does not match the CA certificate".into(),
            ));
        }
        if !x509.is_ca() {
            return Err(Error::Certificate(
                "certificate is not a CA (basicConstraints CA:FALSE or missing)".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM encoded (what clients put in their trust store).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM encoded.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA as an rcgen issuer, for callers that need certificate shapes not offered here.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Issues a TLS server certificate (serverAuth) for the given DNS names and IPs.
    pub fn issue_serving(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<CertKey, Error> {
        let mut params = leaf_params(common_name)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in dns_names {
            let ia5 = name.clone().try_into().map_err(|_| Error::InvalidName {
                name: name.clone(),
                reason: "DNS names must be ASCII",
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let now = SystemTime::now();
        set_validity(&mut params, backdated(now)?, add(now, validity)?)?;
        self.sign(params, None)
    }

    /// Issues a TLS client certificate (clientAuth): Kubernetes reads the CN as the user name
    /// and every O as a group.
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[String],
        validity: Duration,
    ) -> Result<CertKey, Error> {
        let now = SystemTime::now();
        self.issue_client_with_validity(
            common_name,
            organizations,
            backdated(now)?,
            add(now, validity)?,
        )
    }

    /// Like [`Ca::issue_client`] with an explicit validity window; exists so tests can make
    /// expired or not-yet-valid certificates.
    pub fn issue_client_with_validity(
        &self,
        cn: &str,
        orgs: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertKey, Error> {
        if cn.is_empty() {
            return Err(Error::InvalidName {
                name: String::new(),
                reason: "a client certificate needs a common name (the user name)",
            });
        }
        let mut params = leaf_params(cn)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let custom_subject = match orgs {
            [] => None,
            [org] => {
                // rcgen keeps insertion order: O before CN, as Go's crypto/x509 writes it.
                let mut dn = DistinguishedName::new();
                dn.push(DnType::OrganizationName, org.as_str());
                dn.push(DnType::CommonName, cn);
                params.distinguished_name = dn;
                None
            }
            _ => Some(der::subject_name(cn, orgs)),
        };
        set_validity(&mut params, not_before, not_after)?;
        self.sign(params, custom_subject)
    }

    /// Signs `params` with a fresh P-256 key; `subject` (DER Name), if given, replaces the
    /// subject rcgen wrote, for names rcgen cannot express (several O attributes).
    fn sign(
        &self,
        mut params: CertificateParams,
        subject: Option<Vec<u8>>,
    ) -> Result<CertKey, Error> {
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = match subject {
            None => cert.pem(),
            Some(subject) => {
                let der = der::replace_subject(cert.der(), &subject, self.issuer.key())?;
                pem_encode("CERTIFICATE", &der)
            }
        };
        Ok(CertKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

fn leaf_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Random positive 128-bit serial: serials must be unique per issuer, and rcgen's default
/// (a hash of the public key) would repeat if a key were ever reused.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    // A leading zero byte would be stripped and is harmless; make the value non-zero.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn backdated(now: SystemTime) -> Result<SystemTime, Error> {
    now.checked_sub(BACKDATE)
        .ok_or(Error::Validity("clock before the epoch"))
}

pub(crate) fn add(now: SystemTime, validity: Duration) -> Result<SystemTime, Error> {
    now.checked_add(validity)
        .ok_or(Error::Validity("validity overflows"))
}

pub(crate) fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), Error> {
    if not_after <= not_before {
        return Err(Error::Validity("not_after must be later than not_before"));
    }
    if not_before < SystemTime::UNIX_EPOCH {
        return Err(Error::Validity("not_before is before 1970"));
    }
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(())
}

/// PEM-encodes DER with 64-column lines (RFC 7468), as every tool expects.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first certificate in a PEM bundle.
pub(crate) fn first_cert_der(cert_pem: &str) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| Error::pem("certificate", e))
}

/// Every certificate in a PEM bundle (at least one).
pub(crate) fn cert_chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::pem("certificate", e))?;
    if certs.is_empty() {
        return Err(Error::pem("certificate", "no CERTIFICATE block found"));
    }
    Ok(certs)
}
