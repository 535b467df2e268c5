//! Code systems of the registry.
//!
//! * Professions: TRE_G15-ProfessionSante (OID 1.2.250.1.71.1.2.7), the table of
//!   [`cps_pki::subject::PROFESSIONS`] (the CA writes the same label in certificates).
//! * Secteurs d'activité: TRE_R02-SecteurActivite (OID 1.2.250.1.71.4.2.4), [`SECTEURS`]:
//!   the codes a DMP document may carry as `healthcareFacilityTypeCode`. `SA11` is deprecated
//!   in the terminology and refused here.
//! * Savoir-faire: TRE_R01-EnsembleSavoirFaire (OID 1.2.250.1.71.4.2.5), e.g. `SM26`
//!   "Qualifié en médecine générale". Only médecins (`10`) and pharmaciens (`21`) carry one in
//!   this registry. The list itself is not held here: a code is checked for its shape (a
//!   capital letter, then 1 to 9 capital letters or digits, ending with a digit).

pub use cps_pki::subject::profession_label;

/// OID of TRE_G15-ProfessionSante.
pub const PROFESSION_OID: &str = "1.2.250.1.71.1.2.7";
/// OID of TRE_R02-SecteurActivite.
pub const SECTEUR_OID: &str = "1.2.250.1.71.4.2.4";
/// OID of TRE_R01-EnsembleSavoirFaire.
pub const SAVOIR_FAIRE_OID: &str = "1.2.250.1.71.4.2.5";

/// Professions whose savoir-faire the registry keeps.
pub const SAVOIR_FAIRE_PROFESSIONS: [&str; 2] = ["10", "21"];

/// TRE_R02-SecteurActivite: code → label.
pub const SECTEURS: &[(&str, &str)] = &[
    ("SA01", "Etablissement public de santé"),
    ("SA02", "Hôpital militaire du Service de santé des armées"),
    ("SA03", "Etablissement privé PSPH"),
    ("SA04", "Etablissement privé non PSPH"),
    ("SA05", "Centre de santé"),
    ("SA06", "Autre structure du Service de santé des armées"),
    ("SA07", "Cabinet individuel"),
    ("SA08", "Cabinet de groupe"),
    ("SA09", "Exercice en société"),
    ("SA10", "Transporteur sanitaire"),
    ("SA12", "Etablissement de soins et prévention"),
    ("SA13", "Prévention et soins en entreprise"),
    (
        "SA14",
        "Etablissements scolaires, universitaires et de formation hors champ FINESS",
    ),
    ("SA15", "PMI et Planification familiale"),
    ("SA16", "Etablissement pour personnes handicapées"),
    ("SA17", "Etablissement pour personnes âgées"),
    ("SA18", "Etablissement aide à la famille"),
    (
        "SA19",
        "Etablissements FINESS de formation aux professions sanitaires et sociales",
    ),
    ("SA20", "Etablissement pour la protection de l'enfance"),
    ("SA21", "Etablissement d'hébergement et de réadaptation"),
    ("SA22", "Recherche"),
    ("SA23", "Assurance privée"),
    ("SA24", "Organisme de sécurité sociale"),
    ("SA25", "Laboratoire de biologie médicale"),
    ("SA26", "Ministère ou Service déconcentré"),
    ("SA27", "Collectivité territoriale"),
    ("SA28", "Association ou organisme humanitaire"),
    ("SA29", "Laboratoire d'analyses et de biologie médicale"),
    ("SA30", "Autre établissement sanitaire"),
    (
        "SA31",
        "Répartition et Distribution de médicaments et dispositifs médicaux",
    ),
    (
        "SA32",
        "Fabrication, Exploitation et Importation de médicaments et dispositifs médicaux",
    ),
    ("SA33", "Pharmacie d'officine"),
    ("SA34", "Centre de dialyse"),
    ("SA35", "Para-pharmacie"),
    ("SA36", "Centre anti-cancer"),
    ("SA37", "Centre de transfusion sanguine"),
    ("SA38", "Pharmacie minière"),
    ("SA39", "Pharmacie mutualiste"),
    ("SA40", "Secteur privé, praticien hospitalier"),
    (
        "SA41",
        "Autre établissement du domaine social ou médico-social",
    ),
    ("SA42", "Appareillage médical"),
    ("SA43", "Secteur non défini"),
    ("SA44", "Recrutement ou Gestion RH"),
    ("SA45", "Communication, Marketing, Consulting, Média"),
    (
        "SA46",
        "Fabrication, Exploitation, Importation, Répartition, Distribution médicaments et dispositifs médicaux",
    ),
    ("SA47", "Incendie et secours"),
    (
        "SA48",
        "Entreprise industrielle et tertiaire hors industrie pharmaceutique",
    ),
    ("SA49", "Entité Outre-Mer"),
    ("SA50", "Permanence des soins ambulatoires hors cabinet"),
    (
        "SA51",
        "Structure de coopération avec autorisation de soins",
    ),
    ("SA52", "Maison de santé ou Pôle de santé"),
    ("SA53", "Siège administratif d'un établissement de santé"),
    ("SA54", "Centre de dépistage et de prévention"),
    (
        "SA55",
        "Laboratoire pharmaceutique préparant et délivrant des allergènes",
    ),
    ("SA56", "Propharmacie"),
    (
        "SA57",
        "Structure de coopération avec mission de coordination de soins",
    ),
    ("SA58", "Entreprise de taxis"),
    (
        "SA59",
        "Laboratoire de biologie médicale hors catégorie standard",
    ),
    ("SA60", "Centres médicaux SNCF"),
    (
        "SA61",
        "Structure Dispensatrice à domicile d'Oxygène à usage médical",
    ),
    ("SA63", "Structures de coordination et d'orientation"),
    ("SA64", "Société de téléconsultation"),
    ("SA65", "Antenne de pharmacie"),
    (
        "SA66",
        "Services de Prévention et de Santé au Travail (SPST)",
    ),
    ("SA67", "Maisons médicales de garde (MMG)"),
    ("SA68", "Services départementaux d'incendie et de secours"),
    ("SA69", "Maisons de naissance"),
];

/// The TRE_R02 label of a secteur d'activité code (`"SA07"` → `"Cabinet individuel"`).
pub fn secteur_label(code: &str) -> Option<&'static str> {
    SECTEURS.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

/// Why a savoir-faire code is refused, or `None` when it has the TRE_R01 shape.
pub fn savoir_faire_problem(code: &str) -> Option<&'static str> {
    let b = code.as_bytes();
    let ok = (2..=10).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && b[b.len() - 1].is_ascii_digit();
    (!ok).then_some("a savoir-faire code is a capital letter, then 1 to 9 capital letters or digits, ending with a digit (e.g. SM26)")
}

/// Whether a profession keeps a savoir-faire in this registry.
pub fn profession_has_savoir_faire(profession_code: &str) -> bool {
    SAVOIR_FAIRE_PROFESSIONS.contains(&profession_code)
}

/// Why a structure identifier is refused, or `None` when it is acceptable: 1 to 64 ASCII
/// letters, digits, `-`, `/` or `.` (the "Identifiant technique de la structure" of the
/// Annuaire Santé, or a struct_IdNat).
pub fn structure_id_problem(id: &str) -> Option<&'static str> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/' || b == b'.');
    (!ok).then_some("a structure identifier is 1 to 64 ASCII letters, digits, '-', '/' or '.'")
}

/// Why the activity at structure `id` cannot be used for card login, or `None` when it can.
///
/// A login assertion names the structure in its VIHF `Identifiant_Structure`, which must be a
/// struct_IdNat: a TRE_G07 type prefix (`0` cabinet ADELI, `1` FINESS, `2` SIREN, `3` SIRET, `4`
/// cabinet RPPS, `5` FINESS EJ) and the identifier ([`cps_pki::idnat::parse_structure_id`], the
/// same check the assertion issuer and validator make). The Annuaire Santé's technical
/// identifiers (`F…`, `S…`, `R…`) are not struct_IdNat and are not mapped (IMPORT_FORMAT.md).
pub fn structure_login_problem(id: &str) -> Option<String> {
    cps_pki::idnat::parse_structure_id(id)
        .err()
        .map(|e| e.reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        assert_eq!(secteur_label("SA07"), Some("Cabinet individuel"));
        assert_eq!(secteur_label("SA11"), None);
        assert_eq!(secteur_label("sa07"), None);
        assert_eq!(SECTEURS.len(), 67);
        for w in SECTEURS.windows(2) {
            assert!(w[0].0 < w[1].0, "sorted and unique");
        }
        assert_eq!(profession_label("21"), Some("Pharmacien"));
        assert!(savoir_faire_problem("SM26").is_none());
        assert!(savoir_faire_problem("SCD01").is_none());
        for bad in ["", "S", "26", "sm26", "SM-26", "SMXX", "SM26SM26SM26"] {
            assert!(savoir_faire_problem(bad).is_some(), "{bad}");
        }
        assert!(structure_id_problem("F340785161").is_none());
        assert!(structure_id_problem("10B0152872/01").is_none());
        for bad in ["", "a b", "x;y", &"1".repeat(65)] {
            assert!(structure_id_problem(bad).is_some(), "{bad}");
        }
        // Accepted in the registry, but not for login: not a struct_IdNat.
        for (technical, why) in [
            ("F340785161", "unknown type prefix 'F'"),
            ("S750012345", "unknown type prefix 'S'"),
            ("1340785", "must be 9 digits or upper-case letters"),
            ("31000000000001", "must be 14 digits"),
        ] {
            let p = structure_login_problem(technical).unwrap_or_default();
            assert!(p.contains(why), "{technical}: {p}");
        }
        for ok in [
            "1340785161",
            "10B0152872",
            "410002813839001",
            "369000432100017",
        ] {
            assert_eq!(structure_login_problem(ok), None, "{ok}");
        }
    }
}
