//! Canonical XML 1.1 of document subsets, held against xmlsec1 (libxml2's C14N 1.1): each case
//! is a document with a signature template whose reference selects the subtree with
//! `#xpointer(id(...))` (comments kept) and a c14n11 transform; xmlsec1 signs it and prints the
//! octets it digested (`--store-references`), which must equal ours byte for byte.

use std::process::Command;

use cps_xua::c14n::{Mode, canonicalize_11, canonicalize_mode};

const TEMPLATE: &str = r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#xpointer(id('T'))"><ds:Transforms><ds:Transform Algorithm="ALG"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>"##;

/// What xmlsec1 digests for the element with `Id="T"` (local name `elem`) of `doc`, where
/// `doc` holds `{SIG}` in place of the signature template.
fn xmlsec1_c14n11(doc: &str, elem: &str, with_comments: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl genrsa");
    let alg = if with_comments {
        "http://www.w3.org/2006/12/xml-c14n11#WithComments"
    } else {
        "http://www.w3.org/2006/12/xml-c14n11"
    };
    let file = dir.path().join("doc.xml");
    std::fs::write(&file, doc.replace("{SIG}", &TEMPLATE.replace("ALG", alg))).unwrap();
    let out = Command::new("xmlsec1")
        .args(["--sign", "--store-references", "--privkey-pem"])
        .arg(&key)
        .args(["--id-attr:Id", elem])
        .arg(&file)
        .output()
        .expect("xmlsec1 (a required peer)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "xmlsec1: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = "== PreDigest data - start buffer:\n";
    let i = text.find(start).expect("pre-digest buffer") + start.len();
    let j = text[i..].find("\n== PreDigest data - end buffer").unwrap() + i;
    text[i..j].to_owned()
}

fn ours(doc: &str, with_comments: bool) -> String {
    let xml = doc.replace("{SIG}", "");
    let d = roxmltree::Document::parse(&xml).unwrap();
    let apex = d
        .descendants()
        .find(|n| n.attribute("Id") == Some("T"))
        .unwrap();
    let mut out = Vec::new();
    canonicalize_11(apex, None, with_comments, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn check(doc: &str, elem: &str) {
    for with_comments in [true, false] {
        // xmlsec1 digests the document with the template in it; ours canonicalises the same
        // subtree of the document without it (the template is a sibling, outside the subset).
        let theirs = xmlsec1_c14n11(doc, elem, with_comments);
        assert_eq!(
            ours(doc, with_comments),
            theirs,
            "comments={with_comments}: {doc}"
        );
    }
}

#[test]
fn inherited_namespaces_lang_and_space_and_default_undeclaration() {
    check(
        r#"<r xmlns="urn:d" xmlns:a="urn:a" xmlns:unused="urn:u" xml:lang="fr" xml:space="preserve"><!-- c0 --><a:e Id="T" xmlns:b="urn:b"><f xmlns="" b:z="1"><!-- in --></f></a:e>{SIG}</r>"#,
        "e",
    );
}

#[test]
fn xml_id_of_an_ancestor_is_not_inherited_own_lang_wins() {
    check(
        r#"<r xml:id="top" xml:lang="fr"><m xml:lang="de" xml:id="mid"><e Id="T" xml:lang="en"><g xml:id="own"/></e></m>{SIG}</r>"#,
        "e",
    );
}

#[test]
fn redeclarations_rebinding_attribute_order_and_escaping() {
    check(
        "<p:r xmlns:p=\"urn:1\" xmlns:q=\"urn:q\"><p:e Id=\"T\" z=\"1\" q:b=\"&amp;&lt;&quot;&#9;&#10;&#13;\" a=\"x\" xmlns:p=\"urn:1\"><p:c xmlns:p=\"urn:2\" xmlns:q=\"urn:q\">a&amp;b&lt;c&gt;&#13;<?pi  data ?></p:c><d xmlns=\"urn:e\"><x xmlns=\"\"/></d></p:e>{SIG}</p:r>",
        "e",
    );
}

#[test]
fn apex_without_default_namespace_under_a_default_one() {
    check(
        r#"<r xmlns="urn:d"><e xmlns="" Id="T"><f/></e>{SIG}</r>"#,
        "e",
    );
}

#[test]
fn xml_base_is_refused_not_half_implemented() {
    let xml = r#"<r xml:base="http://a/b/"><e Id="T" xml:base="c/"/></r>"#;
    let d = roxmltree::Document::parse(xml).unwrap();
    let e = d
        .descendants()
        .find(|n| n.attribute("Id") == Some("T"))
        .unwrap();
    let mut out = Vec::new();
    assert!(canonicalize_11(e, None, false, &mut out).is_err());
    // The exclusive mode is unchanged: xml: attributes of ancestors are not its concern.
    let mut out = Vec::new();
    let none = cps_xua::c14n::InclusivePrefixes::none();
    canonicalize_mode(e, None, Mode::Exclusive(&none), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"<e Id="T" xml:base="c/"></e>"#
    );
}
