//! The route table: every API route once, as its handler (whose `#[utoipa::path]` says its method,
//! path, parameters, body and answers) and the role it requires. The router, the OpenAPI document
//! (each operation's `x-celistra-role`, and the 401 and 403 answers that role implies) and the role
//! checks are all made from this one list.

use std::sync::OnceLock;

use axum::handler::Handler;
use axum::routing::MethodRouter;
use celistra_proto::{Access, Role};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Content, OpenApi, Ref, ResponseBuilder};
use utoipa_axum::routes;

use super::{
    AppState, agents, approvals, audit, daemon, decide, events, fleet, groups, history, metrics,
    notifications, openapi, sandbox, secrets, sessions, terminal, tokens,
};

/// The OpenAPI extension that names the role an operation requires.
pub(crate) const ROLE_EXTENSION: &str = "x-celistra-role";
/// The OpenAPI extension that marks an operation a hub forwards to its machines, as
/// `/v1/machines/{machine}/…` (the path without its `/v1`).
pub(crate) const VIA_HUB_EXTENSION: &str = "x-celistra-via-hub";

/// One route of the table.
pub(crate) struct Route {
    pub access: Access,
    /// The path template, as axum and OpenAPI both write it (`/v1/agents/{agent}`).
    pub path: String,
    pub handler: MethodRouter<AppState>,
    /// Whether a hub forwards this route to its machines: the fleet's allow-list.
    pub via_hub: bool,
    /// The route's operation, as the OpenAPI document shows it.
    item: PathItem,
}

/// Makes a [`Route`] from a handler annotated with `#[utoipa::path]`.
macro_rules! route {
    ($access:expr, $handler:path) => {
        Route::new($access, false, routes!($handler))
    };
    ($access:expr, $handler:path, via_hub) => {
        Route::new($access, true, routes!($handler))
    };
}

impl Route {
    fn new(
        access: Access,
        via_hub: bool,
        (_, paths, handler): utoipa_axum::router::UtoipaMethodRouter<AppState>,
    ) -> Route {
        let mut items = paths.paths.into_iter();
        let (path, mut item) = items.next().expect("a handler has one path");
        assert!(items.next().is_none(), "one handler per route");
        for operation in operations(&mut item) {
            document_access(operation, access);
            if via_hub {
                operation
                    .extensions
                    .get_or_insert_with(Extensions::default)
                    .insert(VIA_HUB_EXTENSION.to_owned(), true.into());
            }
        }
        Route {
            access,
            path,
            handler,
            via_hub,
            item,
        }
    }

    /// The route's methods.
    pub(crate) fn methods(&self) -> Vec<axum::http::Method> {
        use axum::http::Method;
        let item = &self.item;
        [
            (item.get.is_some(), Method::GET),
            (item.put.is_some(), Method::PUT),
            (item.post.is_some(), Method::POST),
            (item.delete.is_some(), Method::DELETE),
            (item.patch.is_some(), Method::PATCH),
        ]
        .into_iter()
        .filter_map(|(has, method)| has.then_some(method))
        .collect()
    }

    /// Where a hub serves this route for its machines: `/v1/machines/{machine}` and the path
    /// without its `/v1`.
    pub(crate) fn hub_path(&self) -> String {
        format!(
            "/v1/machines/{{machine}}{}",
            self.path.strip_prefix("/v1").unwrap_or(&self.path)
        )
    }
}

impl Route {
    /// Routes `CONNECT` to `handler` too: over HTTP/2 a WebSocket is opened with an extended
    /// CONNECT (RFC 8441), which axum's `WebSocketUpgrade` accepts. The OpenAPI item is left as
    /// it is: OpenAPI has no CONNECT operation, and it is the documented GET's protocol.
    fn with_extended_connect<H, T>(mut self, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.handler = self.handler.connect(handler);
        self
    }
}

/// A `Vec` of the routes, each made and pushed in turn. Written as `vec![…]`, the whole array of
/// routes (kilobytes each, with their OpenAPI items) was built on the stack first: 268 KiB of the
/// main thread's stack, resident for the daemon's life (found with `perf record -e page-faults`).
macro_rules! one_by_one {
    ($($route:expr),* $(,)?) => {{
        let mut table = Vec::new();
        $(table.push($route);)*
        table
    }};
}

/// Every route of the API.
pub(crate) fn table() -> Vec<Route> {
    use Access::{Any, Public};
    let owner = Access::Role(Role::Owner);
    let operator = Access::Role(Role::Operator);
    let viewer = Access::Role(Role::Viewer);
    let approver = Access::Role(Role::Approver);
    one_by_one![
        route!(Any, super::health, via_hub),
        route!(Any, openapi::document),
        route!(owner, daemon::stop),
        route!(owner, daemon::upgrade),
        // Prometheus scrapes `/metrics` by default; this machine's only (a hub does not forward it).
        route!(viewer, metrics::metrics),
        // Agents.
        route!(viewer, agents::list, via_hub),
        route!(operator, agents::spawn, via_hub),
        route!(viewer, agents::get, via_hub),
        route!(operator, agents::update, via_hub),
        route!(operator, agents::remove, via_hub),
        // The spec holds environment values, which only an owner may read.
        route!(owner, agents::spec, via_hub),
        route!(operator, agents::stop, via_hub),
        route!(operator, agents::start, via_hub),
        route!(operator, agents::restart, via_hub),
        route!(operator, agents::kill, via_hub),
        route!(operator, agents::rename, via_hub),
        route!(operator, agents::apply, via_hub),
        route!(viewer, agents::usage, via_hub),
        route!(operator, groups::scale, via_hub),
        route!(operator, groups::rolling_restart, via_hub),
        // Output and history; clearing a log erases a record, so it is the owner's.
        route!(viewer, history::logs, via_hub),
        route!(owner, history::clear, via_hub),
        route!(viewer, history::search, via_hub),
        route!(viewer, history::runs, via_hub),
        // Events: approvers get only approval events (see `events::stream`).
        route!(Any, events::stream, via_hub),
        // Terminals: a viewer gets viewer tickets only (see `terminal::ticket`).
        route!(viewer, terminal::ticket, via_hub),
        // Also over HTTP/2 (RFC 8441 extended CONNECT), as the fleet hub opens a node's
        // terminals; the document shows the GET, the same operation over HTTP/1.1.
        route!(Public, terminal::connect, via_hub).with_extended_connect(terminal::connect),
        // The sandbox: reading is a viewer's, the master switch the owner's.
        route!(viewer, sandbox::status, via_hub),
        route!(owner, sandbox::switch, via_hub),
        route!(viewer, sandbox::explain, via_hub),
        // The audit log.
        route!(viewer, audit::list, via_hub),
        route!(viewer, audit::tail, via_hub),
        route!(viewer, audit::checkpoint, via_hub),
        route!(viewer, audit::proof, via_hub),
        route!(operator, audit::verify, via_hub),
        route!(viewer, audit::export, via_hub),
        route!(viewer, audit::bundle, via_hub),
        // Approvals.
        route!(approver, approvals::list, via_hub),
        route!(approver, approvals::get, via_hub),
        route!(approver, approvals::decide, via_hub),
        // A decision link's signed token is its credential, for one request.
        route!(Public, decide::page),
        route!(Public, decide::decide),
        // Notification channels are the owner's; an approver may subscribe a device to them.
        route!(owner, notifications::status),
        route!(owner, notifications::test),
        route!(approver, notifications::vapid_key),
        route!(owner, notifications::subscriptions),
        route!(approver, notifications::subscribe),
        route!(owner, notifications::unsubscribe),
        // The fleet: machines, pairing (a hub's), joining and leaving (a node's).
        route!(viewer, fleet::machines),
        route!(owner, fleet::revoke),
        route!(viewer, fleet::status),
        route!(owner, fleet::pair),
        route!(owner, fleet::join),
        route!(owner, fleet::leave),
        route!(viewer, fleet::agents),
        route!(viewer, fleet::events),
        // Secrets: names are an operator's to read; values go in, never out, and only an owner's.
        // Not forwarded by a hub, which must never see a value.
        route!(operator, secrets::list),
        route!(owner, secrets::set),
        route!(owner, secrets::remove),
        // Credentials.
        route!(owner, tokens::list),
        route!(owner, tokens::create),
        route!(owner, tokens::revoke),
        route!(owner, sessions::issue_code),
        route!(Public, sessions::login),
        route!(Any, sessions::current),
        route!(Any, sessions::logout),
        route!(owner, sessions::list),
        route!(owner, sessions::revoke),
    ]
}

/// The operations of a path item (one per table entry).
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Marks an operation with the role it requires, and the 401 and 403 answers that implies.
fn document_access(operation: &mut Operation, access: Access) {
    operation
        .extensions
        .get_or_insert_with(Extensions::default)
        .insert(ROLE_EXTENSION.to_owned(), access.as_str().into());
    const UNAUTHORIZED: &str = "`unauthorized`: no credential, or a wrong, expired or revoked one";
    const SESSION_REFUSED: &str = "`origin_not_allowed` or `csrf_failed`: a dashboard session's request from another origin, or one that changes state without its CSRF token";
    let role_refused = format!(
        "`role_required`: the credential's role may not do this (`required_role` names the least role that may: {}); or {SESSION_REFUSED}",
        access.as_str()
    );
    let refusals: Vec<(&str, &str)> = match access {
        Access::Public => vec![],
        Access::Any => vec![("401", UNAUTHORIZED), ("403", SESSION_REFUSED)],
        Access::Role(_) => vec![("401", UNAUTHORIZED), ("403", &role_refused)],
    };
    for (status, description) in refusals {
        let refusal = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ApiError"))),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), refusal.into());
    }
}

/// The table's operations as OpenAPI paths, merged into `doc`.
pub(crate) fn document(mut doc: OpenApi) -> OpenApi {
    for route in table() {
        let Route { path, item, .. } = route;
        match doc.paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                doc.paths.paths.insert(path, item);
            }
        }
    }
    doc
}

/// The document, made once.
pub(crate) fn cached_document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| document(openapi::base()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `docs/roles.md`'s table of routes and roles, made from the table.
    fn roles_table() -> String {
        let mut out = String::from(
            "| method | path | role | via hub | what |\n| --- | --- | --- | --- | --- |\n",
        );
        for mut route in table() {
            for (method, operation) in [
                ("GET", &mut route.item.get),
                ("PUT", &mut route.item.put),
                ("POST", &mut route.item.post),
                ("DELETE", &mut route.item.delete),
                ("PATCH", &mut route.item.patch),
            ] {
                if let Some(operation) = operation {
                    let what = operation
                        .summary
                        .clone()
                        .unwrap_or_default()
                        .replace('|', "\\|")
                        .replace('\n', " ");
                    out.push_str(&format!(
                        "| {method} | `{}` | {} | {} | {what} |\n",
                        route.path,
                        route.access.as_str(),
                        if route.via_hub { "yes" } else { "" }
                    ));
                }
            }
        }
        out
    }

    /// The docs show the route table as it is: regenerate with `UPDATE_OPENAPI=1`.
    #[test]
    fn docs_roles_table_is_the_route_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/roles.md");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let begin = "<!-- routes: generated from api/routes.rs -->\n";
        let end = "<!-- end of routes -->";
        let (Some(start), Some(stop)) = (text.find(begin), text.find(end)) else {
            panic!("docs/roles.md lacks the markers {begin:?} and {end:?}");
        };
        let generated = roles_table();
        let current = &text[start + begin.len()..stop];
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            let updated = format!("{}{begin}{generated}{}", &text[..start], &text[stop..]);
            std::fs::write(path, updated).expect("write docs/roles.md");
            return;
        }
        assert!(
            current == generated,
            "docs/roles.md's route table differs from api/routes.rs; update it with \
             `UPDATE_OPENAPI=1 cargo test -p celistra-daemon docs_roles_table` and commit it"
        );
    }

    #[test]
    fn every_operation_has_a_role_a_unique_id_and_one_route_per_method_and_path() {
        let document = serde_json::to_value(document(openapi::base())).expect("serialises");
        let mut ids = BTreeSet::new();
        let mut operations = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let role = operation[ROLE_EXTENSION].as_str().unwrap_or_default();
                assert!(
                    role.parse::<Access>().is_ok(),
                    "{method} {path}: x-celistra-role `{role}`"
                );
                let id = operation["operationId"].as_str().expect("an operation id");
                assert!(ids.insert(id.to_owned()), "operation id {id} twice");
                operations += 1;
            }
        }
        assert_eq!(
            operations,
            table().len(),
            "a method and path registered twice"
        );
    }
}
