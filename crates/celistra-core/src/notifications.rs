//! The `notifications` section of `config.json`: where approval requests are announced (ntfy
//! topics, webhooks; Web Push subscriptions are managed through the API) and the rules their
//! addresses must follow.

use serde::{Deserialize, Serialize};

/// How approval requests reach people. Read at every request, so edits apply to the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// The address at which a phone reaches this daemon (`https://celistra.example.net`), used to
    /// build decision links. Without it, links point at the daemon's own listen address.
    pub public_url: Option<String>,
    /// The `sub` claim of Web Push (VAPID) tokens: a `mailto:` or `https:` contact for push services.
    pub push_contact: Option<String>,
    pub ntfy: Vec<NtfyChannel>,
    pub webhooks: Vec<WebhookChannel>,
}

/// An ntfy topic (ntfy.sh or a self-hosted server) that gets each request with action buttons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyChannel {
    /// Names the channel in status, events and the audit log (`ntfy:<name>`).
    pub name: String,
    /// The ntfy server, `https://ntfy.sh` unless set.
    #[serde(default = "default_ntfy_server")]
    pub server: String,
    pub topic: String,
    /// A file (0600, relative to the state directory unless absolute) holding an access token.
    #[serde(default)]
    pub token_file: Option<String>,
    /// ntfy priority 1–5; 5 (urgent) makes phones ring through do-not-disturb where allowed.
    #[serde(default = "default_ntfy_priority")]
    pub priority: u8,
}

/// A URL that gets each request and decision as signed JSON, retried with backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// Names the channel in status, events and the audit log (`webhook:<name>`).
    pub name: String,
    pub url: String,
    /// The HMAC-SHA256 key file (0600, relative to the state directory unless absolute). Created
    /// with a random key when absent; `webhook-<name>.secret` unless set.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Deliveries tried at most this many times (1–10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The first retry waits this long; each later one twice as long, at most 60 s.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
}

fn default_ntfy_server() -> String {
    "https://ntfy.sh".into()
}
fn default_ntfy_priority() -> u8 {
    5
}
fn default_attempts() -> u32 {
    5
}
fn default_retry_ms() -> u64 {
    1000
}

impl WebhookChannel {
    /// The key file as configured, or its default name.
    pub fn secret_file(&self) -> String {
        self.secret_file
            .clone()
            .unwrap_or_else(|| format!("webhook-{}.secret", self.name))
    }
}

/// A problem in the section: the dotted field and what is wrong.
pub type Problem = (String, String);

impl NotificationsConfig {
    /// Checks every address and name; the error names the field (`notifications.ntfy[0].topic`).
    pub fn check(&self) -> Result<(), Problem> {
        let field = |rest: &str| format!("notifications.{rest}");
        if let Some(url) = &self.public_url {
            check_url(url, true).map_err(|why| (field("public_url"), why))?;
        }
        if let Some(contact) = &self.push_contact
            && !(contact.starts_with("mailto:") || contact.starts_with("https://"))
        {
            return Err((
                field("push_contact"),
                "must start with `mailto:` or `https://`".into(),
            ));
        }
        let mut names = Vec::new();
        for (i, channel) in self.ntfy.iter().enumerate() {
            let at = |name: &str| field(&format!("ntfy[{i}].{name}"));
            check_name(&channel.name).map_err(|why| (at("name"), why))?;
            check_url(&channel.server, false).map_err(|why| (at("server"), why))?;
            if channel.topic.is_empty()
                || channel.topic.len() > 64
                || !channel
                    .topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((
                    at("topic"),
                    "must be 1–64 letters, digits, `-` or `_`".into(),
                ));
            }
            if !(1..=5).contains(&channel.priority) {
                return Err((at("priority"), "must be 1 to 5".into()));
            }
            names.push((format!("ntfy:{}", channel.name), at("name")));
        }
        for (i, channel) in self.webhooks.iter().enumerate() {
            let at = |name: &str| field(&format!("webhooks[{i}].{name}"));
            check_name(&channel.name).map_err(|why| (at("name"), why))?;
            check_url(&channel.url, false).map_err(|why| (at("url"), why))?;
            if !(1..=10).contains(&channel.max_attempts) {
                return Err((at("max_attempts"), "must be 1 to 10".into()));
            }
            if !(10..=60_000).contains(&channel.retry_initial_ms) {
                return Err((
                    at("retry_initial_ms"),
                    "must be 10 to 60000 milliseconds".into(),
                ));
            }
            names.push((format!("webhook:{}", channel.name), at("name")));
        }
        names.sort();
        if let Some(pair) = names.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err((
                pair[1].1.clone(),
                format!("`{}` is used twice; channel names must differ", pair[1].0),
            ));
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must be 1–32 lowercase letters, digits or `-`".into());
    }
    Ok(())
}

/// An address the daemon sends to (or, with `public`, one that phones open): `https://`, or
/// `http://` to a loopback host, since a notification carries a decision link that must not
/// cross a network in the clear. A public URL may be plain `http://` anywhere: the operator
/// chooses how phones reach the daemon (a VPN, say), and the link is only as private as that.
pub fn check_url(url: &str, public: bool) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL (https://host/…)"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_of(authority);
    if host.is_empty() || authority.contains('@') || url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` has no usable host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if public || is_loopback_host(host) => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http to another machine; use https (http is allowed only to loopback)"
        )),
        _ => Err(format!("`{url}` must start with https://")),
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// `localhost`, `127.x.y.z` or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(name: &str, url: &str) -> WebhookChannel {
        WebhookChannel {
            name: name.into(),
            url: url.into(),
            secret_file: None,
            max_attempts: 5,
            retry_initial_ms: 1000,
        }
    }

    #[test]
    fn addresses_must_be_https_or_loopback() {
        assert!(check_url("https://ntfy.sh", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", false).is_ok());
        assert!(check_url("http://[::1]:80/", false).is_ok());
        assert!(check_url("http://localhost/x", false).is_ok());
        assert!(check_url("http://10.0.0.2/x", false).is_err());
        assert!(check_url("http://10.0.0.2/x", true).is_ok());
        assert!(check_url("ftp://host/", false).is_err());
        assert!(check_url("https://user@host/", false).is_err());
        assert!(check_url("https:///path", false).is_err());
        assert!(check_url("ntfy.sh/topic", false).is_err());
    }

    #[test]
    fn problems_name_the_field() {
        let mut config = NotificationsConfig {
            webhooks: vec![webhook("ops", "https://a"), webhook("ops", "https://b")],
            ..NotificationsConfig::default()
        };
        let (field, why) = config.check().unwrap_err();
        assert_eq!(field, "notifications.webhooks[1].name");
        assert!(why.contains("used twice"), "{why}");
        config.webhooks[1].name = "Ops".into();
        assert_eq!(
            config.check().unwrap_err().0,
            "notifications.webhooks[1].name"
        );
        config.webhooks[1] = webhook("b", "http://192.168.1.4/");
        assert_eq!(
            config.check().unwrap_err().0,
            "notifications.webhooks[1].url"
        );
        config.webhooks.pop();
        config.ntfy.push(NtfyChannel {
            name: "ops".into(),
            server: default_ntfy_server(),
            topic: "a topic".into(),
            token_file: None,
            priority: 5,
        });
        assert_eq!(config.check().unwrap_err().0, "notifications.ntfy[0].topic");
        config.ntfy[0].topic = "celistra-x1".into();
        assert!(config.check().is_ok(), "ntfy:ops and webhook:ops differ");
    }
}
