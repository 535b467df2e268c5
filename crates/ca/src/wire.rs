//! The CA's records as the API's wire types ([`cps_api`]) and the API's requests as the CA's.
//! Each conversion destructures its source completely, so a field added on either side does not
//! compile until the conversion says what becomes of it; the answers stay byte-identical.

use cps_api as w;
use cps_pki::crl::RevocationReason;
use cps_store::{CertStatus, CertificateRecord};

use crate::SubjectRequest;

/// A certificate as the API shows it.
pub fn certificate_view(r: &CertificateRecord) -> w::CertificateView {
    let (status, time, reason) = match &r.status {
        CertStatus::Valid => ("valid".to_string(), None, None),
        CertStatus::Revoked { time, reason, .. } => {
            let name = RevocationReason::from_code(*reason).map(|x| x.name().to_string());
            let st = if *reason == 6 { "on-hold" } else { "revoked" };
            (st.to_string(), Some(*time), name)
        }
    };
    w::CertificateView {
        ca: r.issuer.clone(),
        serial: hex::encode_upper(&r.serial),
        subject: r.subject.clone(),
        profile: r.profile.clone(),
        holder: r.holder.clone(),
        not_before: r.not_before,
        not_after: r.not_after,
        status,
        revocation_time: time,
        revocation_reason: reason,
        pem: cps_pki::pem_encode("CERTIFICATE", &r.der),
    }
}

/// An organisation's identity from the API's subject.
pub fn organisation_identity(o: w::OrganisationSubject) -> cps_pki::OrganisationIdentity {
    let w::OrganisationSubject {
        state,
        name,
        structure_id,
        common_name,
    } = o;
    cps_pki::OrganisationIdentity {
        state,
        name,
        structure_id,
        common_name,
    }
}

/// The CA's subject request from the API's.
impl From<w::SubjectRequest> for SubjectRequest {
    fn from(s: w::SubjectRequest) -> SubjectRequest {
        match s {
            w::SubjectRequest::Person(w::PersonSubject {
                idnat_ps,
                surname,
                given_name,
                profession_code,
            }) => SubjectRequest::Person(cps_pki::PersonIdentity {
                idnat_ps,
                surname,
                given_name,
                profession_code,
            }),
            w::SubjectRequest::Organisation(o) => {
                SubjectRequest::Organisation(organisation_identity(o))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subject requests the CA took before read the same through the API's types.
    #[test]
    fn subject_requests_convert_to_the_ca_s() {
        let org = r#"{"state":"s","name":"n","structure_id":"1","common_name":"c"}"#;
        for subject in [
            format!(r#"{{"organisation":{org}}}"#),
            r#"{"person":{"idnat_ps":"8","surname":"a","given_name":"b","profession_code":"10"}}"#
                .into(),
        ] {
            let direct: SubjectRequest = serde_json::from_str(&subject).unwrap();
            let via: w::SubjectRequest = serde_json::from_str(&subject).unwrap();
            assert_eq!(
                serde_json::to_string(&direct).unwrap(),
                serde_json::to_string(&SubjectRequest::from(via)).unwrap()
            );
        }
    }

    fn record(status: CertStatus) -> CertificateRecord {
        CertificateRecord {
            issuer: "personnes".into(),
            serial: vec![0x01, 0xAB],
            subject: "CN=x".into(),
            profile: "cps-auth".into(),
            holder: Some("810002813839".into()),
            spki_sha256: [0; 32],
            not_before: 1,
            not_after: 2,
            der: vec![0x30, 0x00],
            status,
            issued_at: 1,
        }
    }

    /// Valid, on hold (certificateHold, code 6) and revoked certificates as the API shows them.
    #[test]
    fn certificate_views_name_the_status_and_the_reason() {
        let v = certificate_view(&record(CertStatus::Valid));
        assert_eq!((v.serial.as_str(), v.status.as_str()), ("01AB", "valid"));
        assert_eq!((v.revocation_time, v.revocation_reason), (None, None));
        assert!(v.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let held = certificate_view(&record(CertStatus::Revoked {
            time: 5,
            reason: 6,
            invalidity_date: None,
        }));
        assert_eq!(held.status, "on-hold");
        assert_eq!(held.revocation_time, Some(5));
        assert_eq!(held.revocation_reason.as_deref(), Some("certificateHold"));
        let gone = certificate_view(&record(CertStatus::Revoked {
            time: 7,
            reason: 1,
            invalidity_date: None,
        }));
        assert_eq!(gone.status, "revoked");
        assert_eq!(gone.revocation_reason.as_deref(), Some("keyCompromise"));
    }
}
