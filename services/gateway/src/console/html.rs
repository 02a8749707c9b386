//! Server-rendered HTML: escaping, the page layout, and small pieces every page uses.
//! Every value from a view or a caller passes through [`esc`]; the pages carry no inline
//! script (the content security policy allows only the console's own script file).

use std::fmt::Write as _;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flexcore_security::ApiRole;
use serde_json::Value;

use crate::auth::Principal;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for element content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A string field of a view, escaped (empty when absent).
pub fn field(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => esc(s),
        Some(Value::Null) | None => String::new(),
        Some(other) => esc(&other.to_string()),
    }
}

/// [`time`], which the script also shows in the viewer's own zone.
pub fn local_time(value: &Value, pointer: &str) -> String {
    time(value, pointer).replacen("<time ", "<time data-local ", 1)
}

/// A timestamp field of a view as `2026-12-05 17:25:49 UTC` in a `<time>` element
/// (empty when absent).
pub fn time(value: &Value, pointer: &str) -> String {
    let Some(text) = value.pointer(pointer).and_then(Value::as_str) else {
        return String::new();
    };
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(at) => format!(
            "<time datetime=\"{}\">{}</time>",
            esc(text),
            at.to_utc().format("%Y-%m-%d %H:%M:%S UTC")
        ),
        Err(_) => esc(text),
    }
}

/// A percent-encoded query-string value.
pub fn url_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A state as a badge (its class names the state, for colour; the text says it).
pub fn badge(state: &str) -> String {
    let class: String = state.chars().filter(|c| c.is_ascii_lowercase() || *c == '_').collect();
    format!("<span class=\"badge state-{class}\">{}</span>", esc(state))
}

/// A form that POSTs to `action` with one button (shown only to callers with `needed`).
pub fn action_button(principal: &Principal, needed: ApiRole, action: &str, label: &str, danger: bool) -> String {
    if !principal.may(needed) {
        return String::new();
    }
    let class = if danger { "button danger" } else { "button" };
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><button type=\"submit\" class=\"{class}\">{}</button></form>",
        esc(action),
        esc(label)
    )
}

/// The page: navigation, who is signed in, `body`, and the console's stylesheet and script.
pub fn page(title: &str, principal: Option<&Principal>, body: &str) -> Response {
    let who = match principal {
        Some(p) => format!(
            "<span class=\"who\">{} <span class=\"role\">{}</span></span>\
             <form method=\"post\" action=\"/console/logout\" class=\"inline\"><button type=\"submit\" class=\"link\">Sign out</button></form>",
            esc(&p.name),
            esc(p.role.as_str())
        ),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · FlexCore</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script type=\"module\" src=\"/console/assets/console.js\"></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><nav aria-label=\"Main\"><a class=\"brand\" href=\"/\">FlexCore</a>\
         <a href=\"/\">Overview</a><a href=\"/console/pipelines\">Pipelines</a><a href=\"/console/runs\">Runs</a>\
         <a href=\"/console/schedules\">Schedules</a><a href=\"/console/plugins\">Plugins</a><a href=\"/console/events\">Audit log</a>\
         <a href=\"/api/v1/docs\">API</a></nav><div class=\"session\">{who}</div></header>\
         <main id=\"main\"><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    );
    html_response(StatusCode::OK, html)
}

/// `html` with the console's headers: HTML, no caching, a strict content security policy.
pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// A table of `rows` under `headings` (cells are HTML already).
pub fn table(caption: &str, headings: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table><caption>{}</caption><thead><tr>", esc(caption));
    for h in headings {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">None.</td></tr>",
            headings.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(badge("<b>"), "<span class=\"badge state-b\">&lt;b&gt;</span>");
        assert_eq!(url_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let value = serde_json::json!({"name": "<i>n</i>", "n": 3});
        assert_eq!(field(&value, "/name"), "&lt;i&gt;n&lt;/i&gt;");
        assert_eq!(field(&value, "/n"), "3");
        assert_eq!(field(&value, "/missing"), "");
        let at = serde_json::json!({"at": "2026-12-05T17:25:49.071827Z", "bad": "<x>"});
        assert_eq!(
            time(&at, "/at"),
            "<time datetime=\"2026-12-05T17:25:49.071827Z\">2026-12-05 17:25:49 UTC</time>"
        );
        assert_eq!(time(&at, "/bad"), "&lt;x&gt;");
    }
}
