//! Minimal DER surgery for certificate subjects.
//!
//! rcgen's `DistinguishedName` keeps at most one value per attribute type, but Kubernetes
//! maps *every* Organization (O) attribute of a client certificate to a group, so a user in
//! two groups needs a subject with two O attributes. Rather than hand-roll all of X.509, we
//! let rcgen build and sign the certificate, then swap the subject Name for one we encode
//! ourselves and re-sign the to-be-signed part with the same issuer key. Only the outer
//! structure (Certificate, TBSCertificate up to the subject) is walked, so this stays small.

use rcgen::SigningKey;

use crate::Error;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_OID: u8 = 0x06;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_VERSION: u8 = 0xa0;

/// DER content of OID 2.5.4.3 (commonName).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// DER content of OID 2.5.4.10 (organizationName).
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// One parsed TLV: its tag, the whole encoding, and its content.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::Certificate(format!("malformed DER: {what}"))
}

/// Reads one TLV off the front of `input`, returning it and the remaining bytes.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Error> {
    let (&tag, after_tag) = input.split_first().ok_or_else(|| malformed("empty"))?;
    let (&first, after_len) = after_tag
        .split_first()
        .ok_or_else(|| malformed("missing length"))?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return Err(malformed("bad length"));
        }
        let len = after_len[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &after_len[n..])
    };
    if body.len() < len {
        return Err(malformed("truncated"));
    }
    let header_len = input.len() - body.len();
    let (whole, rest) = input.split_at(header_len + len);
    Ok((
        Tlv {
            tag,
            whole,
            content: &body[..len],
        },
        rest,
    ))
}

/// Encodes a TLV with a definite DER length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Truncation is impossible: len < 0x80.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

fn attribute(oid: &[u8], value: &str) -> Vec<u8> {
    let mut atv = tlv(TAG_OID, oid);
    atv.extend(tlv(TAG_UTF8_STRING, value.as_bytes()));
    tlv(TAG_SET, &tlv(TAG_SEQUENCE, &atv))
}

/// Encodes a subject Name: one RDN per organization, then the common name (the order Go's
/// crypto/x509 uses, so `openssl x509 -subject` prints what kubeadm's certs would).
pub(crate) fn subject_name(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for org in organizations {
        rdns.extend(attribute(OID_ORGANIZATION, org));
    }
    rdns.extend(attribute(OID_COMMON_NAME, common_name));
    tlv(TAG_SEQUENCE, &rdns)
}

/// Returns `cert_der` with its subject replaced by `subject_der`, re-signed by `issuer_key`
/// (which must be the key that signed `cert_der`, so the signature algorithm stays right).
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject_der: &[u8],
    issuer_key: &impl SigningKey,
) -> Result<Vec<u8>, Error> {
    let (cert, rest) = read_tlv(cert_der)?;
    if cert.tag != TAG_SEQUENCE || !rest.is_empty() {
        return Err(malformed("certificate is not one SEQUENCE"));
    }
    let (tbs, after_tbs) = read_tlv(cert.content)?;
    let (sig_alg, _) = read_tlv(after_tbs)?;
    if tbs.tag != TAG_SEQUENCE || sig_alg.tag != TAG_SEQUENCE {
        return Err(malformed("unexpected certificate layout"));
    }

    // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, …
    let mut cursor = tbs.content;
    let (first, after_first) = read_tlv(cursor)?;
    if first.tag == TAG_VERSION {
        cursor = after_first;
    }
    for _ in 0..4 {
        cursor = read_tlv(cursor)?.1;
    }
    let (subject, after_subject) = read_tlv(cursor)?;
    if subject.tag != TAG_SEQUENCE {
        return Err(malformed("subject is not a SEQUENCE"));
    }
    let prefix_len = tbs.content.len() - cursor.len();

    let mut tbs_content = Vec::with_capacity(tbs.content.len() + subject_der.len());
    tbs_content.extend_from_slice(&tbs.content[..prefix_len]);
    tbs_content.extend_from_slice(subject_der);
    tbs_content.extend_from_slice(after_subject);
    let new_tbs = tlv(TAG_SEQUENCE, &tbs_content);

    let signature = issuer_key.sign(&new_tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&signature);

    let mut body = new_tbs;
    body.extend_from_slice(sig_alg.whole);
    body.extend(tlv(TAG_BIT_STRING, &bits));
    Ok(tlv(TAG_SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(TAG_SEQUENCE, &content);
            let (parsed, rest) = read_tlv(&enc).unwrap();
            assert!(rest.is_empty());
            assert_eq!(parsed.content.len(), len);
            assert_eq!(parsed.whole, &enc[..]);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(read_tlv(&[]).is_err());
        assert!(read_tlv(&[0x30]).is_err());
        assert!(read_tlv(&[0x30, 0x05, 1]).is_err());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }
}
