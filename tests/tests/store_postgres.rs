//! The appliance on PostgreSQL (`[store] backend = "postgres"`): `init` writes the hierarchy
//! into the database, `serve` issues and revokes through it, OCSP follows, and while the database
//! is down writes are refused and OCSP answers `tryLater`; once it is back, the same `serve`
//! carries on without a restart.

use std::time::Duration;

use cps_store::{PgOptions, PgStore, Store};
use cps_testkit::postgres::Postgres;
use cps_trust_tests::*;

#[test]
fn init_and_serve_on_postgres_survive_a_database_outage() {
    let mut pg = Postgres::start();
    let url = pg.create_database("cps");
    let home = Home::new();
    let out = home.cps(&["init", "--store-url", &url, "--time-source", "declared"]);
    assert_success(&out, "cps-trust init --store-url");
    assert!(
        home.config_text().contains("backend = \"postgres\""),
        "{}",
        home.config_text()
    );
    assert!(!home.join("store").exists(), "no embedded store is created");
    {
        let db = PgStore::open(&url, PgOptions::default()).unwrap();
        assert!(
            db.get_meta("hierarchy").unwrap().is_some(),
            "hierarchy in the database"
        );
        assert!(
            db.audit_len().unwrap() >= 1,
            "the ceremony is audited in the database"
        );
    }
    // A second init against the same database is refused: it holds an appliance already.
    let again = Home::new();
    let out = again.cps(&["init", "--store-url", &url, "--time-source", "declared"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already holds an appliance"),
        "{}",
        text(&out.stderr)
    );

    let mut app = Appliance::start(&home);
    let dir = tempfile::tempdir().unwrap();
    let csr = openssl_csr(dir.path(), "doc", "p256");
    let cert = dir.path().join("doc.pem");
    assert_success(
        &issue_org(
            &home,
            &csr,
            &cert,
            "org-tls-client",
            "318751275100020",
            "client.clinique.example",
            &[],
        ),
        "issue on postgres",
    );
    let serial = serial_of(&cert);
    assert!(ocsp_query(&home, &app, "organisations", &[&cert], &[]).contains(": good"));
    {
        let db = PgStore::open(&url, PgOptions::default()).unwrap();
        let page = db
            .list_certificates(Some("organisations"), None, 100)
            .unwrap();
        assert!(
            page.certificates
                .iter()
                .any(|c| c.holder.as_deref() == Some("318751275100020")),
            "the issued certificate is in the database"
        );
    }

    // The database goes away: writes answer 503, OCSP of a certificate not cached says tryLater.
    pg.stop();
    let out = home.revoke("organisations", &serial, "keyCompromise");
    assert!(!out.status.success(), "a revocation without a database");
    let err = text(&out.stderr);
    // The mutual-TLS handshake itself checks the client certificate in the store and fails
    // closed (cps-tls): the client may see the connection refused rather than a 503.
    assert!(
        err.contains("503") || err.contains("unavailable") || err.contains("cannot reach"),
        "{err}\n{}",
        std::fs::read_to_string(home.serve_log()).unwrap_or_default()
    );
    // No "good" from a cache that cannot check the version: OCSP fails closed.
    let answer = ocsp_query(&home, &app, "organisations", &[&cert], &[]);
    assert!(answer.to_lowercase().contains("trylater"), "{answer}");

    // Back: the same serve revokes, and OCSP says revoked at once.
    pg.restart();
    wait_for(
        "revocation after the database is back",
        Duration::from_secs(30),
        || {
            home.revoke("organisations", &serial, "keyCompromise")
                .status
                .success()
                .then_some(())
        },
    );
    let answer = ocsp_query(&home, &app, "organisations", &[&cert], &[]);
    assert!(answer.contains(": revoked"), "{answer}");
    app.daemon.stop(Duration::from_secs(10));
}
