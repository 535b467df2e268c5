//! The client-certificate checks and the no-resumption configuration, in process: a small PKI
//! made with `cps-pki` and software keys, a sled store in a temporary directory, and rustls
//! connections talking to each other in memory.

use std::sync::Arc;
use std::time::Duration;

use cps_hsm::{KeyAlgorithm, SignatureAlgorithm, Signer, SoftwareSigner};
use cps_pki::ext::{self, Usage};
use cps_pki::hierarchy::{self, PublicationPoints};
use cps_pki::{
    CertificateParams, DistinguishedName, Issuer, issue_certificate, parse_certificate,
    serial_from_random,
};
use cps_store::{CertStatus, CertificateRecord, SledStore, Store, WriteBatch, WriteOp};
use cps_tls::{ClientVerifier, TlsKey, client_config, server_config};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;

const NOW: i64 = 1_790_000_000;
const CA: &str = "operators";

fn p256(label: &str) -> Arc<SoftwareSigner> {
    Arc::new(SoftwareSigner::generate(label, KeyAlgorithm::EcP256).unwrap())
}

struct Pki {
    root_der: Vec<u8>,
    ca_der: Vec<u8>,
    ca_name: DistinguishedName,
    ca_key: Arc<SoftwareSigner>,
    ca_kid: Vec<u8>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

struct Leaf {
    der: Vec<u8>,
    key: Arc<SoftwareSigner>,
}

impl Pki {
    fn new() -> Pki {
        let root_key = p256("root");
        let root_name = DistinguishedName::parse("CN=Test Root, O=cps-trust, C=FR").unwrap();
        let root_der = issue_certificate(
            &CertificateParams {
                serial: serial_from_random([1; 16]),
                subject: root_name.clone(),
                subject_public_key: root_key.public_key_der().to_vec(),
                not_before: NOW - 3600,
                not_after: NOW + 86400 * 3650,
                extensions: hierarchy::root_ca(root_key.public_key_der(), None).unwrap(),
            },
            &Issuer {
                name: &root_name,
                signer: root_key.as_ref(),
                signature: SignatureAlgorithm::EcdsaSha256,
            },
        )
        .unwrap();
        let root_kid = parse_certificate(&root_der)
            .unwrap()
            .subject_key_id
            .unwrap();
        let ca_key = p256(CA);
        let ca_name = DistinguishedName::parse("CN=Test Operators, O=cps-trust, C=FR").unwrap();
        let ca_der = issue_certificate(
            &CertificateParams {
                serial: serial_from_random([2; 16]),
                subject: ca_name.clone(),
                subject_public_key: ca_key.public_key_der().to_vec(),
                not_before: NOW - 3600,
                not_after: NOW + 86400 * 1825,
                extensions: hierarchy::issuing_ca(
                    ca_key.public_key_der(),
                    &root_kid,
                    &[],
                    &PublicationPoints::default(),
                )
                .unwrap(),
            },
            &Issuer {
                name: &root_name,
                signer: root_key.as_ref(),
                signature: SignatureAlgorithm::EcdsaSha256,
            },
        )
        .unwrap();
        let ca_kid = parse_certificate(&ca_der).unwrap().subject_key_id.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("store")).unwrap());
        Pki {
            root_der,
            ca_der,
            ca_name,
            ca_key,
            ca_kid,
            store,
            _dir: dir,
        }
    }

    /// A leaf of the CA, recorded in the store under `profile` (unless `None`) as valid.
    fn leaf(&self, n: u8, eku: &[&str], profile: Option<&str>, san: bool) -> Leaf {
        let key = p256("leaf");
        let serial = serial_from_random([10 + n; 16]);
        let mut extensions = vec![
            ext::basic_constraints(false, None).unwrap(),
            ext::key_usage(&[Usage::DigitalSignature]).unwrap(),
            ext::subject_key_identifier(&ext::key_identifier(key.public_key_der()).unwrap())
                .unwrap(),
            ext::authority_key_identifier(&self.ca_kid).unwrap(),
        ];
        let purposes: Vec<_> = eku
            .iter()
            .map(|p| match *p {
                "clientAuth" => ext::ID_KP_CLIENT_AUTH,
                "serverAuth" => ext::ID_KP_SERVER_AUTH,
                other => panic!("{other}"),
            })
            .collect();
        if !purposes.is_empty() {
            extensions.push(ext::extended_key_usage(&purposes, false).unwrap());
        }
        if san {
            extensions
                .push(ext::subject_alt_name(&["appliance.example.test".into()], &[]).unwrap());
        }
        let subject =
            DistinguishedName::parse(&format!("CN=leaf{n}.example.test, O=cps-trust, C=FR"))
                .unwrap();
        let der = issue_certificate(
            &CertificateParams {
                serial: serial.clone(),
                subject: subject.clone(),
                subject_public_key: key.public_key_der().to_vec(),
                not_before: NOW - 3600,
                not_after: NOW + 86400 * 365,
                extensions,
            },
            &Issuer {
                name: &self.ca_name,
                signer: self.ca_key.as_ref(),
                signature: SignatureAlgorithm::EcdsaSha256,
            },
        )
        .unwrap();
        if let Some(profile) = profile {
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::InsertCertificate(CertificateRecord {
                issuer: CA.into(),
                serial: serial.as_bytes().to_vec(),
                subject: format!("CN=leaf{n}.example.test"),
                profile: profile.into(),
                holder: None,
                spki_sha256: cps_pki::spki_sha256(key.public_key_der()),
                not_before: NOW - 3600,
                not_after: NOW + 86400 * 365,
                der: der.clone(),
                status: CertStatus::Valid,
                issued_at: NOW - 3600,
            }));
            self.store.commit(batch).unwrap();
        }
        Leaf { der, key }
    }

    fn revoke(&self, leaf: &Leaf, reason: u8) {
        let serial = parse_certificate(&leaf.der).unwrap().serial;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetCertificateStatus {
            issuer: CA.into(),
            serial: serial.as_bytes().to_vec(),
            status: CertStatus::Revoked {
                time: NOW,
                reason,
                invalidity_date: None,
            },
        });
        self.store.commit(batch).unwrap();
    }

    fn verifier(&self, profiles: &'static [&'static str]) -> ClientVerifier {
        ClientVerifier::new(
            self.root_der.clone(),
            vec![(CA.into(), self.ca_der.clone())],
            self.store.clone(),
            profiles,
        )
        .unwrap()
    }
}

fn at(t: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t as u64))
}

fn check(v: &ClientVerifier, leaf: &Leaf) -> Result<(), String> {
    v.verify_client_cert(&CertificateDer::from(leaf.der.clone()), &[], at(NOW))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_client_certificate_is_accepted_only_when_chain_usage_profile_and_live_status_hold() {
    let pki = Pki::new();
    let v = pki.verifier(&["operator"]);
    let good = pki.leaf(1, &["clientAuth"], Some("operator"), false);
    assert_eq!(check(&v, &good), Ok(()));

    // No extended key usage at all: RFC 5280 reads it as "any purpose", we do not.
    let no_eku = pki.leaf(2, &[], Some("operator"), false);
    let e = check(&v, &no_eku).unwrap_err();
    assert!(e.contains("clientAuth"), "{e}");
    let server_only = pki.leaf(3, &["serverAuth"], Some("operator"), false);
    assert!(check(&v, &server_only).unwrap_err().contains("clientAuth"));

    // A profile not meant for this listener.
    let node = pki.leaf(4, &["clientAuth"], Some("node-tls"), false);
    let e = check(&v, &node).unwrap_err();
    assert!(e.contains("'node-tls'"), "{e}");
    assert_eq!(check(&pki.verifier(&["node-tls"]), &node), Ok(()));

    // Signed by our CA but never recorded: not ours.
    let unknown = pki.leaf(5, &["clientAuth"], None, false);
    assert!(check(&v, &unknown).unwrap_err().contains("not issued"));

    // Revoked or on hold a moment ago: refused at the next handshake.
    let held = pki.leaf(6, &["clientAuth"], Some("operator"), false);
    assert_eq!(check(&v, &held), Ok(()));
    pki.revoke(&held, 6);
    assert!(
        check(&v, &held)
            .unwrap_err()
            .to_lowercase()
            .contains("revoked")
    );

    // Expired at the handshake time.
    let e = v
        .verify_client_cert(
            &CertificateDer::from(good.der.clone()),
            &[],
            at(NOW + 86400 * 400),
        )
        .unwrap_err();
    assert!(e.to_string().contains("chain"), "{e}");

    // Another hierarchy's certificate with the same names does not chain.
    let other = Pki::new();
    let stranger = other.leaf(1, &["clientAuth"], Some("operator"), false);
    assert!(check(&v, &stranger).is_err());
}

#[test]
fn the_client_certificate_is_optional_unless_made_mandatory() {
    let pki = Pki::new();
    assert!(!pki.verifier(&["operator"]).client_auth_mandatory());
    assert!(
        pki.verifier(&["operator"])
            .mandatory()
            .client_auth_mandatory()
    );
}

/// Moves TLS records between a client and a server until neither has anything to send.
fn pump(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let moved_c = !buf.is_empty();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
        }
        server.process_new_packets().unwrap();
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let moved_s = !buf.is_empty();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        client.process_new_packets().unwrap();
        if !moved_c && !moved_s {
            return;
        }
    }
    panic!("the handshake does not settle");
}

#[test]
fn every_connection_makes_a_full_handshake_with_the_client_certificate_checked() {
    let pki = Pki::new();
    let server_leaf = pki.leaf(1, &["serverAuth"], Some("tls-server"), true);
    let client_leaf = pki.leaf(2, &["clientAuth"], Some("node-tls"), false);
    let server_key: TlsKey = server_leaf.key.clone();
    let server = Arc::new(
        server_config(
            server_key,
            vec![server_leaf.der.clone(), pki.ca_der.clone()],
            Arc::new(pki.verifier(&["node-tls"]).mandatory()),
        )
        .unwrap(),
    );
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(!server.ticketer.enabled());
    assert!(!server.session_storage.can_cache());

    let client_key: TlsKey = client_leaf.key.clone();
    let client = Arc::new(
        client_config(
            client_key,
            vec![client_leaf.der.clone(), pki.ca_der.clone()],
            vec![pki.root_der.clone()],
        )
        .unwrap(),
    );
    let name = ServerName::try_from("appliance.example.test").unwrap();
    for round in 0..2 {
        let mut c = rustls::ClientConnection::new(client.clone(), name.clone()).unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        pump(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking(), "round {round}");
        // The client keeps what it could resume with; the server offers nothing to resume.
        assert_eq!(
            s.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "round {round}"
        );
        let seen = s.peer_certificates().unwrap();
        assert_eq!(seen[0].as_ref(), client_leaf.der.as_slice());
    }

    // Revoked now: the next handshake fails at the server.
    pki.revoke(&client_leaf, 1);
    let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    let mut buf = Vec::new();
    let mut failed = false;
    for _ in 0..10 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        if s.process_new_packets().is_err() {
            failed = true;
            break;
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        if c.process_new_packets().is_err() {
            break;
        }
    }
    assert!(failed, "the server refuses a revoked client certificate");
}
