//! ntfy (ntfy.sh or self-hosted): a JSON publish whose Approve and Deny buttons call the
//! decision link from the phone, and whose tap opens the link's press-and-hold page.

use celistra_core::notifications::NtfyChannel;
use celistra_proto::Notice;
use serde_json::json;

use crate::NotifyError;

/// The publish request for `notice` on `channel`, with the access token if one is configured.
pub fn request(
    channel: &NtfyChannel,
    token: Option<&str>,
    notice: &Notice,
) -> Result<http::Request<Vec<u8>>, NotifyError> {
    let (title, message) = crate::headline(notice);
    let mut body = json!({
        "topic": channel.topic,
        "title": title,
        "message": message,
        "priority": channel.priority,
        "tags": ["warning"],
    });
    if let Some(url) = &notice.decide_url {
        let button = |label: &str, verdict: &str| {
            json!({
                "action": "http",
                "label": label,
                "url": url,
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": json!({"verdict": verdict}).to_string(),
                "clear": true,
            })
        };
        body["click"] = json!(url);
        body["actions"] = json!([button("Approve", "approve"), button("Deny", "deny")]);
    }
    let mut builder = http::Request::post(channel.server.trim_end_matches('/').to_owned() + "/")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(body.to_string().into_bytes())
        .map_err(|e| NotifyError::Invalid(format!("ntfy server address: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use celistra_proto::{Approval, ApprovalStatus, NoticeKind, TimeoutDefault};

    #[test]
    fn buttons_post_the_verdict_to_the_link() {
        let channel = NtfyChannel {
            name: "phone".into(),
            server: "https://ntfy.example.net/".into(),
            topic: "celistra-x1".into(),
            token_file: None,
            priority: 5,
        };
        let notice = Notice {
            kind: NoticeKind::ApprovalRequested,
            machine: "m-1".into(),
            approval: Some(Approval {
                id: "ap-000000000001".into(),
                agent_id: "ag-1".into(),
                agent_name: "coder".into(),
                origin: "ask".into(),
                key: None,
                prompt: "git push".into(),
                detail: Some("origin main".into()),
                created_at_ms: 1,
                expires_at_ms: 2,
                on_timeout: TimeoutDefault::Deny,
                status: ApprovalStatus::Pending,
                decided_by: None,
                decided_by_role: None,
                decided_via: None,
                decided_at_ms: None,
                reason: None,
            }),
            decide_url: Some("https://d.example.net/d/TOKEN".into()),
            activity: None,
            sent_at_ms: 1,
        };
        let request = request(&channel, Some("tk_1"), &notice).unwrap();
        assert_eq!(request.uri(), "https://ntfy.example.net/");
        assert_eq!(request.headers()["authorization"], "Bearer tk_1");
        let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(body["topic"], "celistra-x1");
        assert_eq!(body["title"], "coder asks for approval");
        assert_eq!(body["message"], "git push\norigin main");
        assert_eq!(body["click"], "https://d.example.net/d/TOKEN");
        let approve = &body["actions"][0];
        assert_eq!(
            (&approve["label"], &approve["method"], &approve["url"]),
            (
                &json!("Approve"),
                &json!("POST"),
                &json!("https://d.example.net/d/TOKEN")
            )
        );
        assert_eq!(approve["body"], r#"{"verdict":"approve"}"#);
        assert_eq!(body["actions"][1]["body"], r#"{"verdict":"deny"}"#);
    }
}
