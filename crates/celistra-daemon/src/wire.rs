//! The API's JSON at the HTTP edge, shared by the API and the agents' sockets: errors as JSON
//! responses whose status comes from their code, and request bodies whose errors say what was
//! wrong, where, and in which field.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
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

/// A JSON request body whose errors say what was wrong, where, and in which field.
pub(crate) struct JsonBody<T>(pub T);

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
