//! Form bodies: `application/x-www-form-urlencoded` (every form of the console) and
//! `multipart/form-data` (the registry file upload). Both parsers are strict about structure
//! and never panic on what a client sends.

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A field name or value is not UTF-8 after percent-decoding.
    #[error("form field is not valid UTF-8")]
    NotUtf8,
    /// A `%` escape is not followed by two hexadecimal digits.
    #[error("malformed percent escape in the form")]
    BadEscape,
    /// The request is not of the content type the route expects.
    #[error("expected a {0} form")]
    ContentType(&'static str),
    /// A multipart body does not follow RFC 7578.
    #[error("malformed multipart body: {0}")]
    Multipart(&'static str),
    /// Too many fields.
    #[error("too many form fields")]
    TooManyFields,
}

/// Most fields a form may carry (the professional form has three per activity).
pub const MAX_FIELDS: usize = 1024;

/// The fields of a form, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_component(s: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = s.get(i + 1).copied().and_then(hex_digit);
                let lo = s.get(i + 2).copied().and_then(hex_digit);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(FormError::BadEscape),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

/// Parses an `application/x-www-form-urlencoded` body (or a query string).
pub fn parse_urlencoded(body: &[u8]) -> Result<Fields, FormError> {
    let mut fields = Vec::new();
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if fields.len() == MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        fields.push((decode_component(k)?, decode_component(v)?));
    }
    Ok(Fields(fields))
}

/// Percent-encodes `s` for a URL path segment or a query value: everything but the RFC 3986
/// unreserved characters is escaped.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// The `filename`, for a file.
    pub filename: Option<String>,
    /// The content.
    pub data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Result<String, FormError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(FormError::ContentType("multipart/form-data"));
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if v.is_empty() || v.len() > 70 || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(FormError::Multipart("invalid boundary"));
            }
            return Ok(v.to_owned());
        }
    }
    Err(FormError::Multipart("no boundary in the content type"))
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let j = hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|b| *b == first)?;
        let at = i + j;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// The value of parameter `key` in a `Content-Disposition` header value (quoted or not).
fn disposition_param(value: &str, key: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let semi = rest.find(';')?;
        rest = rest[semi + 1..].trim_start();
        let eq = rest.find('=')?;
        let k = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            // Browsers escape '"' as %22 in names; a backslash escape is honoured too.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end?;
            (v, &q[end + 1..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        if k.eq_ignore_ascii_case(key) {
            return Some(v);
        }
        rest = next;
    }
}

/// Parses a `multipart/form-data` body with `boundary` into its parts.
pub fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, FormError> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or(FormError::Multipart("no opening boundary"))?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        let eol = find(body, b"\r\n", pos).ok_or(FormError::Multipart("truncated part"))?;
        if !body[pos..eol].iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err(FormError::Multipart("garbage after a boundary"));
        }
        let head_start = eol + 2;
        let head_end = find(body, b"\r\n\r\n", head_start)
            .ok_or(FormError::Multipart("part without headers"))?;
        let head = std::str::from_utf8(&body[head_start..head_end])
            .map_err(|_| FormError::Multipart("part headers are not UTF-8"))?;
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                return Err(FormError::Multipart("malformed part header"));
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                let v = v.trim();
                if !v
                    .split(';')
                    .next()
                    .is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data"))
                {
                    return Err(FormError::Multipart("part is not form-data"));
                }
                name = disposition_param(v, "name");
                filename = disposition_param(v, "filename");
            }
        }
        let name = name.ok_or(FormError::Multipart("part without a name"))?;
        let data_start = head_end + 4;
        let mut close = Vec::with_capacity(delim.len() + 2);
        close.extend_from_slice(b"\r\n");
        close.extend_from_slice(delim);
        let data_end =
            find(body, &close, data_start).ok_or(FormError::Multipart("no closing boundary"))?;
        if parts.len() == MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        parts.push(Part {
            name,
            filename,
            data: &body[data_start..data_end],
        });
        pos = data_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_fields_are_decoded() {
        let f = parse_urlencoded(b"a=1&b=x+y%2Bz&c&&d=%C3%A9l%C3%A8ve&a=2").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y+z"));
        assert_eq!(f.get("c"), Some(""));
        assert_eq!(f.text("c"), None);
        assert_eq!(f.get("d"), Some("élève"));
        assert_eq!(f.get("zz"), None);
        assert_eq!(parse_urlencoded(b"a=%4"), Err(FormError::BadEscape));
        assert_eq!(parse_urlencoded(b"a=%zz"), Err(FormError::BadEscape));
        assert_eq!(parse_urlencoded(b"a=%ff"), Err(FormError::NotUtf8));
        let many = "x=1&".repeat(MAX_FIELDS + 1);
        assert_eq!(
            parse_urlencoded(many.as_bytes()),
            Err(FormError::TooManyFields)
        );
    }

    #[test]
    fn url_encoding_escapes_all_but_unreserved() {
        assert_eq!(url_encode("3760021832/0001"), "3760021832%2F0001");
        assert_eq!(url_encode("a b&c=\"é"), "a%20b%26c%3D%22%C3%A9");
        assert_eq!(
            parse_urlencoded(format!("q={}", url_encode("Le Gall & fils")).as_bytes())
                .unwrap()
                .get("q"),
            Some("Le Gall & fils")
        );
    }

    #[test]
    fn multipart_as_chromium_sends_it() {
        let b = "----WebKitFormBoundaryAbC123";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok.en\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pros.csv\"\r\nContent-Type: text/csv\r\n\r\nline1\r\nline2\r\n\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"dry_run\"\r\n\r\n1\r\n--{b}--\r\n"
        );
        let ct = format!("multipart/form-data; boundary={b}");
        let parts = parse_multipart(body.as_bytes(), &multipart_boundary(&ct).unwrap()).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data),
            ("csrf", &b"tok.en"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("pros.csv"));
        assert_eq!(parts[1].data, b"line1\r\nline2\r\n");
        assert_eq!(parts[2].data, b"1");
    }

    #[test]
    fn malformed_multipart_is_refused() {
        assert!(multipart_boundary("text/csv").is_err());
        assert!(multipart_boundary("multipart/form-data").is_err());
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"q q\"").unwrap(),
            "q q"
        );
        let b = "XX";
        for body in [
            "",
            "no boundary here",
            "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue without end",
            "--XX\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XX--",
            "--XX\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--XX--",
            "--XXjunk\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XX--",
            "--XX\r\nno colon\r\n\r\nv\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name=\"a",
        ] {
            assert!(parse_multipart(body.as_bytes(), b).is_err(), "{body:?}");
        }
        let empty = parse_multipart(b"--XX--\r\n", b).unwrap();
        assert!(empty.is_empty());
    }
}
