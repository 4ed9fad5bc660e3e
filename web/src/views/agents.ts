// The agents table: the selected machine's agents, filtered by text, sortable, virtualised (only
// the rows in view exist in the DOM), with row actions (for a viewer session: the terminal only,
// read-only). `waiting-approval` rows stand out.

import { api, ApiError, on } from "../api";
import { clear, duration, h, modal, toast } from "../dom";
import { can } from "../role";
import { store, type Machine } from "../store";
import type { Activity, AgentInfo, AgentState } from "../types";
import { ACTIVITY_ICON, PROMINENT, activityOf, activityTitle, passes, type AgentsFilter } from "../awareness";
import { openSettings, openSpawn } from "./spawn";

export const ROW_HEIGHT = 48;
const OVERSCAN = 6;

const STATE_ICON: Record<AgentState, string> = {
  starting: "◔",
  running: "●",
  "waiting-approval": "⚑",
  backoff: "↻",
  stopping: "◌",
  exited: "✓",
  failed: "✕",
  stopped: "■",
  "crashed-out": "⚠",
  waiting: "⧗",
};

export interface Row {
  machine: Machine;
  agent: AgentInfo;
}

type SortKey = "state" | "activity" | "name" | "id" | "machine" | "uptime" | "restarts" | "exit" | "cpu" | "memory" | "command";

const COLUMNS: { key: SortKey; label: string }[] = [
  { key: "state", label: "State" },
  { key: "activity", label: "Activity" },
  { key: "name", label: "Name" },
  { key: "id", label: "ID" },
  { key: "machine", label: "Machine" },
  { key: "uptime", label: "Uptime" },
  { key: "restarts", label: "Restarts" },
  { key: "exit", label: "Exit" },
  { key: "cpu", label: "CPU" },
  { key: "memory", label: "Memory" },
  { key: "command", label: "Command" },
];

export const filter: { text: string; view: AgentsFilter } = { text: "", view: "all" };

/// Most urgent first: waiting for a person, then for the provider, then the rest.
const ACTIVITY_RANK: (Activity | null)[] = ["needs-input", "waiting-approval", "waiting-limit", "model-error", "working", "idle", null];

export function matches(row: Row, text: string): boolean {
  if (!text) return true;
  const t = text.toLowerCase();
  return (
    row.agent.name.toLowerCase().includes(t) ||
    row.agent.id.includes(t) ||
    row.agent.command.toLowerCase().includes(t) ||
    row.machine.name.toLowerCase().includes(t)
  );
}

function uptimeMs(agent: AgentInfo, now: number): number {
  return agent.started_at_ms && !agent.exited_at_ms ? now - agent.started_at_ms : -1;
}

/// The uptime of a running agent; for an idle one with a schedule, when it next starts.
function uptimeText(agent: AgentInfo, now: number): string {
  const up = uptimeMs(agent, now);
  if (up >= 0) return duration(up);
  const next = agent.next_run_at_ms;
  return next ? `next in ${duration(next - now)}` : "—";
}

/// The last reading of a running agent; none once it has stopped (readings lag up to 3 s).
function usageOf(row: Row) {
  return row.agent.pid === null ? undefined : row.machine.usage.get(row.agent.id);
}

export function cpuText(row: Row): string {
  const cpu = usageOf(row)?.cpu;
  return cpu === null || cpu === undefined ? "—" : `${cpu < 10 ? cpu.toFixed(1) : Math.round(cpu)}%`;
}

export function memoryText(row: Row): string {
  const bytes = usageOf(row)?.memory;
  if (bytes === undefined) return "—";
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1048576).toFixed(1)} MiB`;
  return `${(bytes / 1073741824).toFixed(2)} GiB`;
}

function exitText(agent: AgentInfo): string {
  if (agent.exit_signal) return agent.exit_signal;
  if (agent.exit_code !== null && agent.exit_code !== undefined) return String(agent.exit_code);
  return "";
}

function compare(a: Row, b: Row, key: SortKey, now: number): number {
  switch (key) {
    case "state": {
      // Waiting for a person first, then trouble, then the rest.
      const rank = (s: AgentState) =>
        ["waiting-approval", "crashed-out", "failed", "backoff", "waiting", "starting", "running", "stopping", "exited", "stopped"].indexOf(s);
      return rank(a.agent.state) - rank(b.agent.state);
    }
    case "activity":
      return ACTIVITY_RANK.indexOf(activityOf(a.agent)) - ACTIVITY_RANK.indexOf(activityOf(b.agent));
    case "name":
      return a.agent.name.localeCompare(b.agent.name);
    case "id":
      return a.agent.id.localeCompare(b.agent.id);
    case "machine":
      return a.machine.name.localeCompare(b.machine.name);
    case "uptime":
      return uptimeMs(a.agent, now) - uptimeMs(b.agent, now);
    case "restarts":
      return a.agent.restarts - b.agent.restarts;
    case "exit":
      return exitText(a.agent).localeCompare(exitText(b.agent));
    case "cpu":
      return (a.machine.usage.get(a.agent.id)?.cpu ?? -1) - (b.machine.usage.get(b.agent.id)?.cpu ?? -1);
    case "memory":
      return (a.machine.usage.get(a.agent.id)?.memory ?? -1) - (b.machine.usage.get(b.agent.id)?.memory ?? -1);
    case "command":
      return a.agent.command.localeCompare(b.agent.command);
  }
}

export class AgentsView {
  readonly element: HTMLElement;
  private readonly viewport: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly count: HTMLElement;
  private readonly head: HTMLElement;
  private readonly table: HTMLElement;
  private gutter = -1;
  private rows: Row[] = [];
  private sort: { key: SortKey; dir: 1 | -1 } = { key: "state", dir: 1 };
  private rendered = new Map<string, HTMLElement>();
  private index = new Map<string, Row>();
  private frame = 0;
  /// Time the last full update (filter, sort, render) took, for the benchmark.
  lastUpdateMs = 0;

  constructor(private readonly openTerminal: (row: Row) => void) {
    this.count = h("span", { class: "count", "aria-live": "polite" });
    this.head = h("div", { class: "agents-head", role: "row" });
    this.spacer = h("div", { class: "vspacer", role: "presentation" });
    this.viewport = h(
      "div",
      { class: "vlist", role: "rowgroup", tabindex: "-1", "aria-label": "Agents" },
      this.spacer,
    );
    this.viewport.addEventListener("scroll", () => this.schedule());
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
    this.element = h(
      "section",
      { class: "view agents-view", "aria-labelledby": "agents-title" },
      h(
        "div",
        { class: "toolbar" },
        h("h1", { id: "agents-title" }, "Agents"),
        this.count,
        h("label", { for: "agents-view-filter", class: "sr-only" }, "Show"),
        h(
          "select",
          {
            id: "agents-view-filter",
            title: "All agents of the selected machine, or those of every machine of the fleet that need attention or wait on a usage limit",
            onchange: (e: Event) => {
              filter.view = (e.target as HTMLSelectElement).value as AgentsFilter;
              store.setFleetWide(filter.view !== "all");
              store.changed("filter");
            },
          },
          h("option", { value: "all" }, "All agents"),
          h("option", { value: "attention" }, "Needs attention (fleet)"),
          h("option", { value: "limit" }, "Waiting on a limit (fleet)"),
        ),
        can("operator") ? h("button", { class: "primary", type: "button", onclick: () => openSpawn(store.current()) }, "+ Spawn agent") : null,
      ),
      (this.table = h(
        "div",
        // One column template for the header and the rows (style.css); a read-only session's rows
        // have one action, so a narrower actions column.
        { class: can("operator") ? "agents-table" : "agents-table read-only", role: "table", "aria-label": "Agents", "aria-describedby": "agents-title" },
        this.head,
        this.viewport,
      )),
    );
    this.renderHead();
    store.subscribe((what) => {
      if (what.has("agents") || what.has("filter") || what.has("machines")) this.update();
      else if (what.has("usage")) this.refreshVisible();
    });
    setInterval(() => this.refreshVisible(), 1000);
  }

  private renderHead(): void {
    clear(
      this.head,
      COLUMNS.map((c) =>
        h(
          "div",
          {
            role: "columnheader",
            class: `col-${c.key}`,
            "aria-sort": this.sort.key === c.key ? (this.sort.dir === 1 ? "ascending" : "descending") : "none",
          },
          h(
            "button",
            {
              type: "button",
              class: "sort",
              onclick: () => {
                this.sort = { key: c.key, dir: this.sort.key === c.key ? (-this.sort.dir as 1 | -1) : 1 };
                this.renderHead();
                this.update();
              },
            },
            c.label,
            this.sort.key === c.key ? (this.sort.dir === 1 ? " ▲" : " ▼") : "",
          ),
        ),
      ),
      h("div", { role: "columnheader", class: "col-actions" }, h("span", { class: "sr-only" }, "Actions")),
    );
  }

  /// Recomputes the visible list (filter, sort) and renders the rows in view.
  update(): void {
    const started = performance.now();
    const now = Date.now();
    const rows: Row[] = [];
    const shown = store.shown();
    for (const machine of shown) {
      for (const agent of machine.agents.values()) {
        const row = { machine, agent };
        if (matches(row, filter.text) && passes(agent, filter.view)) rows.push(row);
      }
    }
    const { key, dir } = this.sort;
    rows.sort((a, b) => dir * compare(a, b, key, now) || a.agent.name.localeCompare(b.agent.name));
    this.rows = rows;
    const total = shown.reduce((n, m) => n + m.agents.size, 0);
    this.count.textContent = rows.length === total ? `${total}` : `${rows.length} of ${total}`;
    this.element.dataset.filter = filter.view;
    this.spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    this.index = new Map(rows.map((row) => [`${row.machine.id}/${row.agent.id}`, row]));
    // Rows are rebuilt from the new data; the focused control gets its focus back.
    const focused = this.viewport.contains(document.activeElement)
      ? document.activeElement?.getAttribute("aria-label")
      : null;
    this.rendered.forEach((el) => el.remove());
    this.rendered.clear();
    this.render();
    if (focused) {
      this.viewport.querySelector<HTMLElement>(`[aria-label="${CSS.escape(focused)}"]`)?.focus();
    }
    this.lastUpdateMs = performance.now() - started;
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  /// Ticks the uptime of the rows in view.
  private refreshVisible(): void {
    if (!this.element.isConnected) return;
    const now = Date.now();
    for (const [key, element] of this.rendered) {
      const row = this.index.get(key);
      const cell = element.querySelector(".col-uptime");
      if (row && cell) {
        cell.textContent = uptimeText(row.agent, now);
        element.querySelector(".col-cpu")!.textContent = cpuText(row);
        for (const badge of element.querySelectorAll(".activity-badge, .badge.attention")) badge.setAttribute("title", activityTitle(row.agent, now));
        element.querySelector(".col-memory")!.textContent = memoryText(row);
      }
    }
  }

  private render(): void {
    const top = this.viewport.scrollTop;
    // The header leaves room for the list's scrollbar (none on overlay scrollbars), so that its
    // columns stay over the rows'.
    const gutter = this.viewport.offsetWidth - this.viewport.clientWidth;
    if (gutter !== this.gutter) {
      this.gutter = gutter;
      this.table.style.setProperty("--gutter", `${gutter}px`);
    }
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const keep = new Set<string>();
    const now = Date.now();
    for (let i = first; i < last; i++) {
      const row = this.rows[i]!;
      const key = `${row.machine.id}/${row.agent.id}`;
      keep.add(key);
      let element = this.rendered.get(key);
      if (!element) {
        element = this.renderRow(row, now);
        this.rendered.set(key, element);
        this.spacer.append(element);
      }
      element.style.transform = `translateY(${i * ROW_HEIGHT}px)`;
      element.setAttribute("aria-rowindex", String(i + 2));
    }
    for (const [key, element] of this.rendered) {
      if (!keep.has(key)) {
        // Keep a row that holds the focus, so keyboard users do not lose their place.
        if (element.contains(document.activeElement)) continue;
        element.remove();
        this.rendered.delete(key);
      }
    }
  }

  private renderRow({ machine, agent }: Row, now: number): HTMLElement {
    const sandbox = agent.sandbox;
    const unsandboxed = sandbox && !sandbox.sandboxed;
    const active = ["starting", "running", "waiting-approval", "backoff", "stopping"].includes(agent.state);
    const prominent = agent.activity ? PROMINENT[agent.activity.activity] : undefined;
    return h(
      "div",
      {
        class: `agent-row state-${agent.state}`,
        role: "row",
        "data-agent": agent.id,
        "data-name": agent.name,
        "data-state": agent.state,
        "data-exit": exitText(agent),
        "data-activity": agent.activity?.activity ?? "",
      },
      h(
        "div",
        { role: "cell", class: "col-state" },
        h("span", { class: "state-badge", title: agent.state }, h("span", { "aria-hidden": "true" }, STATE_ICON[agent.state] ?? "?"), h("span", { class: "state-text" }, ` ${agent.state}`)),
      ),
      h("div", { role: "cell", class: "col-activity" }, activityBadge(agent, now)),
      h(
        "div",
        { role: "cell", class: "col-name" },
        h("a", { class: "agent-link", href: `#/agent/${encodeURIComponent(agent.id)}/${encodeURIComponent(machine.name)}`, title: `${agent.name}: details` }, h("strong", {}, agent.name)),
        prominent ? h("span", { class: `badge attention act-${agent.activity!.activity}`, title: activityTitle(agent, now) }, prominent) : null,
        unsandboxed
          ? h("span", { class: "badge warn", title: `unsandboxed: ${sandbox.unsandboxed_because ?? ""}` }, "⚠ unsandboxed")
          : sandbox && !prominent
            ? h("span", { class: "badge ok", title: ["sandboxed", ...sandbox.capabilities].join(" ") }, "sandboxed")
            : null,
      ),
      h("div", { role: "cell", class: "col-id mono" }, agent.id),
      h("div", { role: "cell", class: "col-machine" }, machine.name),
      h("div", { role: "cell", class: "col-uptime", title: agent.next_run_at_ms ? `next run ${new Date(agent.next_run_at_ms).toLocaleString()}` : undefined }, uptimeText(agent, now)),
      h("div", { role: "cell", class: "col-restarts" }, agent.restarts),
      h("div", { role: "cell", class: "col-exit mono" }, exitText(agent) || "—"),
      h("div", { role: "cell", class: "col-cpu" }, cpuText({ machine, agent })),
      h("div", { role: "cell", class: "col-memory" }, memoryText({ machine, agent })),
      h("div", { role: "cell", class: "col-command mono", title: agent.command }, agent.command),
      h(
        "div",
        { role: "cell", class: "col-actions" },
        h("button", { type: "button", class: "icon", "aria-label": `Terminal of ${agent.name}`, title: can("operator") ? "Terminal" : "Terminal (read-only)", onclick: () => this.openTerminal({ machine, agent }) }, "⌨"),
        can("operator")
          ? [
              active
                ? h("button", { type: "button", class: "icon", "aria-label": `Stop ${agent.name}`, title: "Stop", onclick: () => void act(machine, agent, "stop") }, "■")
                : h("button", { type: "button", class: "icon", "aria-label": `Start ${agent.name}`, title: "Start", onclick: () => void act(machine, agent, "start") }, "▶"),
              h("button", { type: "button", class: "icon wide-only", "aria-label": `Restart ${agent.name}`, title: "Restart", onclick: () => void act(machine, agent, "restart") }, "↻"),
              h("button", { type: "button", class: "icon danger", "aria-label": `Kill ${agent.name}`, title: "Kill…", "data-action": "kill", onclick: () => openKill(machine, agent) }, "✕"),
              h("button", { type: "button", class: "icon", "aria-label": `Settings of ${agent.name}`, title: "Settings…", onclick: () => void openSettings(machine, agent) }, "⚙"),
            ]
          : null,
      ),
    );
  }
}

/// The activity badge: what the agent is doing, its evidence (and a limit's reset) in the title.
export function activityBadge(agent: AgentInfo, now: number): HTMLElement {
  const activity = activityOf(agent);
  if (!activity) return h("span", { class: "activity-badge act-none", title: activityTitle(agent, now) }, "—");
  return h(
    "span",
    { class: `activity-badge act-${activity}`, title: activityTitle(agent, now), "data-activity": activity },
    h("span", { "aria-hidden": "true" }, ACTIVITY_ICON[activity]),
    h("span", { class: "activity-text" }, ` ${activity}`),
  );
}

async function act(machine: Machine, agent: AgentInfo, verb: "stop" | "start" | "restart"): Promise<void> {
  try {
    await api("POST", on(`/v1/agents/${agent.id}/${verb}`, machine.name));
    toast(`${agent.name}: ${verb} done`);
  } catch (e) {
    toast(`${agent.name}: ${(e as Error).message}`, "error");
  }
}

const SIGNALS: [string, string][] = [
  ["HUP", "HUP: hang up its terminal"],
  ["INT", "INT: interrupt (Ctrl-C)"],
  ["TERM", "TERM: ask it to end"],
  ["QUIT", "QUIT: quit with a core dump"],
  ["KILL", "KILL: end it at once"],
];

/// The kill dialog: pick a signal, confirm.
export function openKill(machine: Machine, agent: AgentInfo): void {
  const select = h(
    "select",
    { id: "kill-signal", name: "signal" },
    SIGNALS.map(([value, label]) => h("option", { value, selected: value === "TERM" }, label)),
  );
  const error = h("p", { class: "field-error", role: "alert" });
  const confirm = h("button", { type: "button", class: "danger", "data-action": "confirm-kill" }, "Send signal");
  const cancel = h("button", { type: "button" }, "Cancel");
  const body = h(
    "div",
    {},
    h("p", {}, "Send a signal to ", h("strong", {}, agent.name), ` (${agent.id}). A killed run is not restarted.`),
    h("label", { for: "kill-signal" }, "Signal"),
    select,
    error,
  );
  const dialog = modal(`Kill ${agent.name}?`, body, [cancel, confirm]);
  cancel.addEventListener("click", () => dialog.close());
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      await api("POST", on(`/v1/agents/${agent.id}/kill`, machine.name), { signal: select.value });
      toast(`${agent.name}: sent SIG${select.value}`);
      dialog.close();
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : String(e);
      confirm.disabled = false;
    }
  });
  select.focus();
}
