//! The purposes of a signature (ASTM E1762, code system `1.2.840.10065.1.12.1`) and the DSG
//! signature policies.

/// Why a document is signed: the 18 signature purposes of ASTM E1762, carried in
/// `CommitmentTypeIndication` as `urn:oid:1.2.840.10065.1.12.1.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// 1: the author's signature.
    Author,
    /// 2: a co-author's signature.
    CoAuthor,
    /// 3: a co-participant's signature.
    CoParticipant,
    /// 4: the transcriptionist's signature.
    Transcriptionist,
    /// 5: verification.
    Verification,
    /// 6: validation.
    Validation,
    /// 7: consent.
    Consent,
    /// 8: signature witness.
    SignatureWitness,
    /// 9: event witness.
    EventWitness,
    /// 10: identity witness.
    IdentityWitness,
    /// 11: consent witness.
    ConsentWitness,
    /// 12: interpreter.
    Interpreter,
    /// 13: review.
    Review,
    /// 14: source (the usual purpose of a structure's seal over what its software sends).
    Source,
    /// 15: addendum.
    Addendum,
    /// 16: modification.
    Modification,
    /// 17: administrative (error/edit).
    Administrative,
    /// 18: timestamp.
    Timestamp,
}

/// The ASTM E1762 signature-purpose code system.
pub const PURPOSE_CODE_SYSTEM: &str = "1.2.840.10065.1.12.1";

impl Purpose {
    /// Every purpose, in code order.
    pub const ALL: [Purpose; 18] = [
        Purpose::Author,
        Purpose::CoAuthor,
        Purpose::CoParticipant,
        Purpose::Transcriptionist,
        Purpose::Verification,
        Purpose::Validation,
        Purpose::Consent,
        Purpose::SignatureWitness,
        Purpose::EventWitness,
        Purpose::IdentityWitness,
        Purpose::ConsentWitness,
        Purpose::Interpreter,
        Purpose::Review,
        Purpose::Source,
        Purpose::Addendum,
        Purpose::Modification,
        Purpose::Administrative,
        Purpose::Timestamp,
    ];

    /// The code (1 to 18).
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8 + 1
    }

    /// The OID, `1.2.840.10065.1.12.1.N`.
    pub fn oid(self) -> String {
        format!("{PURPOSE_CODE_SYSTEM}.{}", self.code())
    }

    /// The identifier written in `CommitmentTypeId`: `urn:oid:1.2.840.10065.1.12.1.N`.
    pub fn urn(self) -> String {
        format!("urn:oid:{}", self.oid())
    }

    /// The display name.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Author => "Author's Signature",
            Purpose::CoAuthor => "Coauthor's Signature",
            Purpose::CoParticipant => "Co-participant's Signature",
            Purpose::Transcriptionist => "Transcriptionist/Recorder Signature",
            Purpose::Verification => "Verification Signature",
            Purpose::Validation => "Validation Signature",
            Purpose::Consent => "Consent Signature",
            Purpose::SignatureWitness => "Signature Witness Signature",
            Purpose::EventWitness => "Event Witness Signature",
            Purpose::IdentityWitness => "Identity Witness Signature",
            Purpose::ConsentWitness => "Consent Witness Signature",
            Purpose::Interpreter => "Interpreter Signature",
            Purpose::Review => "Review Signature",
            Purpose::Source => "Source Signature",
            Purpose::Addendum => "Addendum Signature",
            Purpose::Modification => "Modification Signature",
            Purpose::Administrative => "Administrative (Error/Edit) Signature",
            Purpose::Timestamp => "Timestamp Signature",
        }
    }

    /// The short keyword of the command line and the API (`author`, `co-author`, `review`...).
    pub fn keyword(self) -> &'static str {
        const KEYWORDS: [&str; 18] = [
            "author",
            "co-author",
            "co-participant",
            "transcriptionist",
            "verification",
            "validation",
            "consent",
            "signature-witness",
            "event-witness",
            "identity-witness",
            "consent-witness",
            "interpreter",
            "review",
            "source",
            "addendum",
            "modification",
            "administrative",
            "timestamp",
        ];
        KEYWORDS[usize::from(self.code()) - 1]
    }

    /// Recognise a keyword ([`Purpose::keyword`]), `urn:oid:1.2.840.10065.1.12.1.N` or the bare
    /// OID.
    pub fn parse(s: &str) -> Option<Purpose> {
        Self::ALL
            .into_iter()
            .find(|p| p.keyword() == s)
            .or_else(|| Self::from_identifier(s))
    }

    /// Recognise `urn:oid:1.2.840.10065.1.12.1.N` (or the bare OID).
    pub fn from_identifier(s: &str) -> Option<Purpose> {
        let oid = s.strip_prefix("urn:oid:").unwrap_or(s);
        let n = oid.strip_prefix(PURPOSE_CODE_SYSTEM)?.strip_prefix('.')?;
        if n.starts_with('0') || n.len() > 2 {
            return None;
        }
        let n: usize = n.parse().ok()?;
        Self::ALL.get(n.checked_sub(1)?).copied()
    }
}

/// The DSG signature policy: which form the signature takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `urn:ihe:iti:dsg:detached:2014`: a manifest referencing documents by unique ID.
    Detached,
    /// `urn:ihe:iti:dsg:enveloping:2014`: the document, base64, inside the signature.
    Enveloping,
}

impl Policy {
    /// The policy URN.
    pub fn urn(self) -> &'static str {
        match self {
            Policy::Detached => "urn:ihe:iti:dsg:detached:2014",
            Policy::Enveloping => "urn:ihe:iti:dsg:enveloping:2014",
        }
    }

    /// `detached` or `enveloping`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Detached => "detached",
            Policy::Enveloping => "enveloping",
        }
    }

    /// Recognise a policy URN.
    pub fn from_urn(s: &str) -> Option<Policy> {
        [Policy::Detached, Policy::Enveloping]
            .into_iter()
            .find(|p| p.urn() == s)
    }

    /// The `SigPolicyHash` this crate writes: no machine-readable policy document exists for
    /// the DSG policies, so the hash is SHA-256 over the URN's bytes. Verification requires
    /// the element with an accepted digest algorithm but not this value (other signers put
    /// other values there).
    pub fn hash(self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, self.urn().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eighteen_purposes_round_trip_and_nothing_else_is_recognised() {
        for (i, p) in Purpose::ALL.iter().enumerate() {
            assert_eq!(p.code() as usize, i + 1);
            assert_eq!(Purpose::from_identifier(&p.urn()), Some(*p));
            assert_eq!(Purpose::from_identifier(&p.oid()), Some(*p));
            assert_eq!(Purpose::parse(p.keyword()), Some(*p));
            assert_eq!(Purpose::parse(&p.oid()), Some(*p));
        }
        assert_eq!(Purpose::Source.urn(), "urn:oid:1.2.840.10065.1.12.1.14");
        for bad in [
            "urn:oid:1.2.840.10065.1.12.1.0",
            "urn:oid:1.2.840.10065.1.12.1.19",
            "urn:oid:1.2.840.10065.1.12.1.014",
            "urn:oid:1.2.840.10065.1.12.1",
            "urn:oid:1.2.840.10065.1.12.10",
            "urn:oid:1.2.840.10065.1.12.1.1.1",
        ] {
            assert_eq!(Purpose::from_identifier(bad), None, "{bad}");
        }
    }
}
