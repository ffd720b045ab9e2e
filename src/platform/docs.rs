//! `/docs`: the API reference as one self-contained HTML page, rendered on the server from the
//! same OpenAPI document as `/openapi.json`. No JavaScript bundle, nothing fetched from a CDN at
//! build or run time, so it works on an air-gapped machine and cannot drift from the spec.

use std::fmt::Write as _;

use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// Renders the reference page for an OpenAPI document.
pub fn render(spec: &Value) -> String {
    let title = text(&spec["info"]["title"]).unwrap_or("API");
    let version = text(&spec["info"]["version"]).unwrap_or("");
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>\
         <body><h1>{t} <small>{v}</small></h1>",
        t = escape(title),
        v = escape(version),
    );
    if let Some(description) = text(&spec["info"]["description"]) {
        let _ = write!(html, "<p class=\"lead\">{}</p>", escape(description));
    }
    html.push_str("<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>");

    if let Some(paths) = spec["paths"].as_object() {
        html.push_str("<nav><h2>Operations</h2><ul>");
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    let _ = write!(
                        html,
                        "<li><a href=\"#{a}\"><code class=\"m {method}\">{M}</code> <code>{p}</code></a></li>",
                        a = anchor(method, path),
                        M = method.to_uppercase(),
                        p = escape(path),
                    );
                }
            }
        }
        html.push_str("</ul></nav>");
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    render_operation(&mut html, method, path, op);
                }
            }
        }
    }

    if let Some(schemas) = spec["components"]["schemas"].as_object() {
        html.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(
                html,
                "<section id=\"schema-{n}\"><h3>{n}</h3><pre>{s}</pre></section>",
                n = escape(name),
                s = escape(&pretty),
            );
        }
    }
    html.push_str("</body></html>");
    html
}

fn render_operation(html: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        html,
        "<section class=\"op\" id=\"{a}\"><h3><code class=\"m {method}\">{M}</code> <code>{p}</code></h3>",
        a = anchor(method, path),
        M = method.to_uppercase(),
        p = escape(path),
    );
    if let Some(summary) = text(&op["summary"]) {
        let _ = write!(html, "<p><strong>{}</strong></p>", escape(summary));
    }
    if let Some(description) = text(&op["description"]) {
        let _ = write!(html, "<p>{}</p>", escape(description));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        html.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th><th>description</th></tr>");
        for p in params {
            let _ = write!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(text(&p["name"]).unwrap_or("")),
                escape(text(&p["in"]).unwrap_or("")),
                if p["required"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                escape(text(&p["description"]).unwrap_or("")),
            );
        }
        html.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        html.push_str("<h4>Request body</h4><ul>");
        for (media, body) in content {
            let _ = write!(
                html,
                "<li><code>{}</code> {}</li>",
                escape(media),
                schema_link(&body["schema"])
            );
        }
        html.push_str("</ul>");
    }
    if let Some(responses) = op["responses"].as_object() {
        html.push_str(
            "<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>",
        );
        for (status, response) in responses {
            let bodies: Vec<String> = response["content"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(media, b)| {
                            format!(
                                "<code>{}</code> {}",
                                escape(media),
                                schema_link(&b["schema"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(text(&response["description"]).unwrap_or("")),
                bodies.join("<br>"),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</section>");
}

/// A link to a referenced schema, or the inline schema's type.
fn schema_link(schema: &Value) -> String {
    if let Some(reference) = text(&schema["$ref"]) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{n}\">{n}</a>", n = escape(name));
    }
    text(&schema["type"]).map(escape).unwrap_or_default()
}

fn anchor(method: &str, path: &str) -> String {
    let slug: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{method}{slug}")
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// HTML-escapes text taken from the spec.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1 small{font-size:.5em;color:#777}code{font:13px ui-monospace,monospace}\
.m{display:inline-block;min-width:4.5em;text-align:center;border-radius:3px;color:#fff;padding:0 .3em}\
.get{background:#2b7bb9}.post{background:#2f9e44}.put,.patch{background:#e67700}.delete{background:#c92a2a}\
.op{border-top:1px solid #ddd;padding-top:.5rem}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}\
pre{background:#f6f8fa;padding:.5rem;overflow:auto}nav ul{columns:2}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_and_schema_appears_and_text_is_escaped() {
        let spec = serde_json::json!({
            "info": {"title": "T<x>", "version": "1"},
            "paths": {
                "/a/{id}": {"get": {"summary": "Get <a>", "responses": {"200": {"description": "ok",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}},
                "/b": {"post": {"responses": {}}}
            },
            "components": {"schemas": {"A": {"type": "object"}}}
        });
        let html = render(&spec);
        assert!(html.contains("/a/{id}"));
        assert!(html.contains(">POST<"));
        assert!(html.contains("Get &lt;a&gt;"));
        assert!(html.contains("T&lt;x&gt;"));
        assert!(html.contains("id=\"schema-A\""));
        assert!(!html.contains("<script"));
    }
}
