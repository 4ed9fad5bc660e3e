// The dashboard's entry: the login exchange (`/login#<code>`), the session check, the layout
// (fleet sidebar, navigation, per-machine stream banners), hash routing between the views that the
// session's role may use, the service worker, and the benchmark hook.

import "./style.css";
import { api, ApiError, setCsrf } from "./api";
import { clear, h } from "./dom";
import { newMachine, store, type Machine } from "./store";
import { can, refusal, role, setRole } from "./role";
import type { AgentInfo, Role, SessionState } from "./types";
import { ActivityView } from "./views/activity";
import { AgentsView, filter } from "./views/agents";
import { AgentDetailView } from "./views/agent";
import { ApprovalsView } from "./views/approvals";
import { HistoryView } from "./views/history";
import { SettingsView } from "./views/settings";
import { TerminalView } from "./views/terminal";

const root = document.getElementById("app")!;

function page(title: string, ...body: (Node | string)[]): void {
  document.title = `${title} · Celistra`;
  clear(root, h("main", { class: "page", id: "main" }, h("h1", {}, title), ...body));
}

async function login(): Promise<void> {
  const code = location.hash.slice(1);
  // The code leaves the address bar (and history) before anything else happens.
  history.replaceState(null, "", "/login");
  if (!code) {
    page("No login code", h("p", {}, "This link has no login code. Run ", h("code", {}, "celistrad ctl dashboard"), " on the machine and open the link it prints."));
    return;
  }
  try {
    const state = await api<SessionState>("POST", "/v1/sessions/login", { code });
    setCsrf(state.csrf_token);
    setRole(state.session.role);
    history.replaceState(null, "", "/");
    start();
  } catch (e) {
    const message = e instanceof ApiError ? e.message : String(e);
    page(
      "Login failed",
      h("p", { class: "error", role: "alert", id: "login-error" }, message),
      h("p", {}, "Run ", h("code", {}, "celistrad ctl dashboard"), " for a new link: each link works once, within 5 minutes."),
    );
  }
}

async function boot(): Promise<void> {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").catch(() => undefined);
  }
  if (location.pathname === "/login") {
    await login();
    return;
  }
  try {
    const state = await api<SessionState>("GET", "/v1/session");
    setCsrf(state.csrf_token);
    setRole(state.session.role);
    start();
  } catch (e) {
    if (e instanceof ApiError && e.status === 0) {
      unreachable();
    } else {
      page(
        "Log in",
        h("p", {}, "This browser has no dashboard session (or it ended). On the machine, run"),
        h("pre", {}, "celistrad ctl dashboard"),
        h("p", {}, "and open the link it prints. The link works once, within 5 minutes."),
      );
    }
  }
}

function unreachable(): void {
  page(
    "Daemon unreachable",
    h("p", { role: "alert", class: "error", id: "unreachable" }, "The celistrad daemon does not answer. Is it running on this machine?"),
    h("p", {}, "Start it with ", h("code", {}, "scripts/run"), " or ", h("code", {}, "celistrad"), ". This page retries by itself."),
    h("button", { type: "button", class: "primary", onclick: () => location.reload() }, "Retry now"),
  );
  setTimeout(() => location.reload(), 10_000);
}

type ViewName = "agents" | "agent" | "terminal" | "approvals" | "activity" | "history" | "settings";

/// Each view, the least role whose routes it reads (null: every session), its label and icon.
const VIEWS: [ViewName, Role | null, string, string][] = [
  ["agents", "viewer", "Agents", "☰"],
  ["agent", "viewer", "Agent", "☰"],
  ["terminal", "viewer", "Terminal", "⌨"],
  ["approvals", "approver", "Approvals", "⚑"],
  ["activity", "viewer", "Activity", "≋"],
  ["history", "viewer", "History", "↺"],
  ["settings", null, "Device", "⚙"],
];

/// What a view the session's role cannot use shows instead (a bookmark, an old link).
function notForRole(label: string, required: Role): HTMLElement {
  return h(
    "section",
    { class: "view role-note", "aria-labelledby": "role-note-title" },
    h("div", { class: "toolbar" }, h("h1", { id: "role-note-title" }, label)),
    h("p", { role: "status" }, refusal(required)),
  );
}

function start(): void {
  // Only the views this role may use are made: the others would read routes it cannot.
  const allowed = VIEWS.filter(([, required]) => required === null || can(required));
  // One agent's detail (`#/agent/<id>[/<machine>]`) is no tab of its own: it is reached from a row.
  const labels = allowed.filter(([name]) => name !== "agent").map(([name, , label, icon]) => [name, label, icon] as const);
  const terminal = can("viewer") ? new TerminalView() : null;
  const agents = can("viewer")
    ? new AgentsView(({ machine, agent }) => {
        terminal?.open(machine, agent.id, agent.name);
        location.hash = "#/terminal";
      })
    : null;
  const detail = can("viewer")
    ? new AgentDetailView((machine, agent) => {
        terminal?.open(machine, agent.id, agent.name);
        location.hash = "#/terminal";
      })
    : null;
  const approvals = can("approver") ? new ApprovalsView() : null;
  const activity = can("viewer") ? new ActivityView() : null;
  const historyView = can("viewer") ? new HistoryView() : null;
  const settings = new SettingsView(async () => {
    await api("POST", "/v1/session/logout").catch(() => undefined);
    location.replace("/");
  });
  const views: Partial<Record<ViewName, HTMLElement>> = {
    agents: agents?.element,
    agent: detail?.element,
    terminal: terminal?.element,
    approvals: approvals?.element,
    activity: activity?.element,
    history: historyView?.element,
    settings: settings.element,
  };
  const home: ViewName = allowed[0]![0];
  const badge = h("span", { class: "nav-badge", hidden: true, "aria-label": "pending approvals" });
  const nav = h(
    "nav",
    { class: "nav", "aria-label": "Views" },
    labels.map(([name, label, icon]) =>
      h("a", { href: `#/${name}`, "data-view": name }, h("span", { class: "nav-icon", "aria-hidden": "true" }, icon), h("span", { class: "nav-label" }, label), name === "approvals" ? badge : null),
    ),
  );
  const banners = h("div", { class: "banners", "aria-live": "polite" });
  const machineList = h("ul", { class: "machines", "aria-label": "Machines" });
  const search = h("input", { id: "fleet-filter", type: "search", placeholder: "name, id, command or machine", autocomplete: "off", autocapitalize: "off", spellcheck: "false" });
  search.addEventListener("input", () => {
    filter.text = search.value.trim();
    store.changed("filter");
  });
  const sidebar = h(
    "aside",
    { class: "sidebar", "aria-label": "Fleet" },
    h(
      "div",
      { class: "sidebar-head" },
      h("h2", {}, "Fleet"),
      h("span", { class: "role-chip", "data-role": role(), title: "This session's role: what this dashboard may do" }, h("span", { class: "sr-only" }, "Session role: "), role()),
    ),
    agents ? [h("label", { for: "fleet-filter", class: "sr-only" }, "Filter agents"), search] : null,
    machineList,
  );
  const content = h("div", { class: "content", id: "main", tabindex: "-1" });
  clear(
    root,
    h("a", { href: "#main", class: "skip" }, "Skip to content"),
    h("header", { class: "top" }, h("span", { class: "brand" }, h("img", { src: "/icons/icon.svg", alt: "", width: 24, height: 24 }), " Celistra"), nav),
    h("div", { class: "layout" }, sidebar, h("main", { class: "main" }, banners, content)),
  );

  /// The sidebar: every machine of the fleet with its online state and agent counts (the selected
  /// one's live, the others' from the machines list), a flag when witnessing found its audit log
  /// tampered with; pressing one selects it, and every view follows.
  const renderMachines = () => {
    clear(
      machineList,
      store.machines.map((m) => {
        const selected = m.name === store.selected;
        const online = selected ? m.offline === null && m.info?.online !== false : m.info?.online !== false;
        const state = !online ? "offline" : selected ? m.status : "up";
        const live = [...m.agents.values()];
        const total = selected ? live.length : (m.info?.agents ?? 0);
        const running = selected ? live.filter((a) => a.state === "running" || a.state === "waiting-approval").length : (m.info?.agents_running ?? 0);
        const waiting = [...m.approvals.values()].filter((a) => a.status === "pending").length;
        const tampered = m.info?.audit.status === "tampered";
        const counts = !online ? "offline" : agents ? `${running}/${total} running${waiting ? ` · ${waiting} waiting` : ""}` : selected ? `${waiting} waiting` : "";
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: `machine status-${state}${selected ? " selected" : ""}`,
              "data-machine": m.name,
              "data-online": String(online),
              "aria-pressed": String(selected),
              title: m.info?.this ? "The daemon serving this page" : m.info?.address ? `Joined from ${m.info.address}` : undefined,
              onclick: () => store.select(m.name),
            },
            h("span", { class: "dot", "aria-hidden": "true" }),
            h("span", { class: "machine-name" }, m.name),
            h("span", { class: "sr-only" }, ` (${online ? state : "offline"}${selected ? ", selected" : ""})`),
            tampered ? h("span", { class: "badge tampered", title: `Its audit log was tampered with: ${m.info?.audit.problem ?? "the hub's witness found its history rewritten"}` }, "audit tampered") : null,
            h("span", { class: "machine-counts" }, counts),
          ),
        );
      }),
    );
    const current = store.current();
    clear(
      banners,
      current?.offline
        ? h("div", { class: "banner offline", role: "alert", "data-machine": current.name }, h("strong", {}, `${current.name} is offline. `), current.offline)
        : current?.status === "down"
          ? h(
              "div",
              { class: "banner down", role: "alert", "data-machine": current.name },
              `${current.name}: stream down, reconnecting${current.retryInMs ? ` in ${Math.ceil(current.retryInMs / 1000)} s` : ""}. Data shown may be stale. `,
              h("button", { type: "button", onclick: () => current.stream?.retry() }, "Retry now"),
            )
          : null,
    );
    const pending = store.machines.reduce((n, m) => n + [...m.approvals.values()].filter((a) => a.status === "pending").length, 0);
    badge.hidden = pending === 0;
    badge.textContent = String(pending);
  };
  store.subscribe((what) => {
    if (what.has("machines") || what.has("approvals") || what.has("agents") || what.has("selected")) renderMachines();
  });
  store.onNewApproval = (approval) => {
    if (!approvals) return;
    navigator.vibrate?.([120, 60, 120]);
    if (document.hidden && Notification?.permission === "granted") {
      void navigator.serviceWorker?.ready.then((r) => r.showNotification(`${approval.agent_name} asks`, { body: approval.prompt, tag: approval.id }));
    }
  };

  const route = () => {
    const [, name = home, arg, arg2] = location.hash.split("/");
    const known = VIEWS.find((v) => v[0] === name);
    const view = (known ? name : home) as ViewName;
    const element = views[view];
    clear(content, element ?? notForRole(known![2], known![1]!));
    for (const link of nav.querySelectorAll("a")) {
      if (link.dataset.view === (view === "agent" ? "agents" : view)) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${VIEWS.find((l) => l[0] === view)?.[2] ?? ""} · Celistra`;
    if (view === "agents") agents?.update();
    if (view === "agent" && arg) detail?.show(decodeURIComponent(arg), arg2 ? decodeURIComponent(arg2) : null);
    if (view === "terminal") terminal?.shown();
    if (view === "approvals") approvals?.show(arg ?? null);
    if (view === "activity") void activity?.start();
    if (view === "history") void historyView?.load();
    if (view === "settings") void settings.load();
  };
  window.addEventListener("hashchange", route);
  renderMachines();
  // The views read the selected machine: shown once the machines list has answered.
  void store.start().then(route);

  // Benchmark hook (no secret, no network): adds rows of made-up machines to the agents table (never
  // to the sidebar) and measures the table's full update (filter, sort, render of the rows in view).
  (window as unknown as { __celistra: unknown }).__celistra = {
    store,
    agents,
    bench(machines: number, perMachine: number) {
      for (let m = 0; m < machines; m++) {
        const machine: Machine = newMachine(`bench-${m}`);
        for (let i = 0; i < perMachine; i++) {
          const agent = {
            id: `ag-b${m}x${i}`, name: `agent-${m}-${i}`, state: (["running", "exited", "failed", "waiting-approval", "backoff"] as const)[i % 5],
            pid: 1000 + i, restarts: i % 7, exit_code: i % 5 === 1 ? 0 : null, exit_signal: i % 5 === 2 ? "SIGKILL" : null,
            command: `python3 worker.py --shard ${i}`, workspace: "/srv", env_keys: [], auto_restart: true, source: "bench", run: 1,
            created_at_ms: Date.now() - i * 1000, started_at_ms: Date.now() - i * 1000, exited_at_ms: null, next_restart_at_ms: null,
            last_error: null, mode: "pty", settings: { stop_signal: "TERM", stop_timeout_ms: 10000, restart_max: 5, restart_window_secs: 60, backoff_initial_ms: 10, backoff_max_ms: 30000, backoff_reset_secs: 10, scrollback_kb: 64 },
            sandbox: { sandboxed: i % 10 !== 0, capabilities: [], user: "me" },
          } satisfies AgentInfo;
          machine.agents.set(agent.id, agent);
          machine.usage.set(agent.id, { cpu: (i % 13) * 7.5, memory: (i % 50) * 1048576 * 3, cpuUsec: 0, time: 0 });
        }
        store.bench.push(machine);
      }
      const t0 = performance.now();
      agents?.update();
      const full = performance.now() - t0;
      const rows = document.querySelectorAll(".agent-row").length;
      // One state change on each machine, as a stream would deliver it.
      const t1 = performance.now();
      for (const machine of store.bench) {
        const first = machine.agents.values().next().value;
        if (first) first.state = "stopped";
      }
      agents?.update();
      const change = performance.now() - t1;
      return { fullUpdateMs: full, changeUpdateMs: change, rowsInDom: rows, agents: machines * perMachine };
    },
  };
}

void boot();
