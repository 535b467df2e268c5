//! HTML building blocks: escaping, the page frame, and small shared pieces. Every value that
//! comes from outside the program (registry data, card data, query text, error messages) goes
//! through [`esc`] (text and quoted attribute values) or [`crate::console::form::url_encode`]
//! (URL parts, then [`esc`]).

use std::fmt::{self, Display, Write};

use crate::operators::Operator;

/// Text escaped for an HTML text node or a double- or single-quoted attribute value.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, b) in self.0.bytes().enumerate() {
            let rep = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&self.0[last..])
    }
}

/// Escapes `s` for HTML text and attribute values.
pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn when(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => format!("{t} (Unix time)"),
    }
}

/// A Unix time as `YYYY-MM-DD`.
pub fn day(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Err(_) => format!("{t} (Unix time)"),
    }
}

/// What kind of notice a page shows above its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something went as asked.
    Success,
    /// Worth a look.
    Warning,
    /// Refused or failed.
    Error,
    /// Neutral information.
    Info,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Success => "notice success",
            Tone::Warning => "notice warning",
            Tone::Error => "notice error",
            Tone::Info => "notice info",
        }
    }
}

/// A notice box (role `status`, or `alert` for errors).
pub fn notice(out: &mut String, tone: Tone, title: &str, detail: Option<&str>) {
    let role = if tone == Tone::Error {
        "alert"
    } else {
        "status"
    };
    let _ = write!(
        out,
        "<div class=\"{}\" role=\"{role}\"><p class=\"notice-title\">{}</p>",
        tone.class(),
        esc(title)
    );
    if let Some(d) = detail {
        let _ = write!(out, "<p>{}</p>", esc(d));
    }
    out.push_str("</div>");
}

/// A status badge: `kind` selects the colour (a CSS class suffix from a fixed set).
pub fn badge(kind: &str, text: &str) -> String {
    let kind = match kind {
        "active" | "valid" | "done" | "imported" | "unchanged" => "ok",
        "suspended" | "on-hold" | "running" | "started" | "dry_run" | "skipped" => "hold",
        "opposed" | "retired" | "revoked" | "left" | "failed" | "rejected" => "bad",
        _ => "neutral",
    };
    format!("<span class=\"badge badge-{kind}\">{}</span>", esc(text))
}

/// One entry of the breadcrumb trail.
pub struct Crumb {
    /// Shown text.
    pub label: String,
    /// Target (already a safe, encoded URL); `None` for the current page.
    pub href: Option<String>,
}

/// Everything a page frame needs.
pub struct Page<'a> {
    /// The `<title>` and the `<h1>`.
    pub title: String,
    /// The signed-in operator, for the header (absent on some error pages).
    pub operator: Option<&'a Operator>,
    /// Breadcrumbs (the console home is always first).
    pub crumbs: Vec<Crumb>,
    /// Reload the page after this many seconds when scripts are off (progress pages).
    pub refresh: Option<u32>,
    /// Notices above the content.
    pub notices: String,
    /// Content below the `<h1>`.
    pub body: String,
    /// A class for `<main>` (page-specific layout).
    pub class: &'static str,
}

impl<'a> Page<'a> {
    /// A page with a title and an operator.
    pub fn new(title: impl Into<String>, operator: Option<&'a Operator>) -> Page<'a> {
        Page {
            title: title.into(),
            operator,
            crumbs: Vec::new(),
            refresh: None,
            notices: String::new(),
            body: String::new(),
            class: "",
        }
    }

    /// Adds a breadcrumb leading to `href` (a safe, encoded URL).
    pub fn crumb(mut self, label: impl Into<String>, href: Option<String>) -> Self {
        self.crumbs.push(Crumb {
            label: label.into(),
            href,
        });
        self
    }

    /// The whole document.
    pub fn render(&self) -> String {
        let mut h = String::with_capacity(self.body.len() + 4096);
        h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        let _ = write!(
            h,
            "<title>{} · cps-trust card issuing</title>",
            esc(&self.title)
        );
        h.push_str("<link rel=\"stylesheet\" href=\"/console/assets/console.css\">");
        // No favicon request (it would be outside /console/).
        h.push_str("<link rel=\"icon\" href=\"data:,\">");
        h.push_str("<script src=\"/console/assets/console.js\" defer></script>");
        if let Some(s) = self.refresh {
            let _ = write!(
                h,
                "<noscript><meta http-equiv=\"refresh\" content=\"{s}\"></noscript>"
            );
        }
        h.push_str("</head><body>");
        h.push_str("<a class=\"skip\" href=\"#main\">Skip to the content</a>");
        h.push_str("<header class=\"top\"><div class=\"top-inner\">");
        h.push_str("<a class=\"brand\" href=\"/console/\"><span class=\"brand-mark\" aria-hidden=\"true\">CPS</span> Card issuing</a>");
        if let Some(op) = self.operator {
            h.push_str("<nav aria-label=\"Main\"><ul>");
            h.push_str("<li><a href=\"/console/\">Search</a></li>");
            h.push_str("<li><a href=\"/console/import\">Import registry</a></li>");
            h.push_str("</ul></nav>");
            let _ = write!(
                h,
                "<p class=\"who\">Signed in as <strong id=\"operator-name\">{}</strong> <span class=\"roles\">{}</span></p>",
                esc(&op.name),
                esc(&op.roles.join(", "))
            );
        }
        h.push_str("</div></header>");
        let _ = write!(
            h,
            "<main id=\"main\" class=\"{}\" tabindex=\"-1\">",
            self.class
        );
        if !self.crumbs.is_empty() {
            h.push_str("<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><ol>");
            h.push_str("<li><a href=\"/console/\">Home</a></li>");
            for c in &self.crumbs {
                match &c.href {
                    Some(href) => {
                        let _ = write!(
                            h,
                            "<li><a href=\"{}\">{}</a></li>",
                            esc(href),
                            esc(&c.label)
                        );
                    }
                    None => {
                        let _ = write!(h, "<li aria-current=\"page\">{}</li>", esc(&c.label));
                    }
                }
            }
            h.push_str("</ol></nav>");
        }
        let _ = write!(h, "<h1>{}</h1>", esc(&self.title));
        h.push_str(&self.notices);
        h.push_str(&self.body);
        h.push_str("</main><footer class=\"foot\"><p>cps-trust · registration authority console · actions are recorded in the audit log with your operator name</p></footer></body></html>\n");
        h
    }
}

/// A hidden anti-forgery field.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_both_quotes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(esc("Müller Ève").to_string(), "Müller Ève");
        assert_eq!(esc("").to_string(), "");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(day(1_750_000_000), "2025-06-15");
        assert!(when(i64::MAX).contains("Unix time"));
    }

    #[test]
    fn the_frame_escapes_operator_and_title() {
        let op = Operator {
            name: "<b>x</b>".into(),
            roles: vec!["auditor".into()],
        };
        let mut p = Page::new("A & B", Some(&op)).crumb("<i>", None);
        p.refresh = Some(2);
        let h = p.render();
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(h.contains("<h1>A &amp; B</h1>"));
        assert!(h.contains("<li aria-current=\"page\">&lt;i&gt;</li>"));
        assert!(h.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"));
        assert!(!h.contains("<b>x</b>"));
    }
}
