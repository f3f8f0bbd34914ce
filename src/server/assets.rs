//! The chat page, compiled into the binary: the server needs no files beside itself.

const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
];

/// The content type and bytes of the asset at `path`; `/` is the page itself.
pub fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == path)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}
