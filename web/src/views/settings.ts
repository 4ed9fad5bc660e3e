// This device: notifications (Web Push subscription with the daemon's VAPID key; for sessions
// that may see approvals), the dashboard's sessions (revoke; the owner's), and logging out.

import { api, ApiError } from "../api";
import { clear, clock, h, toast } from "../dom";
import { can } from "../role";

interface SessionInfo {
  id: string;
  created_at_ms: number;
  last_seen_ms: number;
  user_agent: string;
  current: boolean;
}

const PUSH_ID = "celistra.push-subscription-id";

function urlBase64ToBytes(text: string): Uint8Array<ArrayBuffer> {
  const base64 = (text + "=".repeat((4 - (text.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/// Subscribes this browser to the daemon's Web Push; throws an error that says what is missing.
export async function enablePush(label: string): Promise<void> {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    throw new Error("this browser cannot receive push notifications (on iPhone, add the dashboard to the home screen first)");
  }
  let key: { public_key: string };
  try {
    key = await api<{ public_key: string }>("GET", "/v1/push/vapid-key");
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      throw new Error("this daemon does not offer Web Push yet; update celistrad");
    }
    throw e;
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("notifications are blocked for this site; allow them in the browser's settings");
  const registration = await navigator.serviceWorker.ready;
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: urlBase64ToBytes(key.public_key),
  });
  const json = subscription.toJSON();
  const saved = await api<{ id: string }>("POST", "/v1/push/subscriptions", {
    endpoint: json.endpoint,
    keys: json.keys,
    label,
  });
  // The subscription's id is not a secret: it only lets this page unsubscribe itself.
  localStorage.setItem(PUSH_ID, saved.id);
}

export async function disablePush(): Promise<void> {
  const id = localStorage.getItem(PUSH_ID);
  // Removing a subscription from the daemon is the owner's; for other roles the browser's own
  // unsubscription is enough: the push service then says the device is gone, and the daemon
  // forgets it at its next notification.
  if (id && can("owner")) await api("DELETE", `/v1/push/subscriptions/${encodeURIComponent(id)}`).catch(() => undefined);
  localStorage.removeItem(PUSH_ID);
  const registration = await navigator.serviceWorker?.getRegistration();
  const subscription = await registration?.pushManager.getSubscription();
  await subscription?.unsubscribe();
}

export class SettingsView {
  readonly element: HTMLElement;
  private readonly sessions: HTMLElement;
  private readonly pushStatus: HTMLElement;

  constructor(private readonly logout: () => void) {
    this.sessions = h("ul", { class: "cards sessions" });
    this.pushStatus = h("p", { class: "hint", role: "status", "aria-live": "polite" });
    const toggle = h("input", { type: "checkbox", id: "push-toggle", role: "switch" });
    toggle.checked = localStorage.getItem(PUSH_ID) !== null;
    toggle.addEventListener("change", async () => {
      toggle.disabled = true;
      try {
        if (toggle.checked) {
          await enablePush(navigator.userAgent.slice(0, 60));
          this.pushStatus.textContent = "Approval requests will notify this device.";
        } else {
          await disablePush();
          this.pushStatus.textContent = "Notifications are off on this device.";
        }
      } catch (e) {
        toggle.checked = false;
        this.pushStatus.textContent = `Cannot turn notifications on: ${(e as Error).message}`;
      } finally {
        toggle.disabled = false;
      }
    });
    this.element = h(
      "section",
      { class: "view settings-view", "aria-labelledby": "settings-title" },
      h("div", { class: "toolbar" }, h("h1", { id: "settings-title" }, "This device")),
      // Approval requests are the approver's (an operator's and the owner's too).
      can("approver")
        ? [
            h("h2", {}, "Notifications"),
            h("div", { class: "field check" }, toggle, h("label", { for: "push-toggle" }, "Notifications on this device (approval requests)")),
            this.pushStatus,
          ]
        : null,
      h("h2", {}, "Install"),
      h("p", { class: "hint" }, "On a phone, use the browser's “Add to Home screen” to install the dashboard as an app."),
      can("owner") ? [h("h2", {}, "Sessions"), this.sessions] : null,
      h("button", { type: "button", class: "danger", onclick: () => this.logout() }, "Log out"),
    );
  }

  async load(): Promise<void> {
    // Listing and revoking sessions is the owner's.
    if (!can("owner")) return;
    try {
      const sessions = await api<SessionInfo[]>("GET", "/v1/sessions");
      clear(
        this.sessions,
        sessions.map((s) =>
          h(
            "li",
            { class: "card" },
            h("p", {}, h("strong", { class: "mono" }, s.id), s.current ? " (this browser)" : ""),
            h("p", { class: "meta" }, `logged in ${clock(s.created_at_ms)} · last seen ${clock(s.last_seen_ms)}`),
            h("p", { class: "meta" }, s.user_agent),
            s.current
              ? null
              : h(
                  "button",
                  {
                    type: "button",
                    class: "danger",
                    onclick: async () => {
                      try {
                        await api("DELETE", `/v1/sessions/${s.id}`);
                        void this.load();
                      } catch (e) {
                        toast((e as Error).message, "error");
                      }
                    },
                  },
                  "Revoke",
                ),
          ),
        ),
      );
    } catch (e) {
      toast((e as Error).message, "error");
    }
  }
}
