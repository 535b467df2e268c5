use super::*;
use crate::crypto::TestRng;
use crate::state::{CardState, DEFAULT_MGMT_KEY, MgmtAlg};

fn card(alg: MgmtAlg) -> Card {
    Card::new(CardState::blank([0x11; 16], "20301231", alg))
}

/// Sends one APDU, follows 61xx with GET RESPONSE; returns (data, sw).
fn tx(c: &mut Card, rng: &mut TestRng, apdu: &[u8]) -> (Vec<u8>, u16) {
    let out = c.process(apdu, rng);
    let r = out.response;
    let (mut data, mut sw) = (
        r[..r.len() - 2].to_vec(),
        u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]),
    );
    while sw & 0xFF00 == 0x6100 {
        let le = (sw & 0xFF) as u8;
        let r = c.process(&[0, 0xC0, 0, 0, le], rng).response;
        data.extend_from_slice(&r[..r.len() - 2]);
        sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
    }
    (data, sw)
}

fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u8>) -> Vec<u8> {
    let mut v = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        v.push(data.len() as u8);
        v.extend_from_slice(data);
    }
    if let Some(l) = le {
        v.push(l);
    }
    v
}

/// Sends long data with command chaining (255-byte parts).
fn tx_chained(
    c: &mut Card,
    rng: &mut TestRng,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
) -> (Vec<u8>, u16) {
    let parts: Vec<&[u8]> = data.chunks(255).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let a = apdu(
            if last { 0x00 } else { 0x10 },
            ins,
            p1,
            p2,
            part,
            if last { Some(0) } else { None },
        );
        let r = tx(c, rng, &a);
        if !last {
            assert_eq!(r.1, 0x9000);
        } else {
            return r;
        }
    }
    unreachable!()
}

fn mgmt_auth(c: &mut Card, rng: &mut TestRng, alg: MgmtAlg, key: &[u8]) -> u16 {
    let (r, sw) = tx(
        c,
        rng,
        &apdu(0, 0x87, alg.id(), 0x9B, &[0x7C, 0x02, 0x80, 0x00], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    let t = tlv::read_single(&r).unwrap();
    let w = tlv::read_single(t.value).unwrap();
    let plain = crypto::mgmt_cipher(alg, key, w.value, false).unwrap();
    let bl = alg.block_len();
    let challenge = vec![0x5A; bl];
    let mut inner = tlv::tlv(0x80, &plain);
    inner.extend(tlv::tlv(0x81, &challenge));
    let (r, sw) = tx(
        c,
        rng,
        &apdu(0, 0x87, alg.id(), 0x9B, &tlv::tlv(0x7C, &inner), Some(0)),
    );
    if sw != 0x9000 {
        return sw;
    }
    let t = tlv::read_single(&r).unwrap();
    let resp = tlv::read_single(t.value).unwrap();
    assert_eq!(resp.tag, 0x82);
    assert_eq!(
        resp.value,
        crypto::mgmt_cipher(alg, key, &challenge, true).unwrap()
    );
    sw
}

fn pin(p: &str) -> Vec<u8> {
    crate::state::pad_pin(p).unwrap()
}

#[test]
fn select_full_and_partial_aid() {
    let mut rng = TestRng(1);
    let mut c = card(MgmtAlg::Aes192);
    let (r, sw) = tx(&mut c, &mut rng, &apdu(0, 0xA4, 4, 0, &PIV_AID, Some(0)));
    assert_eq!(sw, 0x9000);
    let apt = tlv::read_single(&r).unwrap();
    assert_eq!(apt.tag, 0x61);
    let items = tlv::read_all(apt.value, 10).unwrap();
    assert_eq!(items[0].tag, 0x4F);
    assert_eq!(items[0].value, &PIV_AID[5..]);
    assert!(items.iter().any(|t| t.tag == 0x79));
    assert!(items.iter().any(|t| t.tag == 0x50));
    assert!(items.iter().any(|t| t.tag == 0xAC));
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xA4, 4, 0, &PIV_AID[..9], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xA4, 4, 0, &[0xA0, 0, 0, 1, 1, 1], Some(0)),
    );
    assert_eq!(sw, 0x6A82);
    let (_, sw) = tx(&mut c, &mut rng, &apdu(0, 0xA4, 0, 0x0C, &[0x3F, 0], None));
    assert_eq!(sw, 0x6A86);
}

#[test]
fn get_data_objects_and_le_chaining() {
    let mut rng = TestRng(1);
    let mut c = card(MgmtAlg::Aes192);
    let (d, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 1, 0x7E], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    assert_eq!(d, discovery_object());
    // Le = 8 gives the first 8 bytes and 61xx for the rest (OpenSC reads the length first).
    let out = c.process(
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02], Some(8)),
        &mut rng,
    );
    assert_eq!(out.response.len(), 10);
    assert_eq!(out.response[8], 0x61);
    let total = tlv::read(&out.response[..8]).err().is_some();
    assert!(total, "first 8 bytes are a truncated TLV");
    let (d, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    let chuid = tlv::read_single(&d).unwrap();
    assert_eq!(chuid.tag, 0x53);
    let guid = tlv::read_all(chuid.value, 10)
        .unwrap()
        .into_iter()
        .find(|t| t.tag == 0x34)
        .unwrap();
    assert_eq!(guid.value, &[0x11; 16]);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x07], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    // absent object, unknown object, PIN-protected object, bad P1P2, bad data
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05], Some(0)),
    );
    assert_eq!(sw, 0x6A82);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x77], Some(0)),
    );
    assert_eq!(sw, 0x6A82);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x09], Some(0)),
    );
    assert_eq!(sw, 0x6982);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0x00, &[0x5C, 1, 0x7E], Some(0)),
    );
    assert_eq!(sw, 0x6A86);
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5D, 1, 0x7E], Some(0)),
    );
    assert_eq!(sw, 0x6A80);
    // GET RESPONSE with nothing pending
    let (_, sw) = tx(&mut c, &mut rng, &[0, 0xC0, 0, 0, 0]);
    assert_eq!(sw, 0x6985);
}

#[test]
fn pin_retry_counter_block_and_unblock() {
    let mut rng = TestRng(1);
    let mut c = card(MgmtAlg::Aes192);
    let status = |c: &mut Card, rng: &mut TestRng| tx(c, rng, &[0, 0x20, 0, 0x80]).1;
    assert_eq!(status(&mut c, &mut rng), 0x63C3);
    let out = c.process(&apdu(0, 0x20, 0, 0x80, &pin("123456"), None), &mut rng);
    assert_eq!(out.response, [0x90, 0]);
    assert!(!out.persist, "counter unchanged: nothing to persist");
    assert_eq!(status(&mut c, &mut rng), 0x9000);
    // logout
    assert_eq!(tx(&mut c, &mut rng, &[0, 0x20, 0xFF, 0x80]).1, 0x9000);
    assert_eq!(status(&mut c, &mut rng), 0x63C3);
    // malformed PIN: refused without counting
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x20, 0, 0x80, b"1234", None)).1,
        0x6A80
    );
    for left in [2u16, 1, 0] {
        let out = c.process(&apdu(0, 0x20, 0, 0x80, &pin("654321"), None), &mut rng);
        assert!(out.persist);
        assert_eq!(
            u16::from_be_bytes([out.response[0], out.response[1]]),
            0x63C0 | left
        );
    }
    assert_eq!(status(&mut c, &mut rng), 0x6983);
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x6983
    );
    // wrong PUK counts too
    let mut body = pin("11111111");
    body.extend(pin("222222"));
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x2C, 0, 0x80, &body, None)).1,
        0x63C2
    );
    let mut body = pin("12345678");
    body.extend(pin("222222"));
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x2C, 0, 0x80, &body, None)).1,
        0x9000
    );
    assert_eq!(status(&mut c, &mut rng), 0x63C3);
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("222222"), None)
        )
        .1,
        0x9000
    );
    // change PIN and PUK
    let mut body = pin("222222");
    body.extend(pin("87654321"));
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x24, 0, 0x80, &body, None)).1,
        0x9000
    );
    let mut body = pin("12345678");
    body.extend(pin("99999999"));
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x24, 0, 0x81, &body, None)).1,
        0x9000
    );
    assert_eq!(c.state().puk, pin("99999999"));
    assert_eq!(c.state().pin, pin("87654321"));
}

#[test]
fn puk_blocks_after_three_failures() {
    let mut rng = TestRng(1);
    let mut c = card(MgmtAlg::Aes192);
    let mut body = pin("00000000");
    body.extend(pin("222222"));
    for expect in [0x63C2, 0x63C1, 0x63C0, 0x6983, 0x6983] {
        assert_eq!(
            tx(&mut c, &mut rng, &apdu(0, 0x2C, 0, 0x80, &body, None)).1,
            expect
        );
    }
    let mut body = pin("12345678");
    body.extend(pin("222222"));
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x2C, 0, 0x80, &body, None)).1,
        0x6983
    );
}

#[test]
fn management_key_mutual_and_external_authentication() {
    for alg in [MgmtAlg::Aes192, MgmtAlg::TripleDes] {
        let mut rng = TestRng(7);
        let mut c = card(alg);
        assert_eq!(mgmt_auth(&mut c, &mut rng, alg, &DEFAULT_MGMT_KEY), 0x9000);
        // wrong key
        let mut c = card(alg);
        assert_eq!(mgmt_auth(&mut c, &mut rng, alg, &[9u8; 24]), 0x6982);
        // wrong algorithm
        let other = if alg == MgmtAlg::Aes192 {
            MgmtAlg::TripleDes
        } else {
            MgmtAlg::Aes192
        };
        assert_eq!(
            tx(
                &mut c,
                &mut rng,
                &apdu(0, 0x87, other.id(), 0x9B, &[0x7C, 2, 0x80, 0], Some(0))
            )
            .1,
            0x6A86
        );
        // witness response without a witness request
        let mut inner = tlv::tlv(0x80, &vec![0; alg.block_len()]);
        inner.extend(tlv::tlv(0x81, &vec![0; alg.block_len()]));
        assert_eq!(
            tx(
                &mut c,
                &mut rng,
                &apdu(0, 0x87, alg.id(), 0x9B, &tlv::tlv(0x7C, &inner), Some(0))
            )
            .1,
            0x6985
        );
        // external authentication
        let (r, sw) = tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x87, alg.id(), 0x9B, &[0x7C, 2, 0x81, 0], Some(0)),
        );
        assert_eq!(sw, 0x9000);
        let ch = tlv::read_single(tlv::read_single(&r).unwrap().value)
            .unwrap()
            .value
            .to_vec();
        let enc = crypto::mgmt_cipher(alg, &DEFAULT_MGMT_KEY, &ch, true).unwrap();
        let (_, sw) = tx(
            &mut c,
            &mut rng,
            &apdu(
                0,
                0x87,
                alg.id(),
                0x9B,
                &tlv::tlv(0x7C, &tlv::tlv(0x82, &enc)),
                None,
            ),
        );
        assert_eq!(sw, 0x9000);
        // authenticated: PUT DATA works
        let obj = tlv::tlv(0x53, b"printed");
        let mut body = vec![0x5C, 3, 0x5F, 0xC1, 0x09];
        body.extend(&obj);
        assert_eq!(
            tx(&mut c, &mut rng, &apdu(0, 0xDB, 0x3F, 0xFF, &body, None)).1,
            0x9000
        );
    }
}

#[test]
fn put_data_needs_management_key_and_round_trips_with_chaining() {
    let mut rng = TestRng(3);
    let mut c = card(MgmtAlg::Aes192);
    let cert = vec![0x30; 1500];
    let mut obj = Vec::new();
    tlv::put(&mut obj, 0x70, &cert);
    tlv::put(&mut obj, 0x71, &[0]);
    tlv::put(&mut obj, 0xFE, &[]);
    let obj = tlv::tlv(0x53, &obj);
    let mut body = vec![0x5C, 3, 0x5F, 0xC1, 0x05];
    body.extend(&obj);
    assert_eq!(
        tx_chained(&mut c, &mut rng, 0xDB, 0x3F, 0xFF, &body).1,
        0x6982
    );
    assert_eq!(
        mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes192, &DEFAULT_MGMT_KEY),
        0x9000
    );
    assert_eq!(
        tx_chained(&mut c, &mut rng, 0xDB, 0x3F, 0xFF, &body).1,
        0x9000
    );
    let (d, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05], Some(0)),
    );
    assert_eq!(sw, 0x9000);
    assert_eq!(d, obj);
    // delete with an empty 53
    let mut body = vec![0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 0x00];
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0xDB, 0x3F, 0xFF, &body, None)).1,
        0x9000
    );
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05], Some(0))
        )
        .1,
        0x6A82
    );
    // wrong inner tag, trailing garbage, discovery not writable
    body[5] = 0x54;
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0xDB, 0x3F, 0xFF, &body, None)).1,
        0x6A80
    );
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(
                0,
                0xDB,
                0x3F,
                0xFF,
                &[0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 0, 1],
                None
            )
        )
        .1,
        0x6A80
    );
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0xDB, 0x3F, 0xFF, &[0x5C, 1, 0x7E, 0x7E, 0], None)
        )
        .1,
        0x6A81
    );
    // reset loses the management-key authentication
    c.reset();
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(
                0,
                0xDB,
                0x3F,
                0xFF,
                &[0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 0],
                None
            )
        )
        .1,
        0x6982
    );
}

fn generate(c: &mut Card, rng: &mut TestRng, slot: u8, alg: u8) -> (Vec<u8>, u16) {
    tx(
        c,
        rng,
        &apdu(0, 0x47, 0, slot, &[0xAC, 3, 0x80, 1, alg], Some(0)),
    )
}

#[test]
fn p256_generate_and_sign_with_pin_rules() {
    let mut rng = TestRng(5);
    let mut c = card(MgmtAlg::Aes192);
    assert_eq!(generate(&mut c, &mut rng, 0x9A, 0x11).1, 0x6982);
    mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes192, &DEFAULT_MGMT_KEY);
    let (pubkey_9a, sw) = generate(&mut c, &mut rng, 0x9A, 0x11);
    assert_eq!(sw, 0x9000);
    let (pubkey_9c, sw) = generate(&mut c, &mut rng, 0x9C, 0x11);
    assert_eq!(sw, 0x9000);
    assert_eq!(
        generate(&mut c, &mut rng, 0x9A, 0x06).1,
        0x6A80,
        "RSA-1024 is refused"
    );
    assert_eq!(generate(&mut c, &mut rng, 0x82, 0x11).1, 0x6A86);
    let point = |t: &[u8]| {
        let o = tlv::read_single(t).unwrap();
        assert_eq!(o.tag, 0x7F49);
        tlv::read_single(o.value).unwrap().value.to_vec()
    };
    let msg = b"login challenge";
    let digest = ring::digest::digest(&ring::digest::SHA256, msg);
    let mut inner = vec![0x82, 0x00];
    inner.extend(tlv::tlv(0x81, digest.as_ref()));
    let sign = tlv::tlv(0x7C, &inner);
    // no PIN yet
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9A, &sign, Some(0))).1,
        0x6982
    );
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x87, 0x07, 0x9A, &sign, Some(0))).1,
        0x6A86
    );
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x9000
    );
    for _ in 0..2 {
        // 9A: PIN once per session
        let (r, sw) = tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9A, &sign, Some(0)));
        assert_eq!(sw, 0x9000);
        let sig = tlv::read_single(tlv::read_single(&r).unwrap().value)
            .unwrap()
            .value
            .to_vec();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            point(&pubkey_9a),
        )
        .verify(msg, &sig)
        .unwrap();
    }
    // 9C: PIN always — the VERIFY above was consumed? (not yet: 9C not used)
    let (r, sw) = tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9C, &sign, Some(0)));
    assert_eq!(sw, 0x9000);
    let sig = tlv::read_single(tlv::read_single(&r).unwrap().value)
        .unwrap()
        .value
        .to_vec();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        point(&pubkey_9c),
    )
    .verify(msg, &sig)
    .unwrap();
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9C, &sign, Some(0))).1,
        0x6982,
        "second use needs a new VERIFY"
    );
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9C, &sign, Some(0))).1,
        0x9000
    );
    // wrong digest size
    let mut inner = vec![0x82, 0x00];
    inner.extend(tlv::tlv(0x81, &[1; 20]));
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x87, 0x11, 0x9A, &tlv::tlv(0x7C, &inner), Some(0))
        )
        .1,
        0x6A80
    );
    // no key in 9E
    assert_eq!(
        tx(&mut c, &mut rng, &apdu(0, 0x87, 0x11, 0x9E, &sign, Some(0))).1,
        0x6A88
    );
    // private key material is never in any response: generate output is public only
    assert!(pubkey_9a.len() < 80);
}

#[test]
fn rsa2048_generate_and_raw_sign_with_response_chaining() {
    let mut rng = TestRng(9);
    let mut c = card(MgmtAlg::Aes192);
    mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes192, &DEFAULT_MGMT_KEY);
    // the 7F49 template is longer than 256 bytes: 61xx + GET RESPONSE
    let out = c.process(
        &apdu(0, 0x47, 0, 0x9C, &[0xAC, 3, 0x80, 1, 0x07], Some(0)),
        &mut rng,
    );
    assert!(out.persist);
    let r = out.response;
    assert_eq!(r.len(), 258);
    assert_eq!(r[256], 0x61);
    let mut public = r[..256].to_vec();
    let rest = c.process(&[0, 0xC0, 0, 0, r[257]], &mut rng).response;
    assert_eq!(&rest[rest.len() - 2..], &[0x90, 0]);
    public.extend_from_slice(&rest[..rest.len() - 2]);
    let t = tlv::read_single(&public).unwrap();
    let items = tlv::read_all(t.value, 4).unwrap();
    let n = items.iter().find(|i| i.tag == 0x81).unwrap().value.to_vec();
    let e = items.iter().find(|i| i.tag == 0x82).unwrap().value.to_vec();
    assert_eq!(n.len(), 256);
    // PKCS#1 v1.5 padding done by the host, raw RSA on the card (what OpenSC does)
    let msg = b"signed with the CPS signature key";
    let digest = ring::digest::digest(&ring::digest::SHA256, msg);
    let prefix: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 19 - 32 - 1, 0xFF);
    block.push(0);
    block.extend_from_slice(&prefix);
    block.extend_from_slice(digest.as_ref());
    assert_eq!(block.len(), 256);
    let mut inner = vec![0x82, 0x00];
    inner.extend(tlv::tlv(0x81, &block));
    let body = tlv::tlv(0x7C, &inner);
    assert_eq!(
        tx(
            &mut c,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x9000
    );
    let (r, sw) = tx_chained(&mut c, &mut rng, 0x87, 0x07, 0x9C, &body);
    assert_eq!(sw, 0x9000);
    let sig = tlv::read_single(tlv::read_single(&r).unwrap().value)
        .unwrap()
        .value
        .to_vec();
    assert_eq!(sig.len(), 256);
    ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, msg, &sig)
        .unwrap();
    // the key survives a save/load cycle of the state
    let state = CardState::from_json(&c.state().to_json()).unwrap();
    let mut c2 = Card::new(state);
    assert!(c2.has_key(0x9C));
    assert_eq!(
        tx(
            &mut c2,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x9000
    );
    let (r2, sw) = tx_chained(&mut c2, &mut rng, 0x87, 0x07, 0x9C, &body);
    assert_eq!(sw, 0x9000);
    assert_eq!(r2, r, "raw RSA is deterministic");
    // input >= n is refused
    let mut inner = vec![0x82, 0x00];
    inner.extend(tlv::tlv(0x81, &[0xFF; 256]));
    assert_eq!(
        tx(
            &mut c2,
            &mut rng,
            &apdu(0, 0x20, 0, 0x80, &pin("123456"), None)
        )
        .1,
        0x9000
    );
    assert_eq!(
        tx_chained(&mut c2, &mut rng, 0x87, 0x07, 0x9C, &tlv::tlv(0x7C, &inner)).1,
        0x6A80
    );
}

#[test]
fn error_status_words() {
    let mut rng = TestRng(1);
    let mut c = card(MgmtAlg::Aes192);
    assert_eq!(tx(&mut c, &mut rng, &[0, 0x12, 0, 0]).1, 0x6D00);
    assert_eq!(tx(&mut c, &mut rng, &[0x80, 0xCB, 0x3F, 0xFF]).1, 0x6E00);
    assert_eq!(tx(&mut c, &mut rng, &[0x0C, 0xCB, 0x3F, 0xFF]).1, 0x6882);
    assert_eq!(c.process(&[0, 0xCB, 0x3F], &mut rng).response, [0x67, 0]);
    assert_eq!(
        c.process(&[0, 0xCB, 0x3F, 0xFF, 5, 1], &mut rng).response,
        [0x67, 0]
    );
    assert_eq!(tx(&mut c, &mut rng, &[0, 0x20, 0, 0x81]).1, 0x6A88);
    assert_eq!(tx(&mut c, &mut rng, &[0, 0x20, 1, 0x80]).1, 0x6A86);
}

/// Every INS byte, random P1/P2/bodies, every CLA flavour: no panic, always a valid status word.
#[test]
fn every_ins_with_random_parameters_answers_a_valid_status_word() {
    let mut rng = TestRng(42);
    let mut g8 = TestRng(4242);
    let mut c = card(MgmtAlg::Aes192);
    // authenticate so that PUT DATA / GENERATE paths are reachable too
    mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes192, &DEFAULT_MGMT_KEY);
    tx(
        &mut c,
        &mut rng,
        &apdu(0, 0x20, 0, 0x80, &pin("123456"), None),
    );
    let byte = |g: &mut TestRng| {
        let mut b = [0u8; 1];
        g.fill(&mut b);
        b[0]
    };
    for ins in 0..=255u8 {
        for round in 0..40 {
            let cla = match round % 4 {
                0 => 0x00,
                1 => 0x10,
                _ => byte(&mut g8),
            };
            let (p1, p2) = match round % 5 {
                0 => (0x3F, 0xFF),
                1 => (0x00, 0x9A),
                2 => (0x11, 0x9C),
                _ => (byte(&mut g8), byte(&mut g8)),
            };
            let len = (byte(&mut g8) as usize) % 300;
            let mut body = vec![0u8; len];
            g8.fill(&mut body);
            if round % 3 == 0 && len > 2 {
                body[0] = [0x5C, 0x7C, 0xAC, 0x53][round % 4];
                body[1] = (len - 2).min(127) as u8;
            }
            let mut a = vec![cla, ins, p1, p2];
            match round % 6 {
                0 => {}
                1 => a.push(byte(&mut g8)),
                2 if len > 0 && len < 256 => {
                    a.push(len as u8);
                    a.extend(&body);
                    a.push(0);
                }
                3 => {
                    a.push(0);
                    a.extend(((len as u16).max(1)).to_be_bytes());
                    a.extend(&body[..len.max(1).min(body.len())]);
                }
                _ => a.extend(&body),
            }
            let r = c.process(&a, &mut rng).response;
            assert!(r.len() >= 2, "ins {ins:02x}: empty response");
            let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
            assert!(
                valid_sw(sw),
                "ins {ins:02x} apdu {} -> sw {sw:04x}",
                hex::encode(&a)
            );
            if sw & 0xFF00 != 0x6100 {
                assert!(
                    r.len() == 2 || sw == 0x9000,
                    "data with an error status: {sw:04x}"
                );
            }
        }
    }
}

pub(crate) fn valid_sw(sw: u16) -> bool {
    crate::apdu::sw::is_valid(sw)
}

#[test]
fn set_management_key_needs_authentication_and_replaces_the_key() {
    let mut rng = TestRng(7);
    let mut c = card(MgmtAlg::Aes192);
    let new_key = [0x42u8; 32];
    let mut body = vec![MgmtAlg::Aes256.id(), 0x9B, 32];
    body.extend_from_slice(&new_key);
    // Not authenticated: refused.
    let (_, sw) = tx(&mut c, &mut rng, &apdu(0, 0xFF, 0xFF, 0xFF, &body, None));
    assert_eq!(sw, 0x6982);
    assert_eq!(
        mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes192, &DEFAULT_MGMT_KEY),
        0x9000
    );
    // Malformed: wrong length for the algorithm, wrong tag, wrong P1/P2.
    let (_, sw) = tx(
        &mut c,
        &mut rng,
        &apdu(0, 0xFF, 0xFF, 0xFF, &body[..20], None),
    );
    assert_eq!(sw, 0x6A80);
    let mut bad = body.clone();
    bad[1] = 0x9A;
    let (_, sw) = tx(&mut c, &mut rng, &apdu(0, 0xFF, 0xFF, 0xFF, &bad, None));
    assert_eq!(sw, 0x6A80);
    let (_, sw) = tx(&mut c, &mut rng, &apdu(0, 0xFF, 0x00, 0xFF, &body, None));
    assert_eq!(sw, 0x6A86);
    let (_, sw) = tx(&mut c, &mut rng, &apdu(0, 0xFF, 0xFF, 0xFF, &body, None));
    assert_eq!(sw, 0x9000);
    // Only the new key authenticates now.
    c.reset();
    assert_eq!(
        mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes256, &[0x11; 32]),
        0x6982
    );
    c.reset();
    assert_eq!(
        mgmt_auth(&mut c, &mut rng, MgmtAlg::Aes256, &new_key),
        0x9000
    );
}
