//! Exclusive XML Canonicalization 1.0 without comments
//! (<http://www.w3.org/2001/10/xml-exc-c14n#>) and Canonical XML 1.1 with or without comments
//! (<http://www.w3.org/2006/12/xml-c14n11>) over a `roxmltree` subtree.
//!
//! Canonical XML 1.1 of a subtree renders every namespace in scope at its apex (not only the
//! visibly utilised ones), and gives the apex the `xml:lang` and `xml:space` it inherits from
//! the ancestors that are left out (`xml:id` is not inherited). `xml:base` would need the URI
//! fix-up of the specification: a subtree with `xml:base` on its apex or an ancestor is refused
//! rather than half-implemented.
//!
//! The canonical form is written from the parsed data model, never copied from the input bytes:
//! element and attribute names with the prefixes the document used, namespace declarations only
//! where a prefix is visibly utilised (or listed in the `InclusiveNamespaces` prefix list) and not
//! already rendered by an output ancestor, attributes sorted by namespace URI then local name,
//! values and text re-escaped, comments dropped, processing instructions kept, empty elements
//! written as start and end tags. The enveloped-signature transform is the `exclude` node.
//!
//! `roxmltree` does not keep prefixes in its tree, so they are read back from the source text at
//! the positions it records, and checked against the names it resolved.

use roxmltree::{Node, NodeType};

use crate::ns;

/// Why a subtree could not be canonicalised (only for documents that `roxmltree` accepted but
/// whose recorded positions do not match its names, which a well-formed document never does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("canonicalisation failed: {0}")]
pub struct C14nError(pub String);

/// The prefix list of an `InclusiveNamespaces` parameter: prefixes treated as by inclusive
/// canonicalisation. `#default` stands for the default namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InclusivePrefixes(Vec<String>);

impl InclusivePrefixes {
    /// Parse a `PrefixList` attribute (whitespace-separated NCNames or `#default`).
    pub fn parse(list: &str) -> Self {
        InclusivePrefixes(list.split_ascii_whitespace().map(str::to_owned).collect())
    }

    /// No inclusive prefixes.
    pub fn none() -> Self {
        InclusivePrefixes(Vec::new())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The prefixes as given.
    pub fn prefixes(&self) -> &[String] {
        &self.0
    }
}

/// The canonicalisation algorithm of [`canonicalize_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'p> {
    /// Exclusive XML Canonicalization 1.0 without comments, with an `InclusiveNamespaces` list.
    Exclusive(&'p InclusivePrefixes),
    /// Canonical XML 1.1 (inclusive), comments kept when `with_comments`.
    Inclusive11 {
        /// `#WithComments`.
        with_comments: bool,
    },
}

/// Canonicalise the subtree rooted at `apex` with `mode`, leaving out `exclude` and its
/// descendants, appending the octets to `out`.
pub fn canonicalize_mode(
    apex: Node<'_, '_>,
    exclude: Option<Node<'_, '_>>,
    mode: Mode<'_>,
    out: &mut Vec<u8>,
) -> Result<(), C14nError> {
    run(apex, exclude, mode, out, &mut Scratch::new())
}

/// Canonical XML 1.1 of the subtree rooted at `apex`, leaving out `exclude` and its descendants.
pub fn canonicalize_11(
    apex: Node<'_, '_>,
    exclude: Option<Node<'_, '_>>,
    with_comments: bool,
    out: &mut Vec<u8>,
) -> Result<(), C14nError> {
    run(
        apex,
        exclude,
        Mode::Inclusive11 { with_comments },
        out,
        &mut Scratch::new(),
    )
}

/// Canonicalise the subtree rooted at `apex` (an element), leaving out `exclude` and its
/// descendants, appending the octets to `out`.
pub fn canonicalize(
    apex: Node<'_, '_>,
    exclude: Option<Node<'_, '_>>,
    inclusive: &InclusivePrefixes,
    out: &mut Vec<u8>,
) -> Result<(), C14nError> {
    canonicalize_with(apex, exclude, inclusive, out, &mut Scratch::new())
}

/// The working lists of [`canonicalize`], which a caller canonicalising several subtrees of one
/// document (the validator: the assertion, then `SignedInfo`) allocates once.
pub(crate) struct Scratch<'a> {
    /// Namespace declarations rendered by the open output ancestors, outermost first.
    rendered: Vec<(&'a str, &'a str)>,
    /// Per open element: how many rendered namespaces to keep when it closes, and its name.
    marks: Vec<(usize, &'a str)>,
    /// The namespace declarations of the element being written.
    decls: Vec<(&'a str, &'a str)>,
    /// The attributes of the element being written.
    attrs: Vec<(&'a str, &'a str, &'a str, &'a str)>,
}

impl Scratch<'_> {
    pub(crate) fn new() -> Self {
        Scratch {
            rendered: Vec::with_capacity(8),
            marks: Vec::with_capacity(16),
            decls: Vec::with_capacity(4),
            attrs: Vec::with_capacity(8),
        }
    }
}

/// [`canonicalize`] with the caller's working lists (whatever they hold is discarded).
pub(crate) fn canonicalize_with<'a, 'i: 'a>(
    apex: Node<'a, 'i>,
    exclude: Option<Node<'_, '_>>,
    inclusive: &'a InclusivePrefixes,
    out: &mut Vec<u8>,
    scratch: &mut Scratch<'a>,
) -> Result<(), C14nError> {
    run(apex, exclude, Mode::Exclusive(inclusive), out, scratch)
}

fn run<'a, 'i: 'a>(
    apex: Node<'a, 'i>,
    exclude: Option<Node<'_, '_>>,
    mode: Mode<'a>,
    out: &mut Vec<u8>,
    scratch: &mut Scratch<'a>,
) -> Result<(), C14nError> {
    if !apex.is_element() {
        return Err(C14nError(
            "the apex of a canonicalised subtree must be an element".into(),
        ));
    }
    let input = apex.document().input_text();
    let exclude = exclude.map(|n| n.id());
    let Scratch {
        rendered,
        marks,
        decls,
        attrs,
    } = scratch;
    rendered.clear();
    marks.clear();
    let mut inherited: [Option<(&'static str, &'a str)>; 2] = [None, None];
    if let Mode::Inclusive11 { .. } = mode {
        for n in apex.ancestors().filter(|n| n.is_element()) {
            if n.attribute((ns::XML, "base")).is_some() {
                return Err(C14nError(
                    "xml:base on a canonicalised subtree or its ancestors is not supported".into(),
                ));
            }
        }
        for (i, (local, qname)) in [("lang", "xml:lang"), ("space", "xml:space")]
            .into_iter()
            .enumerate()
        {
            if apex.attribute((ns::XML, local)).is_none() {
                inherited[i] = apex
                    .ancestors()
                    .skip(1)
                    .find_map(|a| a.attribute((ns::XML, local)))
                    .map(|v| (qname, v));
            }
        }
    }
    let with_comments = matches!(
        mode,
        Mode::Inclusive11 {
            with_comments: true
        }
    );
    let mut walk = traverse(apex);
    while let Some(edge) = walk.next() {
        match edge {
            Edge::Open(n) => {
                if Some(n.id()) == exclude {
                    // Left out with its descendants: go straight to its end.
                    walk.skip_children(n);
                    continue;
                }
                match n.node_type() {
                    NodeType::Element => {
                        let (qname, prefix) = element_qname(n, input)?;
                        marks.push((rendered.len(), qname));
                        let inherit: &[Option<(&'static str, &'a str)>] =
                            if n == apex { &inherited } else { &[] };
                        open_element(
                            n, qname, prefix, input, mode, inherit, rendered, decls, attrs, out,
                        )?;
                    }
                    NodeType::Text => escape_text(n.text().unwrap_or(""), out),
                    NodeType::PI => {
                        if let Some(pi) = n.pi() {
                            out.extend_from_slice(b"<?");
                            out.extend_from_slice(pi.target.as_bytes());
                            if let Some(v) = pi.value.filter(|v| !v.is_empty()) {
                                out.push(b' ');
                                out.extend_from_slice(v.as_bytes());
                            }
                            out.extend_from_slice(b"?>");
                        }
                    }
                    NodeType::Comment if with_comments => {
                        out.extend_from_slice(b"<!--");
                        out.extend_from_slice(n.text().unwrap_or("").as_bytes());
                        out.extend_from_slice(b"-->");
                    }
                    NodeType::Comment | NodeType::Root => {}
                }
            }
            Edge::Close(n) => {
                if Some(n.id()) == exclude {
                    continue;
                }
                if n.is_element() {
                    let (m, qname) = marks
                        .pop()
                        .ok_or_else(|| C14nError("unbalanced element".into()))?;
                    out.extend_from_slice(b"</");
                    out.extend_from_slice(qname.as_bytes());
                    out.push(b'>');
                    rendered.truncate(m);
                }
            }
        }
    }
    Ok(())
}

/// A step of a depth-first walk: entering or leaving a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge<'a, 'i> {
    Open(Node<'a, 'i>),
    Close(Node<'a, 'i>),
}

/// Iterative depth-first walk of the subtree rooted at `root` (no recursion, so no stack
/// exhaustion on deep input).
pub(crate) fn traverse<'a, 'i>(root: Node<'a, 'i>) -> Traverse<'a, 'i> {
    Traverse {
        root,
        next: Some(Edge::Open(root)),
    }
}

pub(crate) struct Traverse<'a, 'i> {
    root: Node<'a, 'i>,
    next: Option<Edge<'a, 'i>>,
}

impl<'a, 'i> Traverse<'a, 'i> {
    /// Called right after `Open(n)`: do not enter `n`, continue with `Close(n)`.
    pub(crate) fn skip_children(&mut self, n: Node<'a, 'i>) {
        debug_assert!(
            matches!(self.next, Some(Edge::Open(c)) if c.parent() == Some(n))
                || self.next == Some(Edge::Close(n))
        );
        self.next = Some(Edge::Close(n));
    }
}

impl<'a, 'i> Iterator for Traverse<'a, 'i> {
    type Item = Edge<'a, 'i>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let current = self.next?;
        self.next = match current {
            Edge::Open(n) => Some(match n.first_child() {
                Some(c) => Edge::Open(c),
                None => Edge::Close(n),
            }),
            Edge::Close(n) if n == self.root => None,
            Edge::Close(n) => match n.next_sibling() {
                Some(s) => Some(Edge::Open(s)),
                None => n.parent().map(Edge::Close),
            },
        };
        Some(current)
    }
}

/// The qualified name of an element as written in the source, and its prefix.
pub(crate) fn element_qname<'i>(
    n: Node<'_, 'i>,
    input: &'i str,
) -> Result<(&'i str, &'i str), C14nError> {
    let start = n.range().start;
    let bytes = input.as_bytes();
    if bytes.get(start) != Some(&b'<') {
        return Err(C14nError(format!("no start tag at offset {start}")));
    }
    let rest = &bytes[start + 1..];
    let len = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'/' | b'>'))
        .unwrap_or(rest.len());
    let qname = input
        .get(start + 1..start + 1 + len)
        .ok_or_else(|| C14nError(format!("element name at offset {start}")))?;
    let (prefix, local) = split_qname(qname);
    if !same_str(local, n.tag_name().name()) {
        return Err(C14nError(format!(
            "element name at offset {start} does not match the parsed name"
        )));
    }
    Ok((qname, prefix))
}

/// String equality, without comparing the bytes when both are the same slice: the names and
/// URIs compared here are mostly `roxmltree`'s views of the very same bytes of the input.
#[inline]
fn same_str(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// The prefix ("" when there is none) and the local part of a qualified name, split at its
/// first colon.
fn split_qname(qname: &str) -> (&str, &str) {
    match qname.bytes().position(|b| b == b':') {
        Some(i) => (&qname[..i], &qname[i + 1..]),
        None => ("", qname),
    }
}

#[allow(clippy::too_many_arguments)]
fn open_element<'a, 'i: 'a>(
    n: Node<'a, 'i>,
    qname: &'i str,
    elem_prefix: &'i str,
    input: &'i str,
    mode: Mode<'a>,
    inherit: &[Option<(&'static str, &'a str)>],
    rendered: &mut Vec<(&'a str, &'a str)>,
    decls: &mut Vec<(&'a str, &'a str)>,
    attrs: &mut Vec<(&'a str, &'a str, &'a str, &'a str)>,
    out: &mut Vec<u8>,
) -> Result<(), C14nError> {
    decls.clear();
    attrs.clear();

    let elem_uri = n.tag_name().namespace().unwrap_or("");
    if !elem_prefix.is_empty() && elem_uri.is_empty() {
        return Err(C14nError(format!("prefix '{elem_prefix}' is not bound")));
    }
    consider(elem_prefix, elem_uri, rendered, decls);

    for a in n.attributes() {
        let range = a.range_qname();
        let aq = input
            .get(range.clone())
            .ok_or_else(|| C14nError("attribute name out of range".into()))?;
        let (p, local) = split_qname(aq);
        if !same_str(local, a.name()) {
            return Err(C14nError(format!(
                "attribute name at offset {} does not match the parsed name",
                range.start
            )));
        }
        let uri = a.namespace().unwrap_or("");
        if !p.is_empty() && p != "xml" {
            if uri.is_empty() {
                return Err(C14nError(format!("prefix '{p}' is not bound")));
            }
            consider(p, uri, rendered, decls);
        }
        attrs.push((uri, a.name(), aq, a.value()));
    }

    match mode {
        Mode::Exclusive(inclusive) => {
            for p in inclusive.prefixes() {
                if p == "#default" {
                    consider("", n.default_namespace().unwrap_or(""), rendered, decls);
                } else if p != "xml"
                    && let Some(uri) = n.lookup_namespace_uri(Some(p.as_str()))
                    && uri != ns::XML
                {
                    consider(p.as_str(), uri, rendered, decls);
                }
            }
        }
        Mode::Inclusive11 { .. } => {
            // Every namespace in scope, and the default one even when empty (an empty default
            // under a rendered non-empty one is an undeclaration, `xmlns=""`).
            consider("", n.default_namespace().unwrap_or(""), rendered, decls);
            for d in n.namespaces() {
                if let Some(p) = d.name()
                    && p != "xml"
                    && d.uri() != ns::XML
                {
                    consider(p, d.uri(), rendered, decls);
                }
            }
        }
    }
    for &(qname, value) in inherit.iter().flatten() {
        attrs.push((ns::XML, &qname[4..], qname, value));
    }

    decls.sort_unstable_by(|a, b| a.0.cmp(b.0));
    attrs.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    out.push(b'<');
    out.extend_from_slice(qname.as_bytes());
    for &(p, uri) in decls.iter() {
        if p.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attr(uri, out);
        out.push(b'"');
        rendered.push((p, uri));
    }
    for &(_, _, aq, value) in attrs.iter() {
        out.push(b' ');
        out.extend_from_slice(aq.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attr(value, out);
        out.push(b'"');
    }
    out.push(b'>');
    Ok(())
}

/// Add `prefix → uri` to the declarations of this element unless an output ancestor already
/// rendered the same binding (for the default namespace, an empty one is implied at the top).
fn consider<'a>(
    prefix: &'a str,
    uri: &'a str,
    rendered: &[(&'a str, &'a str)],
    decls: &mut Vec<(&'a str, &'a str)>,
) {
    if decls.iter().any(|(p, _)| same_str(p, prefix)) {
        return;
    }
    let nearest = rendered.iter().rev().find(|(p, _)| same_str(p, prefix));
    let needed = match nearest {
        Some((_, u)) => !same_str(u, uri),
        None => !(prefix.is_empty() && uri.is_empty()),
    };
    if needed {
        decls.push((prefix, uri));
    }
}

/// Whether any byte of `b` satisfies `f`: a branch-free test per 16-byte chunk, which the
/// compiler vectorises (most values have nothing to escape, and are scanned whole).
#[inline(always)]
fn any_byte(b: &[u8], f: impl Fn(u8) -> bool + Copy) -> bool {
    b.chunks(16)
        .any(|c| c.iter().fold(false, |acc, &x| acc | f(x)))
}

/// Escape character data as canonical XML does: `&`, `<`, `>` and CR.
pub(crate) fn escape_text(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    if !any_byte(b, |c| matches!(c, b'&' | b'<' | b'>' | b'\r')) {
        out.extend_from_slice(b);
        return;
    }
    let mut last = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&b[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&b[last..]);
}

/// Escape an attribute value as canonical XML does: `&`, `<`, `"`, TAB, LF and CR.
pub(crate) fn escape_attr(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    if !any_byte(b, |c| {
        matches!(c, b'&' | b'<' | b'"' | b'\t' | b'\n' | b'\r')
    }) {
        out.extend_from_slice(b);
        return;
    }
    let mut last = 0;
    for (i, &c) in b.iter().enumerate() {
        let rep: &[u8] = match c {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'"' => b"&quot;",
            b'\t' => b"&#x9;",
            b'\n' => b"&#xA;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&b[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&b[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str, prefixes: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let mut out = Vec::new();
        canonicalize(
            doc.root_element(),
            None,
            &InclusivePrefixes::parse(prefixes),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn c14n_of(xml: &str, id: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let n = doc
            .descendants()
            .find(|n| n.attribute("ID") == Some(id))
            .unwrap();
        let mut out = Vec::new();
        canonicalize(n, None, &InclusivePrefixes::none(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn attributes_sorted_namespaces_first_empty_elements_expanded() {
        assert_eq!(
            c14n(
                r#"<a:e xmlns:b="urn:b" xmlns:a="urn:a" z="1" b:y="2" a:x="3" c='q"&lt;'/>"#,
                ""
            ),
            r#"<a:e xmlns:a="urn:a" xmlns:b="urn:b" c="q&quot;&lt;" z="1" a:x="3" b:y="2"></a:e>"#
        );
    }

    #[test]
    fn unused_namespaces_dropped_and_not_repeated() {
        assert_eq!(
            c14n(
                r#"<r xmlns="urn:d" xmlns:u="urn:unused" xmlns:p="urn:p"><p:c><p:d/></p:c><e/></r>"#,
                ""
            ),
            r#"<r xmlns="urn:d"><p:c xmlns:p="urn:p"><p:d></p:d></p:c><e></e></r>"#
        );
    }

    #[test]
    fn subtree_pulls_only_visibly_used_ancestor_namespaces() {
        let xml = r#"<s:Env xmlns:s="urn:s" xmlns:saml="urn:saml" xmlns:x="urn:x"><s:H><saml:A ID="a1" x:q="1"><saml:I>t</saml:I></saml:A></s:H></s:Env>"#;
        assert_eq!(
            c14n_of(xml, "a1"),
            r#"<saml:A xmlns:saml="urn:saml" xmlns:x="urn:x" ID="a1" x:q="1"><saml:I>t</saml:I></saml:A>"#
        );
    }

    #[test]
    fn inclusive_prefix_list_renders_in_scope_prefixes() {
        let xml = r#"<r xmlns:xs="urn:xs" xmlns:p="urn:p"><p:c v="xs:string"/></r>"#;
        assert_eq!(
            c14n(xml, "xs"),
            r#"<r xmlns:xs="urn:xs"><p:c xmlns:p="urn:p" v="xs:string"></p:c></r>"#
        );
    }

    #[test]
    fn default_namespace_undeclared_inside() {
        assert_eq!(
            c14n(r#"<r xmlns="urn:d"><c xmlns=""><d/></c></r>"#, ""),
            r#"<r xmlns="urn:d"><c xmlns=""><d></d></c></r>"#
        );
        // No default namespace anywhere: nothing to undeclare.
        assert_eq!(c14n(r#"<r><c xmlns=""/></r>"#, ""), "<r><c></c></r>");
    }

    #[test]
    fn text_comments_pis_cdata_and_entities() {
        assert_eq!(
            c14n(
                "<r>a&amp;b&lt;c&gt;<!-- gone --><?pi  data?><![CDATA[<x>&]]>&#13;&#x41;\t</r>",
                ""
            ),
            "<r>a&amp;b&lt;c&gt;<?pi data?>&lt;x&gt;&amp;&#xD;A\t</r>"
        );
    }

    #[test]
    fn attribute_whitespace_normalisation_and_char_refs() {
        assert_eq!(
            c14n("<r a=\"x\ny\tz\" b=\"&#xA;&#x9;&#xD;\"/>", ""),
            "<r a=\"x y z\" b=\"&#xA;&#x9;&#xD;\"></r>"
        );
    }

    #[test]
    fn xml_attributes_are_kept_without_declaration() {
        assert_eq!(
            c14n(r#"<r xml:lang="fr" a="1"><c/></r>"#, ""),
            r#"<r a="1" xml:lang="fr"><c></c></r>"#
        );
    }

    #[test]
    fn excluded_subtree_is_left_out() {
        let xml = r#"<a ID="x"><b/><ds:Signature xmlns:ds="urn:ds"><ds:v/></ds:Signature><c/></a>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let sig = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Signature")
            .unwrap();
        let mut out = Vec::new();
        canonicalize(
            doc.root_element(),
            Some(sig),
            &InclusivePrefixes::none(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<a ID="x"><b></b><c></c></a>"#
        );
    }

    #[test]
    fn excluding_the_apex_leaves_nothing_and_scratch_is_reusable() {
        let xml = r#"<a xmlns:p="urn:p"><p:b x="1"/></a>"#;
        let doc = roxmltree::Document::parse(xml).unwrap();
        let root = doc.root_element();
        let none = InclusivePrefixes::none();
        let mut scratch = Scratch::new();
        let mut out = Vec::new();
        canonicalize_with(root, Some(root), &none, &mut out, &mut scratch).unwrap();
        assert!(out.is_empty());
        canonicalize_with(root, None, &none, &mut out, &mut scratch).unwrap();
        let b = root.first_element_child().unwrap();
        canonicalize_with(b, None, &none, &mut out, &mut scratch).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<a><p:b xmlns:p="urn:p" x="1"></p:b></a><p:b xmlns:p="urn:p" x="1"></p:b>"#
        );
    }

    #[test]
    fn rebinding_a_prefix_is_rendered_again() {
        assert_eq!(
            c14n(r#"<p:r xmlns:p="urn:1"><p:c xmlns:p="urn:2"/></p:r>"#, ""),
            r#"<p:r xmlns:p="urn:1"><p:c xmlns:p="urn:2"></p:c></p:r>"#
        );
    }
}
