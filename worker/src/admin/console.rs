//! The console's static page, script and style sheet (`worker/console/`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The console's page and files: static, holding no data (every figure is fetched by
/// the page with the operator's token), so they are served to anyone who reaches the
/// API, under a policy that lets the page load only itself.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn console_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn console_page() -> Response {
    console_response(
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    )
}

pub(super) async fn console_file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.js" => console_response(
            "text/javascript; charset=utf-8",
            include_str!("../../console/console.js"),
        ),
        "console.css" => console_response(
            "text/css; charset=utf-8",
            include_str!("../../console/console.css"),
        ),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
