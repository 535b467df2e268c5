//! National identifiers of health professionals (IdNat_PS) and of structures (struct_IdNat).
//!
//! IdNat_PS is a one-character type prefix followed by the identifier (ANS `PSIdNat`):
//!
//! | prefix | rest | what is checked here |
//! |---|---|---|
//! | `8` | RPPS number | exactly 11 digits; the last one is the Luhn check digit over the 11 |
//! | `0` | ADELI number | exactly 9 characters, ASCII digits or upper-case letters (Corsican departments `2A`/`2B` and test cards carry letters); no check digit is verified, the ADELI key algorithm is not published in the sources we rely on |
//! | `1` | cabinet ADELI `/` internal id | cabinet id 9 digits or upper-case letters |
//! | `3` | FINESS `/` internal id | FINESS 9 digits or upper-case letters (`2A`/`2B`) |
//! | `4` | SIREN `/` internal id | SIREN 9 digits |
//! | `5` | SIRET `/` internal id | SIRET 14 digits |
//! | `6` | cabinet RPPS `/` internal id | cabinet id 1–14 digits or upper-case letters |
//!
//! The internal id of the structure-based forms (staff cards, e.g. `3760021832/000000018`) is
//! 1–30 characters of ASCII letters and digits. The whole identifier is at most 64 characters
//! (the upper bound of the `CN` it is written into). Nothing is trimmed or case-folded: an
//! identifier is taken exactly as the registry gives it or refused.

/// Why an IdNat_PS or struct_IdNat was refused. Displays as `IdNat_PS '<value>': <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} '{value}': {reason}")]
pub struct IdNatError {
    /// `IdNat_PS` or `struct_IdNat`.
    pub what: &'static str,
    /// The refused input, with control characters escaped and cut at 80 characters.
    pub value: String,
    pub reason: IdNatReason,
}

/// The precise reason, for callers that branch on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdNatReason {
    #[error("empty")]
    Empty,
    #[error("longer than 64 characters")]
    TooLong,
    #[error("unknown type prefix '{0}' (expected {1})")]
    UnknownPrefix(char, &'static str),
    #[error("RPPS must be 11 digits")]
    RppsFormat,
    #[error("RPPS check digit is {expected}, not {found}")]
    RppsCheckDigit { expected: u8, found: u8 },
    #[error("ADELI must be 9 characters, digits or upper-case letters")]
    AdeliFormat,
    #[error("{0}")]
    Structure(String),
}

/// The kind of an IdNat_PS, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdNatKind {
    /// `0` + ADELI.
    Adeli,
    /// `8` + RPPS.
    Rpps,
    /// `1`, `3`, `4`, `5` or `6` + structure id + `/` + internal id (staff of a structure).
    StructureBased(char),
}

/// A validated IdNat_PS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdNatPs {
    value: String,
    kind: IdNatKind,
}

impl IdNatPs {
    pub fn parse(s: &str) -> Result<Self, IdNatError> {
        let err = |reason| IdNatError {
            what: "IdNat_PS",
            value: shown(s),
            reason,
        };
        let mut chars = s.chars();
        let prefix = chars.next().ok_or_else(|| err(IdNatReason::Empty))?;
        if s.chars().count() > 64 {
            return Err(err(IdNatReason::TooLong));
        }
        let rest = chars.as_str();
        let kind = match prefix {
            '8' => {
                check_rpps(rest).map_err(err)?;
                IdNatKind::Rpps
            }
            '0' => {
                if !(rest.len() == 9 && rest.bytes().all(is_upper_alnum)) {
                    return Err(err(IdNatReason::AdeliFormat));
                }
                IdNatKind::Adeli
            }
            '1' | '3' | '4' | '5' | '6' => {
                let (structure, internal) = rest.split_once('/').ok_or_else(|| {
                    err(IdNatReason::Structure(format!(
                        "prefix {prefix} needs '<structure id>/<internal id>'"
                    )))
                })?;
                let (label, ok) = match prefix {
                    '1' => ("cabinet ADELI", fixed_upper_alnum(structure, 9)),
                    '3' => ("FINESS", fixed_upper_alnum(structure, 9)),
                    '4' => ("SIREN", fixed_digits(structure, 9)),
                    '5' => ("SIRET", fixed_digits(structure, 14)),
                    _ => (
                        "cabinet RPPS",
                        (1..=14).contains(&structure.len())
                            && structure.bytes().all(is_upper_alnum),
                    ),
                };
                if !ok {
                    return Err(err(IdNatReason::Structure(format!(
                        "{label} '{}' is malformed ({})",
                        shown(structure),
                        structure_rule(prefix)
                    ))));
                }
                if !((1..=30).contains(&internal.len())
                    && internal.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(err(IdNatReason::Structure(
                        "internal id must be 1 to 30 ASCII letters or digits".into(),
                    )));
                }
                IdNatKind::StructureBased(prefix)
            }
            other => {
                return Err(err(IdNatReason::UnknownPrefix(
                    other,
                    "0 ADELI, 1/3/4/5/6 structure-based, 8 RPPS",
                )));
            }
        };
        Ok(IdNatPs {
            value: s.to_owned(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> IdNatKind {
        self.kind
    }

    /// The identifier without its type prefix (the RPPS or ADELI number, ...).
    pub fn number(&self) -> &str {
        &self.value[1..]
    }
}

impl std::fmt::Display for IdNatPs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value)
    }
}

fn structure_rule(prefix: char) -> &'static str {
    match prefix {
        '1' | '3' => "9 digits or upper-case letters",
        '4' => "9 digits",
        '5' => "14 digits",
        _ => "1 to 14 digits or upper-case letters",
    }
}

fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_uppercase()
}

fn fixed_upper_alnum(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(is_upper_alnum)
}

fn fixed_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_rpps(rpps: &str) -> Result<(), IdNatReason> {
    if !fixed_digits(rpps, 11) {
        return Err(IdNatReason::RppsFormat);
    }
    let (payload, check) = rpps.split_at(10);
    let expected = luhn_check_digit(payload).ok_or(IdNatReason::RppsFormat)?;
    let found = check.as_bytes()[0] - b'0';
    if expected != found {
        return Err(IdNatReason::RppsCheckDigit { expected, found });
    }
    Ok(())
}

/// The Luhn (mod 10) check digit to append to `payload` (ASCII digits), or `None` if `payload`
/// is empty or not all digits.
pub fn luhn_check_digit(payload: &str) -> Option<u8> {
    if payload.is_empty() || !payload.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    Some(((10 - sum % 10) % 10) as u8)
}

/// The kind of a structure identifier (struct_IdNat, TRE_G07 prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StructureIdKind {
    /// `0` + cabinet ADELI (9 digits or upper-case letters).
    CabinetAdeli,
    /// `1` + FINESS (9 digits or upper-case letters).
    Finess,
    /// `2` + SIREN (9 digits).
    Siren,
    /// `3` + SIRET (14 digits).
    Siret,
    /// `4` + cabinet RPPS (1–14 digits or upper-case letters).
    CabinetRpps,
    /// `5` + FINESS of the legal entity (9 digits or upper-case letters).
    FinessEj,
}

/// Validate a structure identifier as organisation certificates carry it in `OU`
/// (`318751275100020`, `10B0152872`, `499700367909006`): a TRE_G07 type prefix `0`–`5` and the
/// identifier with the length above. No check digit is verified (test structures do not have
/// valid ones, and SIRETs of La Poste do not follow Luhn).
pub fn parse_structure_id(s: &str) -> Result<StructureIdKind, IdNatError> {
    let err = |reason: String| IdNatError {
        what: "struct_IdNat",
        value: shown(s),
        reason: IdNatReason::Structure(reason),
    };
    let mut chars = s.chars();
    let Some(prefix) = chars.next() else {
        return Err(IdNatError {
            what: "struct_IdNat",
            value: String::new(),
            reason: IdNatReason::Empty,
        });
    };
    let rest = chars.as_str();
    let (kind, ok, rule) = match prefix {
        '0' => (
            StructureIdKind::CabinetAdeli,
            fixed_upper_alnum(rest, 9),
            "9 digits or upper-case letters",
        ),
        '1' => (
            StructureIdKind::Finess,
            fixed_upper_alnum(rest, 9),
            "9 digits or upper-case letters",
        ),
        '2' => (StructureIdKind::Siren, fixed_digits(rest, 9), "9 digits"),
        '3' => (StructureIdKind::Siret, fixed_digits(rest, 14), "14 digits"),
        '4' => (
            StructureIdKind::CabinetRpps,
            (1..=14).contains(&rest.len()) && rest.bytes().all(is_upper_alnum),
            "1 to 14 digits or upper-case letters",
        ),
        '5' => (
            StructureIdKind::FinessEj,
            fixed_upper_alnum(rest, 9),
            "9 digits or upper-case letters",
        ),
        other => {
            return Err(IdNatError {
                what: "struct_IdNat",
                value: shown(s),
                reason: IdNatReason::UnknownPrefix(
                    other,
                    "0 cabinet ADELI, 1 FINESS, 2 SIREN, 3 SIRET, 4 cabinet RPPS, 5 FINESS EJ",
                ),
            });
        }
    };
    if !ok {
        return Err(err(format!(
            "the identifier after prefix {prefix} must be {rule}"
        )));
    }
    Ok(kind)
}

/// The input as it may appear in a message: control characters escaped, at most 80 characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpps_examples_from_real_and_test_cards() {
        for ok in [
            "810002813839",
            "899700367917",
            "899700870589",
            "899700075122",
        ] {
            let id = IdNatPs::parse(ok).unwrap();
            assert_eq!(id.kind(), IdNatKind::Rpps);
            assert_eq!(id.number(), &ok[1..]);
        }
    }

    #[test]
    fn every_wrong_last_digit_is_refused_with_the_expected_one() {
        for good in ["810002813839", "899700367917", "899700870589"] {
            let expected = good.as_bytes()[11] - b'0';
            for d in 0..10u8 {
                if d == expected {
                    continue;
                }
                let bad = format!("{}{d}", &good[..11]);
                let e = IdNatPs::parse(&bad).unwrap_err();
                assert_eq!(e.reason, IdNatReason::RppsCheckDigit { expected, found: d });
                assert_eq!(
                    e.to_string(),
                    format!("IdNat_PS '{bad}': RPPS check digit is {expected}, not {d}")
                );
            }
        }
    }

    #[test]
    fn precise_messages() {
        assert_eq!(
            IdNatPs::parse("81000281383X").unwrap_err().to_string(),
            "IdNat_PS '81000281383X': RPPS must be 11 digits"
        );
        assert_eq!(
            IdNatPs::parse("8100028138390").unwrap_err().to_string(),
            "IdNat_PS '8100028138390': RPPS must be 11 digits"
        );
        assert_eq!(
            IdNatPs::parse("810002813838").unwrap_err().to_string(),
            "IdNat_PS '810002813838': RPPS check digit is 9, not 8"
        );
        assert!(
            IdNatPs::parse("7123")
                .unwrap_err()
                .to_string()
                .starts_with("IdNat_PS '7123': unknown type prefix '7'")
        );
        assert_eq!(
            IdNatPs::parse("").unwrap_err().to_string(),
            "IdNat_PS '': empty"
        );
        assert_eq!(
            IdNatPs::parse("8\u{0}").unwrap_err().value,
            "8\\0",
            "control characters are escaped in messages"
        );
    }

    #[test]
    fn adeli_and_structure_based() {
        assert_eq!(
            IdNatPs::parse("0751234567").unwrap().kind(),
            IdNatKind::Adeli
        );
        assert_eq!(
            IdNatPs::parse("02A1234567").unwrap().kind(),
            IdNatKind::Adeli
        );
        assert_eq!(
            IdNatPs::parse("00B7010446").unwrap().kind(),
            IdNatKind::Adeli
        );
        for bad in ["075123456", "07512345678", "0751234a67", "0 75123456"] {
            assert_eq!(
                IdNatPs::parse(bad).unwrap_err().reason,
                IdNatReason::AdeliFormat,
                "{bad}"
            );
        }
        assert_eq!(
            IdNatPs::parse("3760021832/000000018").unwrap().kind(),
            IdNatKind::StructureBased('3')
        );
        assert_eq!(
            IdNatPs::parse("500000000029751/CPAT0001").unwrap().kind(),
            IdNatKind::StructureBased('5')
        );
        for bad in [
            "3760021832",
            "376002183/1",
            "3760021832/",
            "3760021832/a-b",
            "50000000002975/X",
            "4ABCDEFGHI/1",
            "6/1",
        ] {
            assert!(
                matches!(
                    IdNatPs::parse(bad).unwrap_err().reason,
                    IdNatReason::Structure(_)
                ),
                "{bad}"
            );
        }
        assert_eq!(
            IdNatPs::parse(&format!("8{}", "1".repeat(64)))
                .unwrap_err()
                .reason,
            IdNatReason::TooLong
        );
    }

    #[test]
    fn luhn() {
        assert_eq!(luhn_check_digit("1000281383"), Some(9));
        assert_eq!(luhn_check_digit("7992739871"), Some(3));
        assert_eq!(luhn_check_digit(""), None);
        assert_eq!(luhn_check_digit("12a"), None);
    }

    #[test]
    fn structure_ids() {
        assert_eq!(
            parse_structure_id("318751275100020").unwrap(),
            StructureIdKind::Siret
        );
        assert_eq!(
            parse_structure_id("10B0152872").unwrap(),
            StructureIdKind::Finess
        );
        assert_eq!(
            parse_structure_id("499700367909006").unwrap(),
            StructureIdKind::CabinetRpps
        );
        for bad in ["", "31875127510002", "1ABC", "9123", "3187512751000X0", "4"] {
            assert!(parse_structure_id(bad).is_err(), "{bad}");
        }
        assert!(
            parse_structure_id("31875127510002")
                .unwrap_err()
                .to_string()
                .starts_with("struct_IdNat '31875127510002': the identifier after prefix 3")
        );
    }
}
