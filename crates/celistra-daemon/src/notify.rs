//! Approval notifications: which channels get each request and decision, the Web Push devices
//! (`push-subscriptions.json`), the link-signing and VAPID keys, and how each channel fares.
//! Every delivery runs in its own task, so a channel that is down delays nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use celistra_audit::to_hex;
use celistra_core::notifications::NotificationsConfig;
use celistra_notify::delivery::{Outcome, Retry, Sender};
use celistra_notify::links::{Link, LinkError, LinkKey};
use celistra_notify::webpush::{Device, VapidKey};
use celistra_notify::{NotifyError, ntfy, webhook, webpush};
use celistra_proto::{
    ActivityNotice, ApiError, Approval, ChannelStatus, ErrorCode, EventKind, Notice, NoticeKind,
    NotificationsStatus, PushKeys, PushSubscriptionInfo, PushSubscriptionRequest,
};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::audit::Auditor;
use crate::events::EventBus;
use crate::home::{Home, random_hex, read_private, write_atomic_private};
use crate::{Error, now_ms};

/// Subscribed devices kept at most; a new one beyond this replaces the oldest.
const MAX_DEVICES: usize = 64;
/// Push messages about a decision are kept this long by push services for an offline phone.
const DECIDED_TTL: Duration = Duration::from_secs(600);
const PUSH_ATTEMPTS: u32 = 3;
const NTFY_ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A device as stored: its keys stay on disk (0600) and never go back out through the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDevice {
    id: String,
    endpoint: String,
    keys: PushKeys,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    created_at_ms: u64,
}

impl StoredDevice {
    fn info(&self) -> PushSubscriptionInfo {
        PushSubscriptionInfo {
            id: self.id.clone(),
            endpoint: self.endpoint.clone(),
            label: self.label.clone(),
            created_at_ms: self.created_at_ms,
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct DeviceFile {
    version: u32,
    devices: Vec<StoredDevice>,
}

/// One request ready to leave: the channel it goes through and how to build each attempt.
struct Delivery {
    channel: String,
    approval_id: Option<String>,
    build: Box<dyn FnMut() -> Result<http::Request<Vec<u8>>, NotifyError> + Send>,
    retry: Retry,
    /// A Web Push device to forget if its push service says it is gone.
    device: Option<String>,
}

pub(crate) struct Notifications {
    home: Home,
    machine: String,
    links: LinkKey,
    vapid: Arc<VapidKey>,
    /// `http://<listen address>`, set once the listener is bound.
    listen_base: OnceLock<String>,
    /// Made on first use: most daemons never send a notification.
    sender: OnceLock<Result<Sender, String>>,
    devices_path: PathBuf,
    devices: Mutex<Vec<StoredDevice>>,
    status: Mutex<BTreeMap<String, ChannelStatus>>,
    /// Where a failed delivery is announced (`notification_failed`).
    events: Arc<EventBus>,
    /// Where forgetting a device the push service says is gone is recorded.
    audit: Arc<Auditor>,
    /// The daemon's runtime: announcements may start from an output reader's thread.
    runtime: tokio::runtime::Handle,
}

/// Shows no key.
impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("devices", &self.lock_devices().len())
            .finish_non_exhaustive()
    }
}

impl Notifications {
    /// Loads (or creates) the keys and the device list from the state directory.
    pub(crate) fn load(
        home: &Home,
        machine: String,
        events: Arc<EventBus>,
        audit: Arc<Auditor>,
    ) -> Result<Notifications, Error> {
        let links = read_private(
            &home.dir.join("decision-links.key"),
            "the decision link key",
            Some(&|| random_hex(32)),
        )?;
        let links = decode_key(&links)
            .map(LinkKey::new)
            .ok_or_else(|| invalid_key(&home.dir.join("decision-links.key")))?;
        let vapid_path = home.dir.join("vapid.key");
        let vapid = read_private(
            &vapid_path,
            "the Web Push (VAPID) key",
            Some(&|| Ok(to_hex(&VapidKey::generate().to_bytes()))),
        )?;
        let vapid = decode_key(&vapid)
            .and_then(|bytes| VapidKey::from_bytes(&bytes).ok())
            .ok_or_else(|| invalid_key(&vapid_path))?;
        let devices_path = home.dir.join("push-subscriptions.json");
        let devices = match std::fs::read_to_string(&devices_path) {
            Ok(text) => {
                celistra_core::json::parse::<DeviceFile>(&text, &devices_path.display().to_string())
                    .map_err(|e| Error::Invalid(format!("{e}; fix or delete the file")))?
                    .devices
            }
            Err(_) => Vec::new(),
        };
        Ok(Notifications {
            home: home.clone(),
            machine,
            links,
            vapid: Arc::new(vapid),
            listen_base: OnceLock::new(),
            sender: OnceLock::new(),
            devices_path,
            devices: Mutex::new(devices),
            status: Mutex::default(),
            events,
            audit,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The daemon's own `http://` or `https://` address, for links when `public_url` is unset.
    pub(crate) fn set_listen_base(&self, base: &str) {
        let _ = self.listen_base.set(base.to_owned());
    }

    /// The key browsers subscribe with.
    pub(crate) fn vapid_public_key(&self) -> String {
        self.vapid.public_key()
    }

    fn lock_devices(&self) -> std::sync::MutexGuard<'_, Vec<StoredDevice>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save_devices(&self, devices: &[StoredDevice]) -> Result<(), ApiError> {
        let file = DeviceFile {
            version: 1,
            devices: devices.to_vec(),
        };
        let text = serde_json::to_vec_pretty(&file).expect("devices serialise");
        write_atomic_private(&self.devices_path, &text).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot save {}: {e}", self.devices_path.display()),
            )
        })
    }

    pub(crate) fn subscriptions(&self) -> Vec<PushSubscriptionInfo> {
        self.lock_devices().iter().map(StoredDevice::info).collect()
    }

    /// Adds a device (or refreshes one already subscribed with the same endpoint).
    pub(crate) fn subscribe(
        &self,
        request: PushSubscriptionRequest,
    ) -> Result<PushSubscriptionInfo, ApiError> {
        Device::parse(&request).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("bad push subscription: {e}"),
            )
        })?;
        if request.label.as_ref().is_some_and(|l| l.len() > 64) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the label is longer than 64 bytes",
            ));
        }
        let id = format!(
            "ps-{}",
            random_hex(6).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        );
        let mut devices = self.lock_devices();
        let mut next = devices.clone();
        next.retain(|d| d.endpoint != request.endpoint);
        if next.len() >= MAX_DEVICES {
            next.remove(0);
        }
        let device = StoredDevice {
            id,
            endpoint: request.endpoint,
            keys: request.keys,
            label: request.label,
            created_at_ms: now_ms(),
        };
        next.push(device.clone());
        self.save_devices(&next)?;
        *devices = next;
        Ok(device.info())
    }

    pub(crate) fn unsubscribe(&self, id: &str) -> Result<PushSubscriptionInfo, ApiError> {
        let mut devices = self.lock_devices();
        let Some(at) = devices.iter().position(|d| d.id == id) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no push subscription `{id}`; `celistrad ctl notifications` lists them"),
            ));
        };
        let mut next = devices.clone();
        let removed = next.remove(at);
        self.save_devices(&next)?;
        *devices = next;
        self.lock_status().remove(&format!("push:{id}"));
        Ok(removed.info())
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every configured channel and device with how it fared.
    pub(crate) fn status(&self, config: &NotificationsConfig) -> NotificationsStatus {
        let subscriptions = self.subscriptions();
        let known = self.lock_status();
        let channels = channel_names(config)
            .into_iter()
            .chain(subscriptions.iter().map(|s| format!("push:{}", s.id)))
            .map(|channel| {
                known.get(&channel).cloned().unwrap_or(ChannelStatus {
                    channel,
                    ..ChannelStatus::default()
                })
            })
            .collect();
        NotificationsStatus {
            decision_base: self.decision_base(config),
            channels,
            subscriptions,
        }
    }

    fn decision_base(&self, config: &NotificationsConfig) -> String {
        config
            .public_url
            .clone()
            .or_else(|| self.listen_base.get().cloned())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    }

    /// Checks a decision link's token.
    pub(crate) fn open_link(&self, token: &str) -> Result<Link, LinkError> {
        self.links.open(token, now_ms())
    }

    fn decide_url(&self, config: &NotificationsConfig, approval: &Approval, via: &str) -> String {
        let token = self.links.mint(&Link {
            approval_id: approval.id.clone(),
            via: via.to_owned(),
            expires_at_ms: approval.expires_at_ms,
        });
        format!("{}/d/{token}", self.decision_base(config))
    }

    fn notice(&self, kind: NoticeKind, subject: Subject<'_>, decide_url: Option<String>) -> Notice {
        Notice {
            kind,
            machine: self.machine.clone(),
            approval: subject.approval().cloned(),
            decide_url,
            activity: match subject {
                Subject::Activity(about) => Some(about.clone()),
                _ => None,
            },
            sent_at_ms: now_ms(),
        }
    }

    /// The deliveries of one notice: ntfy topics (requests and tests only: ntfy cannot take a
    /// message back), webhooks, and every Web Push device.
    fn plan(
        &self,
        config: &NotificationsConfig,
        kind: NoticeKind,
        subject: Subject<'_>,
    ) -> Vec<Delivery> {
        let approval = subject.approval();
        let pending = kind == NoticeKind::ApprovalRequested;
        let deadline_ms = approval.filter(|_| pending).map(|a| a.expires_at_ms);
        let link = |via: &str| {
            approval
                .filter(|_| pending)
                .map(|a| self.decide_url(config, a, via))
        };
        let approval_id = approval.map(|a| a.id.clone());
        let mut plan = Vec::new();
        if kind != NoticeKind::ApprovalDecided {
            for channel in &config.ntfy {
                let name = format!("ntfy:{}", channel.name);
                let notice = self.notice(kind.clone(), subject, link(&name));
                let token = channel
                    .token_file
                    .as_ref()
                    .map(|file| self.secret(file, "the ntfy access token", false));
                let channel = channel.clone();
                plan.push(Delivery {
                    channel: name,
                    approval_id: approval_id.clone(),
                    build: Box::new(move || {
                        let token = token.clone().transpose().map_err(NotifyError::Invalid)?;
                        ntfy::request(&channel, token.as_deref(), &notice)
                    }),
                    retry: Retry {
                        attempts: NTFY_ATTEMPTS,
                        initial: FIRST_RETRY,
                        deadline_ms,
                    },
                    device: None,
                });
            }
        }
        for channel in &config.webhooks {
            let name = format!("webhook:{}", channel.name);
            let notice = self.notice(kind.clone(), subject, link(&name));
            let body = serde_json::to_vec(&notice).expect("a notice serialises");
            let secret = self.secret(&channel.secret_file(), "the webhook signing key", true);
            let delivery_id = random_hex(8).map_or_else(|_| "dl".into(), |h| format!("dl-{h}"));
            let url = channel.url.clone();
            let event = kind_name(&kind);
            plan.push(Delivery {
                channel: name,
                approval_id: approval_id.clone(),
                build: Box::new(move || {
                    let secret = secret.clone().map_err(NotifyError::Invalid)?;
                    let now = now_ms() / 1000;
                    webhook::request(&url, secret.as_bytes(), event, &delivery_id, &body, now)
                }),
                retry: Retry {
                    attempts: channel.max_attempts,
                    initial: Duration::from_millis(channel.retry_initial_ms),
                    deadline_ms,
                },
                device: None,
            });
        }
        let contact = config
            .push_contact
            .clone()
            .unwrap_or_else(|| "mailto:celistra@localhost".into());
        let ttl = match deadline_ms {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(now_ms()).max(1000)),
            None => DECIDED_TTL,
        };
        for device in self.lock_devices().iter() {
            let name = format!("push:{}", device.id);
            let notice = self.notice(kind.clone(), subject, link(&name));
            let payload = webpush::payload(&notice);
            let request = PushSubscriptionRequest {
                endpoint: device.endpoint.clone(),
                keys: device.keys.clone(),
                expiration_time: None,
                label: None,
            };
            let vapid = Arc::clone(&self.vapid);
            let contact = contact.clone();
            plan.push(Delivery {
                channel: name,
                approval_id: approval_id.clone(),
                build: Box::new(move || {
                    Device::parse(&request)?.request(&vapid, &contact, &payload, ttl)
                }),
                retry: Retry {
                    attempts: PUSH_ATTEMPTS,
                    initial: FIRST_RETRY,
                    deadline_ms,
                },
                device: Some(device.id.clone()),
            });
        }
        plan
    }

    /// A secret file's text, relative to the state directory unless absolute.
    fn secret(&self, file: &str, what: &str, create: bool) -> Result<String, String> {
        let path = if Path::new(file).is_absolute() {
            PathBuf::from(file)
        } else {
            self.home.dir.join(file)
        };
        let make = || random_hex(32);
        read_private(&path, what, create.then_some(&make as &dyn Fn() -> _))
            .map_err(|e| e.to_string())
    }

    fn sender(&self) -> Result<&Sender, String> {
        self.sender
            .get_or_init(|| Sender::new().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs one delivery to its end and records how it went.
    async fn deliver(&self, mut delivery: Delivery) -> (String, Outcome) {
        let outcome = match self.sender() {
            Ok(sender) => {
                sender
                    .deliver(&mut delivery.build, &delivery.retry, now_ms)
                    .await
            }
            Err(error) => Outcome::Failed { attempts: 0, error },
        };
        let mut status = self.lock_status();
        let entry = status
            .entry(delivery.channel.clone())
            .or_insert_with(|| ChannelStatus {
                channel: delivery.channel.clone(),
                ..ChannelStatus::default()
            });
        match &outcome {
            Outcome::Delivered { .. } => {
                entry.delivered += 1;
                entry.last_delivered_ms = Some(now_ms());
            }
            Outcome::Refused { error, .. } | Outcome::Failed { error, .. } => {
                entry.failed += 1;
                entry.last_error = Some(error.clone());
                entry.last_error_ms = Some(now_ms());
            }
        }
        (delivery.channel, outcome)
    }
}

impl Notifications {
    /// Announces a request or a decision on every channel of `config`, each in its own task.
    pub(crate) fn announce(
        self: &Arc<Self>,
        config: &NotificationsConfig,
        kind: NoticeKind,
        approval: &Approval,
    ) {
        self.send(self.plan(config, kind, Subject::Approval(approval)));
    }

    /// Tells every channel of `config` that an agent has been in an activity for a while.
    pub(crate) fn announce_activity(
        self: &Arc<Self>,
        config: &NotificationsConfig,
        about: &ActivityNotice,
    ) {
        self.send(self.plan(config, NoticeKind::AgentActivity, Subject::Activity(about)));
    }

    /// Runs each delivery in its own task; a failure is logged and published.
    fn send(self: &Arc<Self>, plan: Vec<Delivery>) {
        for delivery in plan {
            let notify = Arc::clone(self);
            self.runtime.spawn(async move {
                let approval_id = delivery.approval_id.clone();
                let device = delivery.device.clone();
                let (channel, outcome) = notify.deliver(delivery).await;
                let (attempts, error) = match outcome {
                    Outcome::Delivered { .. } => return,
                    Outcome::Refused { status: 404 | 410, .. } if device.is_some() => {
                        // RFC 8030 §7.3: the subscription is gone for good.
                        let id = device.expect("checked");
                        tracing::info!("push subscription {id} is gone; forgetting it");
                        if notify.unsubscribe(&id).is_ok() {
                            notify.audit.record(
                                &Actor::system(),
                                "push_unsubscribed",
                                &id,
                                serde_json::json!({ "reason": "the push service says the subscription is gone" }),
                            );
                        }
                        return;
                    }
                    Outcome::Refused { error, .. } => (1, error),
                    Outcome::Failed { attempts, error } => (attempts, error),
                };
                tracing::warn!(
                    "notification through {channel} failed after {attempts} attempts: {error}"
                );
                notify.events.publish(EventKind::NotificationFailed {
                    channel,
                    approval_id,
                    attempts,
                    error,
                });
            });
        }
    }

    /// Sends a test notice on every channel of `config` once and reports each outcome.
    pub(crate) async fn test(self: &Arc<Self>, config: &NotificationsConfig) -> Vec<ChannelStatus> {
        let tasks: Vec<_> = self
            .plan(config, NoticeKind::Test, Subject::Test)
            .into_iter()
            .map(|mut delivery| {
                delivery.retry.attempts = 1;
                let notify = Arc::clone(self);
                tokio::spawn(async move { notify.deliver(delivery).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            let Ok((channel, outcome)) = task.await else {
                continue;
            };
            results.push(match outcome {
                Outcome::Delivered { .. } => ChannelStatus {
                    channel,
                    delivered: 1,
                    last_delivered_ms: Some(now_ms()),
                    ..ChannelStatus::default()
                },
                Outcome::Refused { error, .. } | Outcome::Failed { error, .. } => ChannelStatus {
                    channel,
                    failed: 1,
                    last_error: Some(error),
                    last_error_ms: Some(now_ms()),
                    ..ChannelStatus::default()
                },
            });
        }
        results
    }
}

/// What a notice is about.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Approval(&'a Approval),
    Activity(&'a ActivityNotice),
    Test,
}

impl<'a> Subject<'a> {
    fn approval(self) -> Option<&'a Approval> {
        match self {
            Subject::Approval(approval) => Some(approval),
            _ => None,
        }
    }
}

fn channel_names(config: &NotificationsConfig) -> Vec<String> {
    config
        .ntfy
        .iter()
        .map(|c| format!("ntfy:{}", c.name))
        .chain(
            config
                .webhooks
                .iter()
                .map(|c| format!("webhook:{}", c.name)),
        )
        .collect()
}

fn kind_name(kind: &NoticeKind) -> &'static str {
    match kind {
        NoticeKind::ApprovalRequested => "approval_requested",
        NoticeKind::ApprovalDecided => "approval_decided",
        NoticeKind::Test => "test",
        NoticeKind::AgentActivity => "agent_activity",
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn invalid_key(path: &Path) -> Error {
    Error::Invalid(format!(
        "{} does not hold 64 hex digits; delete it to make a new key (links and subscriptions made with the old one stop working)",
        path.display()
    ))
}
