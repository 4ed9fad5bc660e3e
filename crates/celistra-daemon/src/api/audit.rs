//! Audit routes: query, live tail, checkpoints, inclusion and consistency proofs, verification and
//! export (docs/audit-format.md).

use std::convert::Infallible;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use celistra_proto::{
    ApiError, AuditBundle, AuditCheckpoint, AuditEntry, AuditExportFormat, AuditPage, AuditProof,
    AuditQuery, AuditTailQuery, AuditVerification, ErrorCode, ExportQuery, MAX_AUDIT_PAGE,
    ProofQuery,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::responses::{AuditStream, BadQuery, Internal};
use super::{Failure, Revocation};
use crate::services::Services;

type ApiResult<T> = Result<T, Failure>;

fn time_bound(text: Option<&str>, field: &str) -> ApiResult<Option<u64>> {
    text.map(|t| {
        celistra_core::clock::parse_time_bound(t, crate::now_ms())
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {e}")).into())
    })
    .transpose()
}

/// Audit entries matching the filters, newest first, a page at a time (`after`: the previous
/// page's `next_after`).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), BadQuery, Internal)
)]
pub(crate) async fn list(
    State(services): State<Arc<Services>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(query) = query.map_err(super::bad_query)?;
    let filter = celistra_audit::Query {
        since_ms: time_bound(query.since.as_deref(), "since")?,
        until_ms: time_bound(query.until.as_deref(), "until")?,
        actor: query.actor,
        action: query.action,
        target: query.agent,
        text: query.text,
        after_seq: query.after,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE),
    };
    let page = query_log(&services.audit, filter).await?;
    Ok(Json(AuditPage {
        entries: page.entries.into_iter().map(wire_entry).collect(),
        next_after: page.next,
    }))
}

/// New audit entries as Server-Sent Events (`audit` events, id = seq), after replaying those after
/// `after`: the dashboard's Activity panel.
#[utoipa::path(
    get,
    path = "/v1/audit/tail",
    operation_id = "tail_audit",
    tag = "audit",
    params(AuditTailQuery),
    responses(AuditStream, BadQuery, Internal)
)]
pub(crate) async fn tail(
    State(services): State<Arc<Services>>,
    Extension(Revocation(ended)): Extension<Revocation>,
    query: Result<Query<AuditTailQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(query) = query.map_err(super::bad_query)?;
    let audit = std::sync::Arc::clone(&services.audit);
    // Subscribed before reading the backlog: an entry appended in between comes twice at worst,
    // and is skipped by its sequence number.
    let live = audit.log().subscribe();
    // The entries after `after`, read newest first a page at a time, then put in order.
    let mut replay = vec![];
    if let Some(after) = query.after {
        let mut older_than: Option<u64> = None;
        'pages: loop {
            let filter = celistra_audit::Query {
                after_seq: older_than,
                limit: MAX_AUDIT_PAGE,
                ..celistra_audit::Query::default()
            };
            let page = query_log(&audit, filter).await?;
            for entry in page.entries {
                if entry.seq <= after {
                    break 'pages;
                }
                replay.push(wire_entry(entry));
            }
            match page.next {
                Some(next) => older_than = Some(next),
                None => break,
            }
        }
        replay.reverse();
    }
    let last_replayed = replay.last().map(|e| e.seq);
    let live = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(entry) => return Some((wire_entry(Arc::unwrap_or_clone(entry)), live)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |entry| std::future::ready(last_replayed.is_none_or(|seq| entry.seq > seq)));
    let entries = futures_util::stream::iter(replay)
        .chain(live)
        .map(|entry| {
            let data = serde_json::to_string(&entry).unwrap_or_default();
            Ok(SseEvent::default()
                .event("audit")
                .id(entry.seq.to_string())
                .data(data))
        })
        .take_until(ended.cancelled_owned());
    Ok(Sse::new(entries).keep_alive(KeepAlive::default()))
}

/// Signs a checkpoint of the log as it is now (tree size, root hash, time).
#[utoipa::path(
    post,
    path = "/v1/audit/checkpoint",
    operation_id = "sign_audit_checkpoint",
    tag = "audit",
    responses((status = 200, body = AuditCheckpoint), Internal)
)]
pub(crate) async fn checkpoint(
    State(services): State<Arc<Services>>,
) -> ApiResult<Json<AuditCheckpoint>> {
    let audit = std::sync::Arc::clone(&services.audit);
    let log = audit.log();
    log.sync().map_err(internal)?;
    let checkpoint = log.checkpoint().map_err(internal)?;
    let tree_size = celistra_audit::verify_checkpoint(&checkpoint, &log.public_key())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .size;
    Ok(Json(AuditCheckpoint {
        checkpoint,
        tree_size,
        public_key: log.public_key(),
    }))
}

/// An inclusion proof (`seq`, `tree_size`) or a consistency proof (`old_size`, `tree_size`).
#[utoipa::path(
    get,
    path = "/v1/audit/proof",
    operation_id = "get_audit_proof",
    tag = "audit",
    params(ProofQuery),
    responses((status = 200, body = AuditProof), (status = 400, description = "`invalid_request`: a query parameter is unknown or malformed, neither or both of `seq` and `old_size`, or sizes the log cannot prove", body = ApiError), Internal)
)]
pub(crate) async fn proof(
    State(services): State<Arc<Services>>,
    query: Result<Query<ProofQuery>, QueryRejection>,
) -> ApiResult<Json<AuditProof>> {
    let Query(query) = query.map_err(super::bad_query)?;
    let log = services.audit.log();
    let refuse = |e: celistra_audit::Error| ApiError::new(ErrorCode::InvalidRequest, e.to_string());
    let proof = match (query.seq, query.old_size) {
        (Some(seq), None) => log.inclusion_proof(seq, query.tree_size).map_err(refuse)?,
        (None, Some(old)) => log
            .consistency_proof(old, query.tree_size)
            .map_err(refuse)?,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give `seq` (inclusion) or `old_size` (consistency), with `tree_size`",
            )
            .into());
        }
    };
    Ok(Json(AuditProof {
        seq: query.seq,
        old_size: query.old_size,
        tree_size: query.tree_size,
        proof,
    }))
}

/// Verifies the whole log now (chain, Merkle root, latest checkpoint); a failure is also an
/// `audit_verify_failed` event and turns `/v1/health`'s status.
#[utoipa::path(
    post,
    path = "/v1/audit/verify",
    operation_id = "verify_audit",
    tag = "audit",
    responses((status = 200, body = AuditVerification))
)]
pub(crate) async fn verify(
    State(services): State<Arc<Services>>,
) -> ApiResult<Json<AuditVerification>> {
    Ok(Json(services.verify_audit(crate::audit::Scope::Full).await))
}

/// Every entry, as stored (`entries.jsonl` of an export bundle) or as CSV.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    operation_id = "export_audit",
    tag = "audit",
    params(ExportQuery),
    responses((status = 200, description = "Every entry: `application/x-ndjson` (format `jsonl`) or `text/csv` (`csv`)", content((String = "application/x-ndjson"), (String = "text/csv"))), BadQuery, Internal)
)]
pub(crate) async fn export(
    State(services): State<Arc<Services>>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(super::bad_query)?;
    let csv = query.format == AuditExportFormat::Csv;
    let audit = std::sync::Arc::clone(&services.audit);
    let bytes = tokio::task::spawn_blocking(move || {
        let log = audit.log();
        log.sync().map_err(|e| e.to_string())?;
        if csv {
            let mut out = Vec::new();
            log.export_csv(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        } else {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            log.export(dir.path()).map_err(|e| e.to_string())?;
            std::fs::read(dir.path().join("entries.jsonl")).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e: String| ApiError::new(ErrorCode::Internal, format!("audit log: {e}")))?;
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response())
}

/// A self-contained export: every entry as stored, a fresh checkpoint covering exactly them, and the
/// verifier key (`ctl audit export` writes them as `entries.jsonl`, `checkpoint`, `public.key`).
#[utoipa::path(
    get,
    path = "/v1/audit/bundle",
    operation_id = "get_audit_bundle",
    tag = "audit",
    responses((status = 200, body = AuditBundle), Internal)
)]
pub(crate) async fn bundle(State(services): State<Arc<Services>>) -> ApiResult<Json<AuditBundle>> {
    let audit = std::sync::Arc::clone(&services.audit);
    let bundle = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        audit.log().export(dir.path()).map_err(|e| e.to_string())?;
        let read =
            |name: &str| std::fs::read_to_string(dir.path().join(name)).map_err(|e| e.to_string());
        Ok(AuditBundle {
            entries_jsonl: read("entries.jsonl")?,
            checkpoint: read("checkpoint")?,
            public_key: read("public.key")?,
        })
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e: String| ApiError::new(ErrorCode::Internal, format!("audit log: {e}")))?;
    Ok(Json(bundle))
}

/// Runs a query on a blocking thread (it reads the log file).
async fn query_log(
    audit: &std::sync::Arc<crate::audit::Auditor>,
    filter: celistra_audit::Query,
) -> ApiResult<celistra_audit::Page> {
    let audit = std::sync::Arc::clone(audit);
    tokio::task::spawn_blocking(move || audit.log().query(&filter))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(internal)
}

fn internal(e: celistra_audit::Error) -> Failure {
    ApiError::new(ErrorCode::Internal, format!("audit log: {e}")).into()
}

pub(crate) fn wire_entry(entry: celistra_audit::Entry) -> AuditEntry {
    AuditEntry {
        seq: entry.seq,
        time_ms: entry.time_ms,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        body: entry.body,
        prev_hash: entry.prev_hash,
        hash: entry.hash,
    }
}
