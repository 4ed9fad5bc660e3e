//! Error answers many operations share, for the OpenAPI document: what authentication refuses
//! before a handler runs, and what a JSON body or query string is refused with.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// An `ApiError` answer.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiError")))
                .build(),
        )
        .into()
}

fn answers(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| ((*status).to_owned(), error(description)))
        .collect()
}

/// What any route that needs a credential may be refused with.
pub(crate) struct Refused;

impl IntoResponses for Refused {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(&[
            (
                "401",
                "`unauthorized`: no credential, or a wrong, expired or revoked one",
            ),
            (
                "403",
                "`origin_not_allowed` or `csrf_failed`: a dashboard session's request from another origin, or one that changes state without its CSRF token",
            ),
        ])
    }
}

/// What a route that takes a JSON body may answer about the body.
pub(crate) struct BadBody;

impl IntoResponses for BadBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(&[
            (
                "400",
                "`invalid_json` or `invalid_request`: the body is not JSON, not the expected shape, or a field has a value that is not allowed",
            ),
            ("413", "`payload_too_large`: the body is larger than 1 MiB"),
        ])
    }
}

/// What a route that takes a query string may answer about it.
pub(crate) struct BadQuery;

impl IntoResponses for BadQuery {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(&[(
            "400",
            "`invalid_request`: a query parameter is unknown, malformed or out of range",
        )])
    }
}
