//! The one way untrusted XML is parsed: a size limit, UTF-8 only, no document type declaration
//! (so no entities, no external fetches), a node limit and an element-depth limit, then
//! `roxmltree`. Shared by the assertion validator and the document-signature verifier.

use roxmltree::{Document, ParsingOptions};

use crate::c14n::{Edge, traverse};

/// The limits of [`parse_limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most XML nodes accepted.
    pub max_nodes: u32,
}

/// Why input was not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseRefusal {
    /// Larger than `max_bytes`.
    #[error("{0} bytes (limit {1})")]
    TooLarge(usize, usize),
    /// Elements nested deeper than `max_depth`.
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    /// More nodes than `max_nodes`.
    #[error("more than {0} XML nodes")]
    TooManyNodes(u32),
    /// A document type declaration or an entity.
    #[error("document type declarations are not accepted")]
    DtdForbidden,
    /// Not UTF-8, not well-formed.
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Check the size and the encoding declaration, refuse `<!DOCTYPE`/`<!ENTITY`, and parse.
/// The depth is not checked here (the validator checks it in its own shape pass); see
/// [`check_depth`].
pub fn parse_unchecked_depth<'i>(
    input: &'i [u8],
    limits: &Limits,
) -> Result<Document<'i>, ParseRefusal> {
    if input.len() > limits.max_bytes {
        return Err(ParseRefusal::TooLarge(input.len(), limits.max_bytes));
    }
    let text = std::str::from_utf8(input)
        .map_err(|e| ParseRefusal::Malformed(format!("not UTF-8: {e}")))?;
    if let Some(decl) = input.strip_prefix(b"<?xml") {
        let end = memchr::memmem::find(decl, b"?>").unwrap_or(decl.len());
        let decl = String::from_utf8_lossy(&decl[..end]).to_ascii_lowercase();
        if let Some((_, rest)) = decl.split_once("encoding") {
            let value = rest
                .trim_start_matches([' ', '\t', '\n', '\r', '='])
                .trim_start_matches(['"', '\'']);
            if !value.starts_with("utf-8") {
                return Err(ParseRefusal::Malformed(
                    "only UTF-8 documents are accepted".into(),
                ));
            }
        }
    }
    // One pass over the input for `<!` (which a usual document does not contain at all),
    // rather than one search per keyword.
    if memchr::memmem::find_iter(input, b"<!").any(|i| {
        let rest = &input[i + 2..];
        rest.starts_with(b"DOCTYPE") || rest.starts_with(b"ENTITY")
    }) {
        return Err(ParseRefusal::DtdForbidden);
    }
    Document::parse_with_options(
        text,
        ParsingOptions {
            allow_dtd: false,
            nodes_limit: limits.max_nodes,
            ..ParsingOptions::default()
        },
    )
    .map_err(|e| {
        use roxmltree::Error as E;
        match e {
            E::DtdDetected | E::EntityReferenceLoop(_) | E::UnknownEntityReference(..) => {
                ParseRefusal::DtdForbidden
            }
            E::NodesLimitReached => ParseRefusal::TooManyNodes(limits.max_nodes),
            e => ParseRefusal::Malformed(e.to_string()),
        }
    })
}

/// Refuse a document whose elements nest deeper than `max_depth`.
pub fn check_depth(doc: &Document<'_>, max_depth: usize) -> Result<(), ParseRefusal> {
    let mut depth = 0usize;
    for edge in traverse(doc.root()) {
        match edge {
            Edge::Open(n) if n.is_element() => {
                depth += 1;
                if depth > max_depth {
                    return Err(ParseRefusal::TooDeep(max_depth));
                }
            }
            Edge::Close(n) if n.is_element() => depth -= 1,
            _ => {}
        }
    }
    Ok(())
}

/// [`parse_unchecked_depth`] then [`check_depth`].
pub fn parse_limited<'i>(input: &'i [u8], limits: &Limits) -> Result<Document<'i>, ParseRefusal> {
    let doc = parse_unchecked_depth(input, limits)?;
    check_depth(&doc, limits.max_depth)?;
    Ok(doc)
}
