// The dashboard's service worker: caches the app shell (so the page opens offline and can say the
// daemon is unreachable), and shows approval requests that arrive by Web Push, with Approve and
// Deny actions. Approve opens the request's decision page (a deliberate press-and-hold there);
// Deny posts the decision URL; a click on the notification opens the approvals inbox. An agent's
// activity notice ("coder needs input", with its evidence) opens the dashboard at that agent.

const VERSION = "__VERSION__";
const SHELL = "__SHELL__";
const CACHE = `celistra-shell-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("celistra-shell-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// The shell: network first (a fresh page when the daemon answers), the cache when it does not.
// The API is never cached.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/v1/")) return;
  if (event.request.mode === "navigate") {
    event.respondWith(fetch(event.request).catch(() => caches.match("/", { cacheName: CACHE })));
    return;
  }
  if (url.pathname.startsWith("/assets/") || SHELL.includes(url.pathname)) {
    event.respondWith(caches.match(event.request, { cacheName: CACHE }).then((hit) => hit || fetch(event.request)));
  }
});

self.addEventListener("push", (event) => {
  let message;
  try {
    message = event.data ? event.data.json() : null;
  } catch {
    message = null;
  }
  if (message && message.kind === "test") {
    // `celistrad ctl notifications test`: show that this device is reached.
    event.waitUntil(
      self.registration.showNotification("celistra test notification", {
        body: `Notifications from machine ${message.machine} reach this device.`,
        tag: "celistra-test",
        icon: "/icons/icon-192.png",
      }),
    );
    return;
  }
  if (message && message.kind === "agent_activity" && message.activity) {
    const notice = message.activity;
    const info = notice.activity || {};
    const evidence = info.evidence || {};
    event.waitUntil(
      self.registration.showNotification(`${notice.agent_name} ${activityPhrase(info.activity)}`, {
        body: [evidence.said, evidence.signal ? `(${evidence.signal})` : ""].filter(Boolean).join("\n"),
        tag: `activity-${notice.agent_id}`,
        renotify: true,
        icon: "/icons/icon-192.png",
        badge: "/icons/icon-192.png",
        timestamp: evidence.at_ms || message.sent_at_ms,
        data: { agent: notice.agent_id },
      }),
    );
    return;
  }
  if (!message || !message.approval) return;
  const approval = message.approval;
  if (message.kind === "approval_decided") {
    event.waitUntil(
      self.registration.getNotifications({ tag: approval.id }).then((list) => list.forEach((n) => n.close())),
    );
    return;
  }
  if (message.kind !== "approval_requested") return;
  const body = approval.detail ? `${approval.prompt}\n${approval.detail.slice(0, 200)}` : approval.prompt;
  event.waitUntil(
    self.registration.showNotification(`${approval.agent_name} asks for approval`, {
      body,
      tag: approval.id,
      renotify: true,
      requireInteraction: true,
      icon: "/icons/icon-192.png",
      badge: "/icons/icon-192.png",
      vibrate: [120, 60, 120],
      timestamp: approval.created_at_ms,
      data: { id: approval.id, decide_url: message.decide_url },
      actions: [
        { action: "approve", title: "Approve…" },
        { action: "deny", title: "Deny" },
      ],
    }),
  );
});

/// "coder needs input": the activity as the end of a sentence.
function activityPhrase(activity) {
  switch (activity) {
    case "needs-input":
      return "needs input";
    case "waiting-approval":
      return "waits for approval";
    case "waiting-limit":
      return "waits for a usage limit's reset";
    case "model-error":
      return "hit a model error";
    case "working":
      return "is working";
    case "idle":
      return "is idle";
    default:
      return `is ${activity}`;
  }
}

async function focusOrOpen(url) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if (new URL(client.url).origin === self.location.origin && "focus" in client) {
      await client.navigate(url).catch(() => undefined);
      return client.focus();
    }
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  if (event.action === "approve" && data.decide_url) {
    event.waitUntil(self.clients.openWindow(data.decide_url));
  } else if (event.action === "deny" && data.decide_url) {
    event.waitUntil(
      fetch(data.decide_url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ verdict: "deny" }),
      }).catch(() => focusOrOpen(`/#/approvals/${data.id}`)),
    );
  } else if (data.agent) {
    event.waitUntil(focusOrOpen(`/#/agent/${encodeURIComponent(data.agent)}`));
  } else {
    event.waitUntil(focusOrOpen(data.id ? `/#/approvals/${data.id}` : "/#/approvals"));
  }
});
