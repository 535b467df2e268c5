//! Certificate revocation lists (RFC 5280 §5): full CRLs per issuing CA, v2, with the CRL number
//! and authority key identifier, entries with reasonCode and invalidityDate.
//!
//! Entries are encoded straight into one buffer (no per-entry allocation), so a CRL of a million
//! entries is built in one pass; the signature is one `Signer::sign` over the TBS.

use cps_hsm::{SigFormat, SignatureAlgorithm, Signer};
use der::{Decode, Encode};

use crate::cert::{signature_algorithm_identifier, x509_time};
use crate::ext::{push_len, tlv};
use crate::{DistinguishedName, PkiError};

const ID_CE_CRL_NUMBER: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x14];
const ID_CE_CRL_REASONS: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x15];
const ID_CE_INVALIDITY_DATE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x18];
const ID_CE_AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x23];
const ID_CE_ISSUING_DISTRIBUTION_POINT: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x1c];

/// RFC 5280 CRLReason codes (value 7 is unused). Also the OCSP `revocationReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, der::Enumerated)]
#[repr(u8)]
pub enum RevocationReason {
    Unspecified = 0,
    KeyCompromise = 1,
    CaCompromise = 2,
    AffiliationChanged = 3,
    Superseded = 4,
    CessationOfOperation = 5,
    CertificateHold = 6,
    RemoveFromCrl = 8,
    PrivilegeWithdrawn = 9,
    AaCompromise = 10,
}

impl RevocationReason {
    pub fn from_code(code: u8) -> Option<Self> {
        use RevocationReason::*;
        Some(match code {
            0 => Unspecified,
            1 => KeyCompromise,
            2 => CaCompromise,
            3 => AffiliationChanged,
            4 => Superseded,
            5 => CessationOfOperation,
            6 => CertificateHold,
            8 => RemoveFromCrl,
            9 => PrivilegeWithdrawn,
            10 => AaCompromise,
            _ => return None,
        })
    }

    /// The names `openssl` and operators use (`keyCompromise`, `certificateHold`, ...).
    pub fn from_name(s: &str) -> Option<Self> {
        use RevocationReason::*;
        Some(match s {
            "unspecified" => Unspecified,
            "keyCompromise" => KeyCompromise,
            "cACompromise" | "caCompromise" => CaCompromise,
            "affiliationChanged" => AffiliationChanged,
            "superseded" => Superseded,
            "cessationOfOperation" => CessationOfOperation,
            "certificateHold" => CertificateHold,
            "removeFromCRL" => RemoveFromCrl,
            "privilegeWithdrawn" => PrivilegeWithdrawn,
            "aACompromise" | "aaCompromise" => AaCompromise,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use RevocationReason::*;
        match self {
            Unspecified => "unspecified",
            KeyCompromise => "keyCompromise",
            CaCompromise => "cACompromise",
            AffiliationChanged => "affiliationChanged",
            Superseded => "superseded",
            CessationOfOperation => "cessationOfOperation",
            CertificateHold => "certificateHold",
            RemoveFromCrl => "removeFromCRL",
            PrivilegeWithdrawn => "privilegeWithdrawn",
            AaCompromise => "aACompromise",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// DER INTEGER content octets (positive, minimal).
    pub serial: Vec<u8>,
    /// Unix seconds.
    pub revocation_time: i64,
    pub reason: Option<RevocationReason>,
    pub invalidity_date: Option<i64>,
}

/// What goes into one CRL.
pub struct CrlParams<'a> {
    pub issuer: &'a DistinguishedName,
    pub issuer_key_id: &'a [u8],
    pub crl_number: u64,
    pub this_update: i64,
    pub next_update: i64,
    pub entries: &'a [CrlEntry],
    /// The URL of a partitioned CRL (RFC 5280 §5.2.5, issuingDistributionPoint, critical): the
    /// CRL then covers only the certificates whose CRL distribution point names this URL.
    /// `None`: a full CRL for every certificate of the issuer.
    pub distribution_point: Option<&'a str>,
}

fn time_der(unix: i64) -> Result<Vec<u8>, PkiError> {
    Ok(x509_time(unix)?.to_der()?)
}

/// GeneralizedTime without fractions, as invalidityDate requires.
fn generalized_time_der(unix: i64) -> Result<Vec<u8>, PkiError> {
    let secs =
        u64::try_from(unix).map_err(|_| PkiError::Params(format!("time {unix} before 1970")))?;
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
    Ok(der::asn1::GeneralizedTime::from_date_time(dt).to_der()?)
}

fn integer_content(bytes: &[u8]) -> Vec<u8> {
    // u64 → minimal positive INTEGER content.
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut v = bytes[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

fn check_serial(s: &[u8]) -> Result<(), PkiError> {
    let ok = !s.is_empty()
        && s.len() <= 21
        && s[0] & 0x80 == 0
        && !(s.len() > 1 && s[0] == 0 && s[1] & 0x80 == 0);
    if ok {
        Ok(())
    } else {
        Err(PkiError::Params(format!(
            "serial {} is not a positive minimal INTEGER",
            hex(s)
        )))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `IssuingDistributionPoint ::= SEQUENCE { distributionPoint [0] { fullName [0] { URI } } }`.
fn issuing_distribution_point(url: &str) -> Result<Vec<u8>, PkiError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || !url.is_ascii() {
        return Err(PkiError::Params(format!(
            "distribution point '{url}' is not an http(s) URL"
        )));
    }
    Ok(tlv(
        0x30,
        &tlv(0xa0, &tlv(0xa0, &tlv(0x86, url.as_bytes()))),
    ))
}

/// Build and sign a v2 CRL (full, or partitioned when `distribution_point` is given); returns
/// its DER.
pub fn build_crl(
    params: &CrlParams<'_>,
    signer: &dyn Signer,
    signature: SignatureAlgorithm,
) -> Result<Vec<u8>, PkiError> {
    if params.next_update <= params.this_update {
        return Err(PkiError::Params(
            "nextUpdate must be later than thisUpdate".into(),
        ));
    }
    let alg = signature_algorithm_identifier(signature)?.to_der()?;
    // Times repeat a lot in large CRLs (batch revocations): cache the last encoding.
    let mut last_time: Option<(i64, Vec<u8>)> = None;
    let mut entries = Vec::with_capacity(params.entries.len() * 48);
    for e in params.entries {
        check_serial(&e.serial)?;
        let mut body = Vec::with_capacity(48);
        body.push(0x02);
        push_len(&mut body, e.serial.len());
        body.extend_from_slice(&e.serial);
        match &last_time {
            Some((t, enc)) if *t == e.revocation_time => body.extend_from_slice(enc),
            _ => {
                let enc = time_der(e.revocation_time)?;
                body.extend_from_slice(&enc);
                last_time = Some((e.revocation_time, enc));
            }
        }
        let mut exts = Vec::new();
        match e.reason {
            // RFC 5280 §5.3.1: reasonCode unspecified SHOULD be absent; removeFromCRL only in delta CRLs.
            None | Some(RevocationReason::Unspecified) => {}
            Some(RevocationReason::RemoveFromCrl) => {
                return Err(PkiError::Params(format!(
                    "serial {}: removeFromCRL does not belong in a full CRL",
                    hex(&e.serial)
                )));
            }
            Some(r) => {
                let value = tlv(0x04, &[0x0a, 0x01, r.code()]);
                exts.extend(tlv(0x30, &[ID_CE_CRL_REASONS, &value].concat()));
            }
        }
        if let Some(d) = e.invalidity_date {
            let value = tlv(0x04, &generalized_time_der(d)?);
            exts.extend(tlv(0x30, &[ID_CE_INVALIDITY_DATE, &value].concat()));
        }
        if !exts.is_empty() {
            body.extend(tlv(0x30, &exts));
        }
        entries.push(0x30);
        push_len(&mut entries, body.len());
        entries.extend_from_slice(&body);
    }

    let aki = tlv(0x04, &tlv(0x30, &tlv(0x80, params.issuer_key_id)));
    let number = tlv(
        0x04,
        &tlv(0x02, &integer_content(&params.crl_number.to_be_bytes())),
    );
    let mut exts = [
        tlv(0x30, &[ID_CE_AUTHORITY_KEY_IDENTIFIER, &aki].concat()),
        tlv(0x30, &[ID_CE_CRL_NUMBER, &number].concat()),
    ]
    .concat();
    if let Some(url) = params.distribution_point {
        exts.extend(tlv(
            0x30,
            &[
                ID_CE_ISSUING_DISTRIBUTION_POINT,
                &[0x01, 0x01, 0xff],
                &tlv(0x04, &issuing_distribution_point(url)?),
            ]
            .concat(),
        ));
    }
    let crl_exts = tlv(0xa0, &tlv(0x30, &exts));

    let mut tbs_body = Vec::with_capacity(entries.len() + 512);
    tbs_body.extend_from_slice(&[0x02, 0x01, 0x01]); // version v2
    tbs_body.extend_from_slice(&alg);
    tbs_body.extend_from_slice(&params.issuer.to_der()?);
    tbs_body.extend_from_slice(&time_der(params.this_update)?);
    tbs_body.extend_from_slice(&time_der(params.next_update)?);
    if !params.entries.is_empty() {
        tbs_body.push(0x30);
        push_len(&mut tbs_body, entries.len());
        tbs_body.extend_from_slice(&entries);
    }
    drop(entries);
    tbs_body.extend_from_slice(&crl_exts);
    let mut tbs = Vec::with_capacity(tbs_body.len() + 8);
    tbs.push(0x30);
    push_len(&mut tbs, tbs_body.len());
    tbs.extend_from_slice(&tbs_body);
    drop(tbs_body);

    let sig = signer.sign(signature, &tbs, SigFormat::Der)?;
    let mut bits = Vec::with_capacity(sig.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&sig);
    let mut body = tbs;
    body.extend_from_slice(&alg);
    body.extend(tlv(0x03, &bits));
    let mut crl = Vec::with_capacity(body.len() + 8);
    crl.push(0x30);
    push_len(&mut crl, body.len());
    crl.extend_from_slice(&body);
    Ok(crl)
}

/// Summary of a CRL, parsed back with x509-cert (used by tests and `cps-trust crl`).
#[derive(Debug, Clone)]
pub struct ParsedCrl {
    pub issuer: DistinguishedName,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub crl_number: Option<u64>,
    /// The URL of the issuingDistributionPoint's full name, for a partitioned CRL.
    pub distribution_point: Option<String>,
    pub entries: Vec<(Vec<u8>, i64, Option<u8>)>,
}

pub fn parse_crl(der_bytes: &[u8]) -> Result<ParsedCrl, PkiError> {
    let crl: x509_cert::crl::CertificateList =
        x509_cert::crl::CertificateList::from_der(der_bytes)?;
    let tbs = &crl.tbs_cert_list;
    let mut crl_number = None;
    let mut distribution_point = None;
    for e in tbs.crl_extensions.iter().flatten() {
        if e.extn_id.as_bytes() == &ID_CE_ISSUING_DISTRIBUTION_POINT[2..] {
            distribution_point = Some(idp_url(e.extn_value.as_bytes()).ok_or_else(|| {
                PkiError::Params("issuingDistributionPoint without a URI full name".into())
            })?);
        }
        if e.extn_id.as_bytes() == &ID_CE_CRL_NUMBER[2..] {
            let n = der::asn1::Uint::from_der(e.extn_value.as_bytes())?;
            let b = n.as_bytes();
            if b.len() <= 8 {
                let mut a = [0u8; 8];
                a[8 - b.len()..].copy_from_slice(b);
                crl_number = Some(u64::from_be_bytes(a));
            }
        }
    }
    let mut entries = Vec::new();
    for r in tbs.revoked_certificates.iter().flatten() {
        let mut reason = None;
        for e in r.crl_entry_extensions.iter().flatten() {
            if e.extn_id.as_bytes() == &ID_CE_CRL_REASONS[2..] {
                reason = e.extn_value.as_bytes().get(2).copied();
            }
        }
        entries.push((
            r.serial_number.as_bytes().to_vec(),
            r.revocation_date.to_unix_duration().as_secs() as i64,
            reason,
        ));
    }
    Ok(ParsedCrl {
        issuer: DistinguishedName::from_rdn_sequence(tbs.issuer.as_ref())?,
        this_update: tbs.this_update.to_unix_duration().as_secs() as i64,
        next_update: tbs
            .next_update
            .map(|t| t.to_unix_duration().as_secs() as i64),
        crl_number,
        distribution_point,
        entries,
    })
}

/// The first URI of an issuingDistributionPoint's full name.
fn idp_url(value: &[u8]) -> Option<String> {
    let seq = der_content(value, 0x30)?;
    let dp = der_content(seq, 0xa0)?; // distributionPoint [0]
    let full = der_content(dp, 0xa0)?; // fullName [0]
    let uri = der_content(full, 0x86)?; // uniformResourceIdentifier [6]
    String::from_utf8(uri.to_vec()).ok()
}

/// The content of the DER element at the start of `b` when its tag is `tag`.
fn der_content(b: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = b.split_first()?;
    let (&l, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = match l {
        0..=0x7f => (usize::from(l), rest),
        0x81..=0x84 => {
            let n = usize::from(l & 0x7f);
            let (lb, rest) = (rest.get(..n)?, rest.get(n..)?);
            (
                lb.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)),
                rest,
            )
        }
        _ => return None,
    };
    rest.get(..len)
}

/// Verify a CRL's signature against the issuer's SPKI.
pub fn verify_crl(der_bytes: &[u8], issuer_spki_der: &[u8]) -> Result<(), PkiError> {
    // Same envelope as a certificate: SEQUENCE { tbs, algorithm, BIT STRING }.
    crate::cert::verify_issued_by(der_bytes, issuer_spki_der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cps_hsm::{KeyAlgorithm, SoftwareSigner};

    fn entries(n: usize) -> Vec<CrlEntry> {
        (0..n)
            .map(|i| CrlEntry {
                serial: integer_content(
                    &(0x4000_0000_0000_0000u64 + i as u64 * 7919).to_be_bytes(),
                ),
                revocation_time: 1_800_000_000 + (i as i64 % 3),
                reason: RevocationReason::from_code([0u8, 1, 4, 5, 6, 9][i % 6]),
                invalidity_date: if i % 10 == 0 {
                    Some(1_799_000_000)
                } else {
                    None
                },
            })
            .collect()
    }

    #[test]
    fn crl_round_trips_and_verifies() {
        let key = SoftwareSigner::generate("ca", KeyAlgorithm::EcP256).unwrap();
        let issuer = DistinguishedName::parse("CN=CA,C=FR").unwrap();
        let list = entries(50);
        let der_crl = build_crl(
            &CrlParams {
                issuer: &issuer,
                issuer_key_id: &[1; 20],
                crl_number: 42,
                this_update: 1_800_000_100,
                next_update: 1_800_086_500,
                entries: &list,
                distribution_point: None,
            },
            &key,
            SignatureAlgorithm::EcdsaSha256,
        )
        .unwrap();
        verify_crl(&der_crl, key.public_key_der()).unwrap();
        let p = parse_crl(&der_crl).unwrap();
        assert_eq!(p.crl_number, Some(42));
        assert_eq!(p.issuer, issuer);
        assert_eq!(p.next_update, Some(1_800_086_500));
        assert_eq!(p.entries.len(), 50);
        for (e, (serial, t, reason)) in list.iter().zip(&p.entries) {
            assert_eq!(&e.serial, serial);
            assert_eq!(e.revocation_time, *t);
            let expect = e
                .reason
                .filter(|r| *r != RevocationReason::Unspecified)
                .map(|r| r.code());
            assert_eq!(expect, *reason);
        }
    }

    #[test]
    fn empty_crl_and_bad_input() {
        let key = SoftwareSigner::generate("ca", KeyAlgorithm::EcP256).unwrap();
        let issuer = DistinguishedName::parse("CN=CA,C=FR").unwrap();
        let params = |entries| CrlParams {
            issuer: &issuer,
            issuer_key_id: &[1; 20],
            crl_number: 1,
            this_update: 1_800_000_000,
            next_update: 1_800_000_100,
            entries,
            distribution_point: None,
        };
        let empty = build_crl(&params(&[]), &key, SignatureAlgorithm::EcdsaSha256).unwrap();
        assert!(parse_crl(&empty).unwrap().entries.is_empty());
        let bad = [CrlEntry {
            serial: vec![0x80],
            revocation_time: 1,
            reason: None,
            invalidity_date: None,
        }];
        assert!(build_crl(&params(&bad), &key, SignatureAlgorithm::EcdsaSha256).is_err());
        let remove = [CrlEntry {
            serial: vec![1],
            revocation_time: 1,
            reason: Some(RevocationReason::RemoveFromCrl),
            invalidity_date: None,
        }];
        assert!(build_crl(&params(&remove), &key, SignatureAlgorithm::EcdsaSha256).is_err());
        assert!(parse_crl(b"garbage").is_err());
    }
}

#[cfg(test)]
mod partition_tests {
    use super::*;
    use cps_hsm::{KeyAlgorithm, SoftwareSigner};

    #[test]
    fn a_partitioned_crl_names_its_distribution_point() {
        let key = SoftwareSigner::generate("ca", KeyAlgorithm::EcP256).unwrap();
        let issuer = DistinguishedName::parse("CN=CA,C=FR").unwrap();
        let url = "https://ca.test/crl/personnes/3.crl";
        let params = |dp| CrlParams {
            issuer: &issuer,
            issuer_key_id: &[1; 20],
            crl_number: 7,
            this_update: 1_800_000_000,
            next_update: 1_800_000_100,
            entries: &[],
            distribution_point: dp,
        };
        let der_crl = build_crl(&params(Some(url)), &key, SignatureAlgorithm::EcdsaSha256).unwrap();
        verify_crl(&der_crl, key.public_key_der()).unwrap();
        let p = parse_crl(&der_crl).unwrap();
        assert_eq!(p.distribution_point.as_deref(), Some(url));
        assert_eq!(p.crl_number, Some(7));
        // Critical, as RFC 5280 §5.2.5 requires.
        let (_, x) = x509_parser::parse_x509_crl(&der_crl).unwrap();
        let idp = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.5.29.28")
            .unwrap();
        assert!(idp.critical);
        let full = build_crl(&params(None), &key, SignatureAlgorithm::EcdsaSha256).unwrap();
        assert_eq!(parse_crl(&full).unwrap().distribution_point, None);
        for bad in ["ldap://x/y", "file:///etc/passwd", "https://é.test/"] {
            assert!(build_crl(&params(Some(bad)), &key, SignatureAlgorithm::EcdsaSha256).is_err());
        }
    }
}
