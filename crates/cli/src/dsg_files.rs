//! Files of the `dsg` commands: documents given as `UNIQUE_ID=FILE[;MIME]`, the signature
//! written out.

use std::path::PathBuf;

use crate::{emitln, fail};

/// `UNIQUE_ID=FILE[;MIME]`.
pub(crate) struct DocumentArg {
    pub unique_id: String,
    pub path: PathBuf,
    pub mime_type: Option<String>,
}

pub(crate) fn parse_document(arg: &str) -> Result<DocumentArg, (u8, String)> {
    let (id, rest) = arg
        .split_once('=')
        .filter(|(id, f)| !id.is_empty() && !f.is_empty())
        .ok_or_else(|| fail(format!("--document '{arg}': expected UNIQUE_ID=FILE")))?;
    let (file, mime) = match rest.rsplit_once(';') {
        Some((f, m)) if m.contains('/') => (f, Some(m.to_owned())),
        _ => (rest, None),
    };
    Ok(DocumentArg {
        unique_id: id.to_owned(),
        path: PathBuf::from(file),
        mime_type: mime,
    })
}

pub(crate) fn read(p: &std::path::Path) -> Result<Vec<u8>, (u8, String)> {
    std::fs::read(p).map_err(|e| fail(format!("{}: {e}", p.display())))
}

pub(crate) fn ring_sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

pub(crate) fn write_out(out: Option<PathBuf>, text: &str) -> Result<(), (u8, String)> {
    match out {
        Some(p) => std::fs::write(&p, text).map_err(|e| fail(format!("{}: {e}", p.display()))),
        None => {
            emitln(text);
            Ok(())
        }
    }
}
