//! The API's JSON at the HTTP edge, shared by the API and the agents' sockets: errors as JSON
//! responses whose status comes from their code, and request bodies whose errors say what was
//! wrong, where, and in which field; and the same-origin check of browser requests.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use celistra_proto::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// An error as the API sends it: status from the code, JSON body.
pub(crate) struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

pub(crate) fn failure(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure(ApiError::new(code, message))
}

/// A JSON request body whose errors say what was wrong, where, and in which field. A non-empty
/// body must be sent as `application/json` (a form or text post is refused with 415, so a browser
/// form cannot pass for the API), and every struct in it must be a JSON object
/// (`celistra_core::json::parse`).
pub(crate) struct JsonBody<T>(pub T);

/// Whether a `Content-Type` value names JSON: `application/json`, with at most a UTF-8 charset.
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("");
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            parameter.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY as u64) {
            return Err(failure(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {MAX_BODY} bytes"),
            ));
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        failure(
                            ErrorCode::PayloadTooLarge,
                            format!("request body is larger than {MAX_BODY} bytes"),
                        )
                    } else {
                        failure(
                            ErrorCode::InvalidJson,
                            format!("cannot read request body: {rejection}"),
                        )
                    }
                })?;
        // An empty body is let through to the parser, which says what the route expected.
        if !bytes.is_empty() && !content_type.as_deref().is_some_and(is_json) {
            return Err(failure(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "request body must be sent with `Content-Type: application/json`, not {}",
                    content_type.map_or("no content type".to_owned(), |t| format!("`{t}`"))
                ),
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| failure(ErrorCode::InvalidJson, "request body is not UTF-8"))?;
        celistra_core::json::parse(text, "request body")
            .map(JsonBody)
            .map_err(|e| failure(ErrorCode::InvalidJson, e.to_string()))
    }
}

/// A query string that does not parse.
pub(crate) fn bad_query(rejection: axum::extract::rejection::QueryRejection) -> Failure {
    failure(
        ErrorCode::InvalidRequest,
        format!("bad query string: {}", rejection.body_text()),
    )
}

/// A browser's `Origin` must be the daemon's own; clients that send none are not browsers.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), Failure> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().unwrap_or("");
    let same = host.is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    });
    if same {
        Ok(())
    } else {
        Err(failure(
            ErrorCode::OriginNotAllowed,
            format!(
                "origin {origin:?} is not this daemon's; open the dashboard from the daemon itself"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn only_json_with_a_utf8_charset_at_most_is_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for refused in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/json; boundary=x",
        ] {
            assert!(!is_json(refused), "{refused}");
        }
    }
}
