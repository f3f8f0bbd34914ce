//! The chat page, compiled into the binary: the server needs no files beside itself, and the
//! page fetches nothing from elsewhere (the libraries under web/vendor/ come from
//! scripts/vendor-web).

const ASSETS: [(&str, &str, &[u8]); 8] = [
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
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
    (
        "/vendor/marked.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/marked.min.js"),
    ),
    (
        "/vendor/purify.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/purify.min.js"),
    ),
    (
        "/vendor/highlight.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/highlight.min.js"),
    ),
    (
        "/vendor/highlight-github-dark.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/highlight-github-dark.min.css"),
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

#[cfg(test)]
mod tests {
    use super::find;

    /// The page works with no network: everything it loads is served from the binary.
    #[test]
    fn everything_the_page_loads_is_embedded() {
        let page = std::str::from_utf8(find("/").unwrap().1).unwrap();
        let mut links = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            for (at, _) in page.match_indices(attribute) {
                let rest = &page[at + attribute.len()..];
                links.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        for link in &links {
            assert!(
                find(link).is_some(),
                "the page loads {link}, which is not embedded"
            );
        }
        assert!(links.contains(&"/vendor/marked.min.js") && links.contains(&"/favicon.svg"));
    }
}
