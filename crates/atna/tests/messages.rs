//! Audit messages (every event constructor → XML → parser), hostile XML, and fuzz-like tests of
//! the RFC 5425 decoder and the RFC 5424 parser (random bytes, random splits).

use cps_atna::events::{
    self, AlertKind, AuditContext, CardChange, CertificateRef, Person, RevocationChange,
};
use cps_atna::{
    AuditMessage, EventOutcome, FrameDecoder, FrameError, MIN_MAX_FRAME, SyslogMessage, XmlError,
    XmlLimits, encode_frame, parse_audit_xml,
};
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

fn ctx() -> AuditContext {
    AuditContext {
        source_id: "cps-trust-1".into(),
        site_id: None,
        host: "appliance.example".into(),
    }
}

fn all_events() -> Vec<(&'static str, AuditMessage)> {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let c = ctx();
    let dr = Person {
        id: "810001234567".into(),
        name: Some("Dr Émilie <Test> & \"Co\"".into()),
    };
    let op = Person::id("operator-1");
    let cert = CertificateRef {
        serial_hex: "1a2b3c".into(),
        subject: "CN=810001234567+SN=TEST+GN=EMILIE,O=Cabinet".into(),
        issuer: "CN=AC Personnes".into(),
        holder: Some(dr.clone()),
    };
    vec![
        (
            "110114",
            events::login(&c, now, &dr, Some("192.0.2.10"), None),
        ),
        (
            "110114",
            events::login(&c, now, &dr, Some("192.0.2.10"), Some("PIN blocked")),
        ),
        ("110114", events::logout(&c, now, &dr, None)),
        (
            "110113",
            events::security_alert_event(
                &c,
                now,
                AlertKind::NodeAuthentication,
                EventOutcome::MinorFailure,
                "client certificate revoked",
                None,
                Some("198.51.100.3"),
            ),
        ),
        ("110113", events::certificate_issued(&c, now, &op, &cert)),
        (
            "110113",
            events::certificate_revoked(
                &c,
                now,
                &op,
                &cert,
                RevocationChange::Revoked,
                "keyCompromise",
            ),
        ),
        (
            "110113",
            events::card_lifecycle(&c, now, &op, &dr, "CPS-0001", CardChange::Opposed),
        ),
        (
            "110114",
            events::assertion_issued(&c, now, &dr, "_a1b2", Some("192.0.2.10")),
        ),
        (
            "110114",
            events::assertion_validated(&c, now, "dmp-registry", &dr, "_a1b2", Some("PAT-42")),
        ),
        (
            "110114",
            events::assertion_refused(
                &c,
                now,
                "dmp-registry",
                Some(&dr),
                Some("_x"),
                "signature invalid",
                true,
            ),
        ),
        (
            "110113",
            events::break_glass(
                &c,
                now,
                &dr,
                "PAT-42",
                events::purpose_of_use("bris_de_glace"),
                Some("192.0.2.10"),
            ),
        ),
    ]
}

#[test]
fn every_event_encodes_to_a5_structure_and_parses_back() {
    for (id, m) in all_events() {
        let xml = m.to_xml().unwrap();
        // A.5.1 element order, checked on the XML itself.
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "AuditMessage");
        assert!(root.tag_name().namespace().is_none());
        let names: Vec<&str> = root
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(names[0], "EventIdentification");
        let asi = names
            .iter()
            .position(|n| *n == "AuditSourceIdentification")
            .unwrap();
        assert!(
            asi >= 2 && names[1..asi].iter().all(|n| *n == "ActiveParticipant"),
            "{names:?}"
        );
        assert!(
            names[asi + 1..]
                .iter()
                .all(|n| *n == "ParticipantObjectIdentification"),
            "{names:?}"
        );
        let ev = root.first_element_child().unwrap();
        let event_id = ev.children().find(|n| n.has_tag_name("EventID")).unwrap();
        assert_eq!(event_id.attribute("csd-code"), Some(id));
        assert_eq!(event_id.attribute("codeSystemName"), Some("DCM"));
        assert!(event_id.attribute("originalText").is_some());
        assert!(["C", "R", "U", "D", "E"].contains(&ev.attribute("EventActionCode").unwrap()));
        assert!(["0", "4", "8", "12"].contains(&ev.attribute("EventOutcomeIndicator").unwrap()));
        assert_eq!(
            ev.attribute("EventDateTime"),
            Some("2027-01-15T08:00:00.000000Z")
        );
        for ap in root
            .children()
            .filter(|n| n.has_tag_name("ActiveParticipant"))
        {
            assert!(!ap.attribute("UserID").unwrap().is_empty());
            assert!(["true", "false"].contains(&ap.attribute("UserIsRequestor").unwrap()));
        }

        let s = parse_audit_xml(xml.as_bytes(), &XmlLimits::default()).unwrap();
        assert_eq!(s.event_id.code, id);
        assert_eq!(s.outcome, Some(m.event.outcome.code()));
        assert_eq!(s.event_time, Some(1_800_000_000_000_000));
        assert_eq!(s.source_id.as_deref(), Some("cps-trust-1"));
        assert!(s.user_ids.contains(&"cps-trust-1".to_owned()));
        assert_eq!(s.event_types.len(), m.event.event_types.len());
    }
    // Specific content.
    let evs = all_events();
    let bg = parse_audit_xml(
        evs[10].1.to_xml().unwrap().as_bytes(),
        &XmlLimits::default(),
    )
    .unwrap();
    assert_eq!(bg.patient_ids, vec!["PAT-42".to_owned()]);
    assert_eq!(bg.event_types[0].code, "110127");
    assert_eq!(bg.event_types[1].code, "bris_de_glace");
    assert_eq!(bg.event_types[1].system, "1.2.250.1.213.1.1.4.248");
    let login =
        parse_audit_xml(evs[0].1.to_xml().unwrap().as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(login.event_types[0].code, "110122");
    assert_eq!(login.user_ids[0], "810001234567");
    let refused = &evs[1].1;
    assert_eq!(refused.event.outcome, EventOutcome::MinorFailure);
    assert!(
        refused
            .to_xml()
            .unwrap()
            .contains("<EventOutcomeDescription>PIN blocked</EventOutcomeDescription>")
    );
    // Escaping survives the round trip.
    assert!(
        evs[0]
            .1
            .to_xml()
            .unwrap()
            .contains("UserName=\"Dr Émilie &lt;Test&gt; &amp; &quot;Co&quot;\"")
    );
}

#[test]
fn model_refuses_what_xml_cannot_carry() {
    let mut m = all_events().remove(0).1;
    m.participants[0].user_id = "bad\u{1}id".into();
    assert!(m.to_xml().is_err());
    let mut m = all_events().remove(0).1;
    m.participants.clear();
    assert!(m.to_xml().is_err());
    let mut m = all_events().remove(0).1;
    m.source.source_id = " ".into();
    assert!(m.to_xml().is_err());
}

#[test]
fn hostile_xml_is_refused_with_a_reason() {
    let l = XmlLimits::default();
    let dtd = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><AuditMessage/>"#;
    assert!(matches!(parse_audit_xml(dtd, &l), Err(XmlError::Syntax(_))));
    let lol = format!(
        "<!DOCTYPE l [<!ENTITY a \"{}\">]><AuditMessage>&a;</AuditMessage>",
        "x".repeat(10)
    );
    assert!(parse_audit_xml(lol.as_bytes(), &l).is_err());
    assert!(
        matches!(parse_audit_xml(b"<Other/>", &l), Err(XmlError::NotAuditMessage(n)) if n == "Other")
    );
    assert!(matches!(
        parse_audit_xml(b"<AuditMessage/>", &l),
        Err(XmlError::Structure(_))
    ));
    assert!(matches!(
        parse_audit_xml(b"\xff<AuditMessage/>", &l),
        Err(XmlError::Syntax(_))
    ));
    let big = vec![b' '; l.max_bytes + 1];
    assert!(matches!(
        parse_audit_xml(&big, &l),
        Err(XmlError::TooLarge { .. })
    ));
    let many = format!("<AuditMessage>{}</AuditMessage>", "<a/>".repeat(30_000));
    assert!(matches!(
        parse_audit_xml(many.as_bytes(), &l),
        Err(XmlError::Syntax(_))
    ));
    let bad_time = br#"<AuditMessage><EventIdentification EventDateTime="yesterday" EventOutcomeIndicator="0"><EventID csd-code="1" codeSystemName="DCM" originalText="x"/></EventIdentification></AuditMessage>"#;
    assert!(
        matches!(parse_audit_xml(bad_time, &l), Err(XmlError::Structure(s)) if s.contains("EventDateTime"))
    );
    // RFC 3881 style (code= instead of csd-code=) is read.
    let old = br#"<AuditMessage><EventIdentification EventActionCode="E" EventDateTime="2024-01-01T00:00:00Z" EventOutcomeIndicator="0"><EventID code="110114" codeSystemName="DCM" displayName="User Authentication"/></EventIdentification><ActiveParticipant UserID="u1" UserIsRequestor="true"/><AuditSourceIdentification AuditSourceID="s"/></AuditMessage>"#;
    let s = parse_audit_xml(old, &l).unwrap();
    assert_eq!(s.event_id.code, "110114");
    assert_eq!(s.event_id.meaning, "User Authentication");
}

#[test]
fn decoder_survives_random_bytes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5425);
    for _ in 0..5_000 {
        let len = rng.gen_range(0..200);
        let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        d.push(&data);
        let mut n = 0;
        loop {
            match d.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => {
                    let _ = d.finish();
                    break;
                }
                Err(_) => {
                    assert!(d.next_frame().is_err(), "a failed decoder stays failed");
                    break;
                }
            }
            assert!(n <= data.len());
        }
        // The syslog parser never panics either.
        let _ = SyslogMessage::parse(&data);
    }
}

#[test]
fn decoder_is_independent_of_splits() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5424);
    for _ in 0..300 {
        let msgs: Vec<Vec<u8>> = (0..rng.gen_range(1..20))
            .map(|_| {
                let n = if rng.gen_bool(0.05) {
                    MIN_MAX_FRAME
                } else {
                    rng.gen_range(1..3000)
                };
                (0..n).map(|_| rng.r#gen()).collect()
            })
            .collect();
        let mut wire = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut wire);
        }
        // Sometimes end inside the last frame.
        let cut = rng.gen_bool(0.2);
        let end = if cut {
            wire.len() - rng.gen_range(1..msgs.last().unwrap().len().min(50) + 1)
        } else {
            wire.len()
        };
        let mut d = FrameDecoder::new(MIN_MAX_FRAME);
        let mut got = Vec::new();
        let mut i = 0;
        while i < end {
            let step = rng.gen_range(1..=4096).min(end - i);
            d.push(&wire[i..i + step]);
            i += step;
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        if cut {
            assert_eq!(got[..], msgs[..msgs.len() - 1]);
            assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
        } else {
            assert_eq!(got, msgs);
            d.finish().unwrap();
        }
    }
}

#[test]
fn syslog_parser_round_trips_random_audit_messages() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let t = OffsetDateTime::from_unix_timestamp(rng.gen_range(0..4_000_000_000)).unwrap()
            + time::Duration::microseconds(rng.gen_range(0..1_000_000));
        let body: String = (0..rng.gen_range(0..500))
            .map(|_| rng.gen_range(' '..='~'))
            .collect();
        let m = SyslogMessage::audit(
            t,
            "host-1.example",
            "cps-trust",
            Some("77"),
            rng.r#gen(),
            &body,
        );
        let b = m.to_bytes().unwrap();
        let back = SyslogMessage::parse(&b).unwrap();
        assert_eq!(back, m);
        // Any truncation of the header is an error, never a panic.
        let cut = rng.gen_range(0..60.min(b.len()));
        let _ = SyslogMessage::parse(&b[..cut]);
    }
}

/// Random text with markup, whitespace that XML normalises unless escaped, and non-ASCII.
fn tricky_text(rng: &mut impl Rng) -> String {
    const CHARS: &[char] = &[
        'a', 'Z', '0', ' ', '&', '<', '>', '"', '\'', '\t', '\n', '\r', 'é', '€', '𝄞', ';', '#',
    ];
    let n = rng.gen_range(0..24);
    let mut s = String::from("x");
    s.extend((0..n).map(|_| CHARS[rng.gen_range(0..CHARS.len())]));
    s
}

fn patient(id: String) -> cps_atna::ParticipantObject {
    cps_atna::ParticipantObject {
        id,
        id_type: cps_atna::CodedValue::new("2", "RFC-3881", "Patient Number"),
        object_type: Some(cps_atna::ObjectType::Person),
        role: Some(cps_atna::ObjectRole::Patient),
        name: Some("patient".into()),
        details: Vec::new(),
    }
}

/// An auditor (its queue in a temporary directory, kept alive by the returned guard) to format
/// messages as the appliance does.
fn auditor() -> (tempfile::TempDir, cps_atna::Auditor) {
    let dir = tempfile::tempdir().unwrap();
    let queue = cps_atna::Queue::open(dir.path(), &[], cps_atna::QueueOptions::default()).unwrap();
    (
        dir,
        cps_atna::Auditor::new(queue, "appliance.example", "cps-trust"),
    )
}

/// The appliance's own messages are indexed from the model (`NewRecord::local_message`): the
/// record must be, byte for byte, the one parsing the formatted message gives
/// (`NewRecord::local`), for every event, for hostile text, and beyond the parser's limits.
#[test]
fn records_indexed_from_the_model_equal_records_parsed_from_their_xml() {
    let (_dir, auditor) = auditor();
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let limits = XmlLimits::default();
    let events = all_events();
    for (name, m) in &events {
        // The fast path is taken for every event the appliance writes, and agrees with the parser.
        let xml = m.to_xml().unwrap();
        assert_eq!(
            cps_atna::EventSummary::of_message(m, &limits).as_ref(),
            Some(&parse_audit_xml(xml.as_bytes(), &limits).unwrap()),
            "{name}"
        );
    }

    let mut msgs: Vec<AuditMessage> = events.into_iter().map(|(_, m)| m).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for i in 0..400 {
        let mut m = msgs[i % 20.min(msgs.len())].clone();
        m.event.date_time = OffsetDateTime::from_unix_timestamp(rng.gen_range(0..4_000_000_000))
            .unwrap()
            + time::Duration::microseconds(rng.gen_range(0..1_000_000));
        m.event.event_id.meaning = tricky_text(&mut rng);
        m.participants[0].user_id = tricky_text(&mut rng);
        m.participants[0].alternative_user_id = match rng.gen_range(0..3) {
            0 => None,
            1 => Some(String::new()),
            _ => Some(tricky_text(&mut rng)),
        };
        if rng.gen_bool(0.3) {
            // The same id twice: kept once.
            let again = m.participants[0].clone();
            m.participants.push(again);
        }
        for _ in 0..rng.gen_range(0..3) {
            m.objects.push(patient(tricky_text(&mut rng)));
        }
        msgs.push(m);
    }
    // Beyond the parser's limits: a value longer than it keeps; more users than it keeps; a
    // full list and then a repeat.
    let mut long = msgs[0].clone();
    long.participants[0].user_id = "u".repeat(limits.max_value_len + 1);
    msgs.push(long);
    let mut many = msgs[0].clone();
    for n in 0..limits.max_values + 4 {
        many.participants
            .push(cps_atna::ActiveParticipant::new(format!("user-{n}"), false));
    }
    msgs.push(many);
    let mut full_then_repeat = msgs[0].clone();
    full_then_repeat.participants.truncate(1);
    full_then_repeat.participants[0].alternative_user_id = None;
    for n in 1..limits.max_values {
        full_then_repeat
            .participants
            .push(cps_atna::ActiveParticipant::new(format!("user-{n}"), false));
    }
    let first = full_then_repeat.participants[0].clone();
    full_then_repeat.participants.push(first);
    msgs.push(full_then_repeat);

    for (i, m) in msgs.iter().enumerate() {
        let raw = auditor.format(m, now).unwrap();
        let t = 1_800_000_000_123_456;
        assert_eq!(
            cps_atna::NewRecord::local_message(t, &raw, m),
            cps_atna::NewRecord::local(t, &raw),
            "message {i}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
}

/// The assertion ID of a validation is read back from the stored message (to remember
/// validated assertions across a restart), and from no other kind of message.
#[test]
fn validated_assertion_ids_are_read_back_from_stored_messages_only() {
    let (_dir, auditor) = auditor();
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let mut validations = 0;
    for (name, m) in all_events() {
        let raw = auditor.format(&m, now).unwrap();
        let id = events::validated_assertion_id(&raw);
        let is_validation = m
            .event
            .event_types
            .iter()
            .any(|t| t.code == events::ASSERTION_VALIDATED_TYPE);
        if is_validation {
            validations += 1;
            assert!(id.is_some(), "{name}: no assertion ID read back");
        } else {
            assert_eq!(id, None, "{name}");
        }
    }
    assert_eq!(validations, 1);
    let m = events::assertion_validated(
        &ctx(),
        now,
        "dmp-service",
        &Person::id("810001234567"),
        "_3f2a<&>\"'",
        Some("248079707503828"),
    );
    let raw = auditor.format(&m, now).unwrap();
    assert_eq!(
        events::validated_assertion_id(&raw).as_deref(),
        Some("_3f2a<&>\"'")
    );
    for bad in [
        &b""[..],
        b"<13>1 - - - - - -",
        &raw[..raw.len() / 2],
        b"\xff\xfe<x/>",
    ] {
        assert_eq!(events::validated_assertion_id(bad), None);
    }
}
