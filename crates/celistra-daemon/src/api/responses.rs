//! Error answers many operations share, for the OpenAPI document: what a JSON body or query
//! string is refused with, and an I/O failure. The 401 and 403 that authentication and the role
//! check answer are added to every operation from the route table (`routes.rs`).

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::schema::{ObjectBuilder, Type};
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

/// What a route that writes to the state directory may answer when that fails.
pub(crate) struct Internal;

impl IntoResponses for Internal {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        answers(&[("500", "`internal`: an I/O failure inside the daemon")])
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

/// A 200 answer of server-sent events. Each event is described as its fields (`event`, `id`,
/// `data`), as tools that check streams read the schema of `text/event-stream`; `data` is one
/// `data_schema` as JSON, which OpenAPI 3.1 cannot say as a schema, so the description says it.
fn event_stream(description: &str, data_schema: &str) -> BTreeMap<String, RefOr<Response>> {
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    let event = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("event", text("the event's name"))
        .property("id", text("the id to resume after (`Last-Event-ID`)"))
        .property(
            "data",
            text(&format!("one `{data_schema}` as JSON")).content_media_type("application/json"),
        )
        .required("data")
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "text/event-stream",
            ContentBuilder::new().schema(Some(event)).build(),
        )
        .into();
    BTreeMap::from([("200".to_owned(), response)])
}

/// The live events (`GET /v1/events`).
pub(crate) struct EventStream;

impl IntoResponses for EventStream {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        event_stream(
            "Server-sent events named by the event's `type`, each an `Event`",
            "Event",
        )
    }
}

/// The audit log's tail (`GET /v1/audit/tail`).
pub(crate) struct AuditStream;

impl IntoResponses for AuditStream {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        event_stream(
            "Server-sent events named `audit`, each an `AuditEntry`",
            "AuditEntry",
        )
    }
}
