//! What the renderers share: durations in words, values made single-line (bodies) or stripped
//! of line breaks (subjects), URLs shown without credentials, HTML escaping, and the
//! inline-styled HTML builder.

use std::borrow::Cow;

/// "1 minute", "60 minutes".
pub(super) fn minutes(n: u64) -> String {
    if n == 1 {
        "1 minute".to_owned()
    } else {
        format!("{n} minutes")
    }
}

/// Characters that must not survive into a single line of mail: control characters (CR, LF,
/// tab, NEL, ...), Unicode line/paragraph separators, and bidi embedding/override/isolate
/// controls (which can make untrusted text display reversed, e.g. to spoof an amount).
fn breaks_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A value as one line of body text: line-breaking characters become spaces.
pub(super) fn one_line(value: &str) -> Cow<'_, str> {
    if value.chars().any(breaks_line) {
        Cow::Owned(
            value
                .chars()
                .map(|c| if breaks_line(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

/// A subject line: line-breaking characters are removed, so no value can end the header.
pub(super) fn subject_line(subject: &str) -> String {
    subject.chars().filter(|&c| !breaks_line(c)).collect()
}

/// The endpoint as shown to the partner: scheme, host and path only. Userinfo
/// (`user:pass@`), query and fragment are dropped because webhook URLs often carry secrets
/// there. No link is made from it.
pub(super) fn display_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match without_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, without_query),
    };
    let (authority, path) = match rest.find(['/', '\\']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// Appends `value` HTML-escaped (`& < > " '`) and kept on one line.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if breaks_line(c) => out.push(' '),
            c => out.push(c),
        }
    }
}

// Inline styles: mail clients drop <style> blocks and remote CSS, so every element carries its
// own. System fonts only; no images.
pub(super) const H1: &str =
    "<h1 style=\"margin:0 0 16px;font-size:20px;line-height:28px;color:#111827;\">";
pub(super) const H1_END: &str = "</h1>\n";
pub(super) const P: &str = "<p style=\"margin:0 0 16px;font-size:15px;line-height:22px;\">";
pub(super) const P_END: &str = "</p>\n";
pub(super) const TOKEN: &str = "<p style=\"margin:0 0 16px;padding:12px 16px;background-color:#f3f4f6;\
                     border-radius:6px;font-family:Menlo,Consolas,monospace;font-size:16px;\
                     word-break:break-all;\">";
pub(super) const TOKEN_END: &str = "</p>\n";
pub(super) const TABLE: &str = "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" \
                     style=\"width:100%;margin:0 0 16px;border-collapse:collapse;\">\n";
pub(super) const TABLE_END: &str = "</table>\n";
pub(super) const TR_LABEL: &str = "<tr><td style=\"padding:6px 12px 6px 0;font-size:14px;color:#6b7280;\
                        vertical-align:top;white-space:nowrap;\">";
pub(super) const TD_VALUE: &str =
    "</td><td style=\"padding:6px 0;font-size:14px;word-break:break-word;\">";
pub(super) const TR_END: &str = "</td></tr>\n";

/// An HTML document under construction. Markup can only be `&'static str` (written in this
/// file); runtime values can only enter through [`Html::value`], which escapes them. That
/// split is what keeps interpolated data from ever becoming markup.
pub(super) struct Html {
    buf: String,
}

impl Html {
    /// Opens the document and the card every template writes into.
    pub(super) fn start(title: &str) -> Self {
        let mut h = Self {
            buf: String::with_capacity(2048),
        };
        h.markup(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
        )
        .value(title)
        .markup(
            "</title>\n</head>\n<body style=\"margin:0;padding:24px 12px;\
             background-color:#f3f4f6;font-family:-apple-system,'Segoe UI',Helvetica,Arial,\
             sans-serif;color:#1f2937;\">\n<div style=\"max-width:560px;margin:0 auto;\
             padding:32px;background-color:#ffffff;border-radius:8px;\">\n\
             <p style=\"margin:0 0 24px;font-size:16px;font-weight:bold;color:#111827;\">\
             Flowlet</p>\n",
        );
        h
    }

    /// Appends trusted markup written in this file.
    pub(super) fn markup(&mut self, markup: &'static str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// Appends a value as escaped text.
    pub(super) fn value(&mut self, value: &str) -> &mut Self {
        push_escaped(&mut self.buf, value);
        self
    }

    /// Closes the card and the document.
    pub(super) fn finish(mut self) -> String {
        self.markup(
            "<p style=\"margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;\">\
             This is an automated message from Flowlet; replies are not read.</p>\n\
             </div>\n</body>\n</html>\n",
        );
        self.buf
    }
}
