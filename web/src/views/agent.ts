// One agent in detail (`#/agent/<id>[/<machine>]`): what kind of AI agent it is, its CPU, memory
// and restarts, its activity with the full evidence, how its last run ended, the usage limit it
// waits on, its model errors, its schedules with their next times, its worktree and the secrets it
// gets (names only). Live: it is drawn again whenever the store's agents change (the selected
// machine's stream), and ticks.

import { api, on } from "../api";
import { clear, clock, duration, h } from "../dom";
import { store, type Machine } from "../store";
import type { AgentInfo, ProbeStatus } from "../types";
import { activityBadge, cpuText, memoryText } from "./agents";
import { relative, resetText } from "../awareness";

export class AgentDetailView {
  readonly element: HTMLElement;
  private readonly body: HTMLElement;
  private readonly title: HTMLElement;
  private id = "";
  private machine = "";

  constructor(private readonly openTerminal: (machine: Machine, agent: AgentInfo) => void) {
    this.title = h("h1", { id: "agent-detail-title" }, "Agent");
    this.body = h("div", { class: "agent-detail" });
    this.element = h(
      "section",
      { class: "view agent-detail-view", "aria-labelledby": "agent-detail-title" },
      h("div", { class: "toolbar" }, h("a", { href: "#/agents", class: "back" }, "← Agents"), this.title),
      this.body,
    );
    store.subscribe((what) => {
      if (what.has("agents") || what.has("selected")) this.render();
    });
    // The relative times tick; not while the reader selects text in it.
    setInterval(() => {
      const selection = document.getSelection();
      if (!selection || selection.isCollapsed || !this.body.contains(selection.anchorNode)) this.render();
    }, 1000);
  }

  /// Shows agent `id` of `machine` (default: the selected one), selecting that machine first.
  show(id: string, machine: string | null): void {
    this.id = id;
    this.machine = machine ?? store.selected;
    if (machine && store.machine(machine) && store.selected !== machine) store.select(machine);
    this.render();
    if (!machine) void this.find(id);
  }

  /// A link without its machine (a push notice's): the machine that knows the agent is selected.
  private async find(id: string): Promise<void> {
    if (store.current()?.agents.has(id)) return;
    for (const m of store.machines) {
      if (m.info?.online === false) continue;
      try {
        await api<AgentInfo>("GET", on(`/v1/agents/${encodeURIComponent(id)}`, m.name));
      } catch {
        continue;
      }
      if (this.id !== id) return;
      this.machine = m.name;
      if (store.selected !== m.name) store.select(m.name);
      this.render();
      return;
    }
  }

  private render(): void {
    if (!this.element.isConnected || !this.id) return;
    const machine = store.machine(this.machine) ?? store.current();
    const agent = machine?.agents.get(this.id) ?? [...(machine?.agents.values() ?? [])].find((a) => a.name === this.id);
    if (!machine || !agent) {
      this.title.textContent = this.id;
      clear(this.body, h("p", { class: "empty", role: "status" }, machine?.offline ?? `No agent ${this.id} on ${machine?.name ?? "this machine"} (yet).`));
      return;
    }
    const now = Date.now();
    const refocus = this.body.contains(document.activeElement) ? document.activeElement?.getAttribute("data-action") : null;
    this.title.textContent = agent.name;
    document.title = `${agent.name} · Celistra`;
    const row = (label: string, ...value: (Node | string | null)[]) => [h("dt", {}, label), h("dd", {}, ...value)];
    const when = (ms: number | null | undefined) => (ms ? `${clock(ms)} (${relative(ms, now)})` : "—");
    const info = agent.activity;
    const c = agent.exit_class;
    const limit = agent.limit;
    const schedule = agent.schedule;
    const cron = agent.restart_cron;
    clear(
      this.body,
      h(
        "div",
        { class: "toolbar" },
        h("span", { class: `state-badge state-${agent.state}` }, agent.state),
        activityBadge(agent, now),
        h("button", { type: "button", "data-action": "terminal", onclick: () => this.openTerminal(machine, agent) }, "⌨ Terminal"),
      ),
      h(
        "dl",
        { class: "facts", "data-agent": agent.id },
        row("ID", h("code", {}, agent.id)),
        row("Machine", machine.name),
        row("Kind", h("span", { "data-field": "kind" }, agent.kind ?? "generic")),
        row("Command", h("code", {}, agent.command)),
        row("Workspace", h("code", {}, agent.workspace)),
        row("Worktree", agent.worktree ? h("code", { "data-field": "worktree" }, agent.worktree) : "—"),
        row("Secrets", agent.env_keys.length ? h("span", { "data-field": "secrets" }, agent.env_keys.join(", ")) : "none"),
        row("CPU", h("span", { "data-field": "cpu" }, cpuText({ machine, agent }))),
        row("Memory", h("span", { "data-field": "memory" }, memoryText({ machine, agent }))),
        row("Restarts", String(agent.restarts)),
      ),
      healthFacts(agent, row, when),
      h("h2", {}, "Activity"),
      info
        ? h(
            "dl",
            { class: "facts", "data-section": "activity" },
            row("Activity", h("strong", { "data-field": "activity" }, info.activity), ` since ${when(info.since_ms)}`),
            row("Signal", h("span", { "data-field": "signal" }, info.evidence.signal), ` (${info.evidence.tier} tier)`),
            row("Said", h("q", { "data-field": "said" }, info.evidence.said || "—")),
            row("When", when(info.evidence.at_ms)),
          )
        : h("p", { class: "empty" }, "No activity signal yet."),
      limit
        ? [
            h("h2", {}, "Waiting on a usage limit"),
            h(
              "dl",
              { class: "facts limit", "data-section": "limit" },
              row("Reset", h("span", { "data-field": "reset" }, resetText(limit, now))),
              row("Resumes", when(limit.resume_at_ms), ` by ${limit.action === "input" ? "typing its limit input" : "restarting it"}`),
              row("Said", h("q", {}, limit.said)),
            ),
          ]
        : null,
      h("h2", {}, "Last exit"),
      h(
        "dl",
        { class: "facts", "data-section": "exit" },
        row("Exit", agent.exit_signal ?? (agent.exit_code !== null && agent.exit_code !== undefined ? `code ${agent.exit_code}` : "—"), agent.exited_at_ms ? ` at ${when(agent.exited_at_ms)}` : ""),
        row("Class", c ? h("span", { "data-field": "exit-class" }, c.class) : "—", c ? ` (from ${c.source}, ${relative(c.at_ms, now)})` : ""),
        c ? row("Line", h("code", { "data-field": "exit-line" }, c.said)) : null,
        c?.retry_after_ms ? row("Retry after", duration(c.retry_after_ms)) : null,
        c?.reset_at_ms ? row("Limit resets", when(c.reset_at_ms)) : null,
        row("Model errors", `${agent.model_errors ?? 0} restarts after model errors in the current window`),
        agent.last_error ? row("Last error", agent.last_error) : null,
      ),
      h("h2", {}, "Schedule"),
      h(
        "dl",
        { class: "facts", "data-section": "schedule" },
        row(
          "Schedule",
          schedule
            ? h("span", { "data-field": "schedule" }, h("code", {}, schedule.cron), ` ${schedule.time_zone ?? "machine's zone"}, overlap ${schedule.overlap ?? "skip"}, missed ${schedule.missed ?? "skip"}`)
            : "—",
        ),
        row("Next run", when(agent.next_run_at_ms)),
        row("Restart cron", cron ? h("span", {}, h("code", {}, cron.cron), ` ${cron.time_zone ?? "machine's zone"}`) : "—"),
        row("Next restart", when(agent.next_restart_cron_at_ms)),
      ),
    );
    if (refocus) this.body.querySelector<HTMLElement>(`[data-action="${refocus}"]`)?.focus();
  }
}

type FactRow = (label: string, ...value: (Node | string | null)[]) => Node[];

/** Readiness, probe results and what the agent waits for; nothing for an agent without them. */
function healthFacts(agent: AgentInfo, row: FactRow, when: (ms: number) => string): Node[] | null {
  const probe = (status: ProbeStatus | null | undefined) =>
    status ? `${status.ok ? "ok" : `failing ×${status.failures}`}: ${status.message} at ${when(status.at_ms)}` : "not checked yet";
  const rows: Node[] = [];
  if (agent.waiting_for) rows.push(...row("Waiting for", h("span", { "data-field": "waiting-for" }, agent.waiting_for)));
  if (agent.ready !== null && agent.ready !== undefined) {
    rows.push(...row("Ready", h("strong", { "data-field": "ready" }, agent.ready ? "yes" : "no")));
    rows.push(...row("Readiness", probe(agent.readiness)));
  }
  if (agent.liveness) rows.push(...row("Liveness", probe(agent.liveness)));
  return rows.length ? [h("h2", {}, "Health"), h("dl", { class: "facts", "data-section": "health" }, ...rows)] : null;
}
