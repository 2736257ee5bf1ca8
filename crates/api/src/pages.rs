//! The server-rendered pages of the authorization code flow: small, accessible HTML with
//! no script and no front-end build. Every value is escaped where it is written; every
//! page is sent with a policy that loads nothing from elsewhere and may not be framed.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;

/// `text` safe inside HTML text and double-quoted attribute values.
pub fn escape(text: &str) -> String {
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;\
padding:0 1rem;line-height:1.5;color:#1a1a1a}h1{font-size:1.4rem}fieldset{border:1px solid #bbb;\
border-radius:6px;margin:1rem 0}legend{font-weight:600}label{display:block;margin:.3rem 0}\
.host{font-family:monospace;font-weight:700}.muted{color:#555}button{font-size:1rem;\
padding:.5rem 1.2rem;margin-right:.6rem;border-radius:6px;border:1px solid #444;cursor:pointer}\
button.primary{background:#1d4ed8;color:#fff;border-color:#1d4ed8}li{margin:.6rem 0}";

/// A whole page: `title` and the HTML of its main content (already escaped).
pub fn page(status: StatusCode, title: &str, main: &str) -> HttpResponse {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · D2</title><style>{STYLE}</style></head>\
         <body><main>{main}</main></body></html>\n",
        title = escape(title),
    );
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Not `no-referrer`: a form posted under it says `Origin: null`, and the forms
        // check their origin.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// A page that says what went wrong, and that nothing was shared.
pub fn error_page(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    page(
        status,
        "Cannot continue",
        &format!(
            "<h1>Cannot continue</h1><p role=\"alert\">{}</p>\
             <p class=\"muted\">Nothing was shared with the application. Code: <code>{}</code></p>",
            escape(message),
            escape(code)
        ),
    )
}

/// One checkbox per item, all checked: what the person may uncheck to approve less.
pub fn checkboxes(name: &str, items: &[(String, Option<String>)]) -> String {
    items
        .iter()
        .map(|(value, description)| {
            let described = description
                .as_deref()
                .map(|d| format!(" <span class=\"muted\">— {}</span>", escape(d)))
                .unwrap_or_default();
            format!(
                "<label><input type=\"checkbox\" name=\"{name}\" value=\"{value}\" checked> \
                 <code>{value}</code>{described}</label>",
                value = escape(value),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let boxes = checkboxes("scope", &[("a\"b".into(), Some("<i>".into()))]);
        assert!(boxes.contains("value=\"a&quot;b\""));
        assert!(boxes.contains("&lt;i&gt;"));
    }
}
