//! The dashboard's files (built from `web/` by build.rs, embedded in the binary) and the axum
//! [`router`] that serves them with their content types, ETags, long-lived caching of hashed assets,
//! precompressed bodies and strict security headers. It knows nothing of agents or secrets: the
//! page talks to the JSON API like any client.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A content-hashed name: cached for a year, never revalidated.
    pub immutable: bool,
    /// Strong ETag (quoted) of `body`.
    pub etag: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub brotli: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The Content-Security-Policy of every dashboard response: scripts only from the daemon itself (no
/// inline script, no eval), no framing. Inline styles are allowed because xterm.js sets them.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The file served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The JavaScript a first load of `/` fetches: the scripts `index.html` names.
pub fn first_load_scripts() -> Vec<&'static Asset> {
    let index = find("/").map_or("", |asset| std::str::from_utf8(asset.body).unwrap_or(""));
    ASSETS
        .iter()
        .filter(|asset| {
            asset.content_type.starts_with("text/javascript")
                && index.contains(&format!("src=\"{}\"", asset.path))
        })
        .collect()
}

/// Routes for every embedded file (`/`, `/login`, `/assets/…`, `/sw.js`, …), nothing else: other
/// paths fall through to the caller's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        )
    })
}

/// Adds the dashboard's security headers to a response.
pub fn secure_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        header::HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    secure_headers(headers);
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
        });
    if unchanged {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    let accepts = |coding: &str| {
        request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|list| {
                list.split(',').any(|item| {
                    let mut parts = item.split(';');
                    let name = parts.next().unwrap_or("").trim();
                    let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
                    name.eq_ignore_ascii_case(coding) && !refused
                })
            })
    };
    let (body, encoding) = match (asset.brotli, asset.gzip) {
        (Some(br), _) if accepts("br") => (br, Some("br")),
        (_, Some(gz)) if accepts("gzip") => (gz, Some("gzip")),
        _ => (asset.body, None),
    };
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    *response.body_mut() = Body::from(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_its_scripts_are_embedded() {
        let index = find("/").expect("index");
        assert!(index.content_type.starts_with("text/html"));
        assert_eq!(find("/login").map(|a| a.etag), Some(index.etag));
        let scripts = first_load_scripts();
        assert!(!scripts.is_empty());
        assert!(
            scripts
                .iter()
                .all(|s| s.immutable && s.gzip.is_some() && s.brotli.is_some())
        );
        assert!(find("/sw.js").is_some_and(|a| !a.immutable));
        assert!(find("/manifest.webmanifest").is_some());
    }

    /// The budget of issue 8: a first load fetches at most 300 KiB of compressed JavaScript.
    #[test]
    fn first_load_javascript_is_within_300_kib_compressed() {
        let scripts = first_load_scripts();
        let raw: usize = scripts.iter().map(|s| s.body.len()).sum();
        let gzip: usize = scripts.iter().filter_map(|s| s.gzip).map(<[u8]>::len).sum();
        let brotli: usize = scripts
            .iter()
            .filter_map(|s| s.brotli)
            .map(<[u8]>::len)
            .sum();
        println!(
            "first-load JavaScript: {} file(s), {raw} bytes raw, {gzip} gzip, {brotli} brotli",
            scripts.len()
        );
        assert!(gzip <= 300 * 1024, "{gzip} bytes of gzipped JavaScript");
        assert!(brotli <= gzip);
    }

    #[test]
    fn compressed_when_asked_and_not_modified_by_etag() {
        let index = find("/").expect("index");
        let mut request = HeaderMap::new();
        request.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br;q=0"),
        );
        let response = serve(index, &request);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static(index.etag));
        assert_eq!(serve(index, &request).status(), StatusCode::NOT_MODIFIED);
    }
}
