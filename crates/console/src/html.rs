//! The page frame and the shared pieces of every console page, in [maud]: markup is checked at
//! compile time and every value spliced into it (`(value)`) is escaped for text and for the
//! double-quoted attribute values maud writes. No page builds HTML from strings.
//!
//! `PreEscaped` is used in one place, [`slot`]: the PIN mailer's fixed slot markers
//! (constants of [`super::jobs`], never data). maud's own `DOCTYPE` is the only other
//! pre-escaped markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::Operator;

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
pub fn notice(tone: Tone, title: &str, detail: Option<&str>) -> Markup {
    let role = if tone == Tone::Error {
        "alert"
    } else {
        "status"
    };
    html! {
        div class=(tone.class()) role=(role) {
            p.notice-title { (title) }
            @if let Some(d) = detail { p { (d) } }
        }
    }
}

/// A status badge: `kind` selects the colour (a CSS class suffix from a fixed set).
pub fn badge(kind: &str, text: &str) -> Markup {
    let kind = match kind {
        "active" | "valid" | "done" | "imported" | "unchanged" => "ok",
        "suspended" | "on-hold" | "running" | "started" | "dry_run" | "skipped" => "hold",
        "opposed" | "retired" | "revoked" | "left" | "failed" | "rejected" => "bad",
        _ => "neutral",
    };
    html! { span class={ "badge badge-" (kind) } { (text) } }
}

/// A table head: one column header per label.
pub fn thead(cols: &[&str]) -> Markup {
    html! { thead { tr { @for c in cols { th scope="col" { (c) } } } } }
}

/// A hidden anti-forgery field.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A fixed marker of the PIN mailer (a constant with a `<`, which escaped text never holds),
/// replaced by its value in the answer's own buffer.
pub(crate) fn slot(marker: &'static str) -> Markup {
    PreEscaped(marker.to_owned())
}

/// An error page: the refusal or failure as a notice (a warning for a server-side failure),
/// then a link back to `back` (href, label) if given and to the console home.
pub fn error_page(
    title: &str,
    operator: Option<&Operator>,
    detail: &str,
    server_side: bool,
    back: Option<(&str, &str)>,
) -> String {
    let mut page = Page::new(title, operator);
    let tone = if server_side {
        Tone::Warning
    } else {
        Tone::Error
    };
    page.notice(tone, detail, None);
    page.render(html! {
        p.after-error {
            @if let Some((href, label)) = back {
                a.button.secondary href=(href) { (label) } " "
            }
            a href="/console/" { "Console home" }
        }
    })
}

/// One entry of the breadcrumb trail.
pub struct Crumb {
    /// Shown text.
    pub label: String,
    /// Target (an encoded URL); `None` for the current page.
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
    pub notices: Vec<Markup>,
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
            notices: Vec::new(),
            class: "",
        }
    }

    /// Adds a breadcrumb leading to `href` (an encoded URL).
    pub fn crumb(mut self, label: impl Into<String>, href: Option<String>) -> Self {
        self.crumbs.push(Crumb {
            label: label.into(),
            href,
        });
        self
    }

    /// Adds a notice above the content.
    pub fn notice(&mut self, tone: Tone, title: &str, detail: Option<&str>) {
        self.notices.push(notice(tone, title, detail));
    }

    /// The whole document with `body` below the `<h1>`.
    pub fn render(&self, body: Markup) -> String {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · cps-trust card issuing" }
                    link rel="stylesheet" href="/console/assets/console.css";
                    // No favicon request (it would be outside /console/).
                    link rel="icon" href="data:,";
                    script src="/console/assets/console.js" defer {}
                    @if let Some(s) = self.refresh {
                        noscript { meta http-equiv="refresh" content=(s); }
                    }
                }
                body {
                    a.skip href="#main" { "Skip to the content" }
                    header.top { div.top-inner {
                        a.brand href="/console/" {
                            span.brand-mark aria-hidden="true" { "CPS" } " Card issuing"
                        }
                        @if let Some(op) = self.operator {
                            nav aria-label="Main" { ul {
                                li { a href="/console/" { "Search" } }
                                li { a href="/console/import" { "Import registry" } }
                            } }
                            p.who {
                                "Signed in as " strong #operator-name { (op.name) } " "
                                span.roles { (op.roles.join(", ")) }
                            }
                        }
                    } }
                    main #main class=(self.class) tabindex="-1" {
                        @if !self.crumbs.is_empty() {
                            nav.crumbs aria-label="Breadcrumb" { ol {
                                li { a href="/console/" { "Home" } }
                                @for c in &self.crumbs {
                                    @match &c.href {
                                        Some(href) => li { a href=(href) { (c.label) } },
                                        None => li aria-current="page" { (c.label) },
                                    }
                                }
                            } }
                        }
                        h1 { (self.title) }
                        @for n in &self.notices { (n) }
                        (body)
                    }
                    footer.foot { p { "cps-trust · registration authority console · actions are recorded in the audit log with your operator name" } }
                }
            }
        }
        .into_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values that break out of text or attributes when not escaped.
    pub(crate) const HOSTILE: &str = "<script>alert('x')</script>\"' onmouseover=\"x&y";

    /// Whether `page` shows [`HOSTILE`] only escaped (and at least once).
    pub(crate) fn assert_escaped(page: &str) {
        assert!(
            !page.contains("<script>alert"),
            "raw script tag in the page:\n{page}"
        );
        assert!(
            !page.contains("\" onmouseover"),
            "attribute broken out of in the page:\n{page}"
        );
        assert!(
            page.contains(
                "&lt;script&gt;alert('x')&lt;/script&gt;&quot;' onmouseover=&quot;x&amp;y"
            ),
            "hostile value not shown escaped:\n{page}"
        );
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(day(1_750_000_000), "2025-06-15");
        assert!(when(i64::MAX).contains("Unix time"));
    }

    #[test]
    fn the_frame_escapes_operator_title_crumbs_and_notices() {
        let op = Operator {
            name: HOSTILE.into(),
            roles: vec![HOSTILE.into()],
        };
        let mut p = Page::new(HOSTILE, Some(&op))
            .crumb(HOSTILE, Some(format!("/console/{HOSTILE}")))
            .crumb(HOSTILE, None);
        p.refresh = Some(2);
        p.notice(Tone::Error, HOSTILE, Some(HOSTILE));
        let h = p.render(html! { (badge(HOSTILE, HOSTILE)) });
        assert_escaped(&h);
        assert!(h.contains("<h1>&lt;script&gt;"));
        assert!(h.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"));
        assert!(h.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        assert!(h.contains("<strong id=\"operator-name\">&lt;script&gt;"));
        assert!(h.contains("<span class=\"badge badge-neutral\">"));
    }

    #[test]
    fn a_csrf_field_and_a_badge_escape_their_values() {
        assert_eq!(
            csrf_field("a\"b").into_string(),
            "<input type=\"hidden\" name=\"csrf\" value=\"a&quot;b\">"
        );
        assert_eq!(
            badge("revoked", "<x>").into_string(),
            "<span class=\"badge badge-bad\">&lt;x&gt;</span>"
        );
    }
}
