// History and logs of the selected machine: runs (when, how each ended, who stopped it), one
// agent's saved output, and a search across every agent's output. Read again when the selected
// machine changes; an offline machine is said to be offline.

import { api, apiText, isOffline, on } from "../api";
import { clear, clock, duration, h, toast } from "../dom";
import { store } from "../store";
import type { LogLine, RunRecord } from "../types";

export class HistoryView {
  readonly element: HTMLElement;
  private readonly runs: HTMLElement;
  private readonly output: HTMLElement;
  private readonly agent: HTMLInputElement;
  private readonly grep: HTMLInputElement;

  constructor() {
    this.runs = h("div", { class: "runs" });
    this.output = h("pre", { class: "log-output", tabindex: "0", "aria-label": "Output" });
    this.agent = h("input", { id: "history-agent", type: "search", placeholder: "agent id or name (empty: all)", autocapitalize: "off", autocomplete: "off" });
    this.grep = h("input", { id: "history-grep", type: "search", placeholder: "search output", autocapitalize: "off", autocomplete: "off" });
    const form = h(
      "form",
      { class: "filters", role: "search" },
      h("div", { class: "field inline" }, h("label", { for: "history-agent" }, "Agent"), this.agent),
      h("div", { class: "field inline" }, h("label", { for: "history-grep" }, "Search"), this.grep),
      h("button", { type: "submit", class: "primary" }, "Show"),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.load();
    });
    this.element = h(
      "section",
      { class: "view history-view", "aria-labelledby": "history-title" },
      h("div", { class: "toolbar" }, h("h1", { id: "history-title" }, "History & logs")),
      form,
      h("h2", {}, "Runs"),
      this.runs,
      h("h2", {}, "Output"),
      this.output,
    );
    store.subscribe((what) => {
      if (!what.has("selected")) return;
      this.agent.value = "";
      this.grep.value = "";
      clear(this.runs);
      this.output.textContent = "";
      if (this.element.isConnected) void this.load();
    });
  }

  async load(): Promise<void> {
    if (!store.selected) return;
    const agent = this.agent.value.trim();
    const grep = this.grep.value.trim();
    try {
      const runs = await api<RunRecord[]>("GET", on(`/v1/history?limit=200${agent ? `&agent=${encodeURIComponent(agent)}` : ""}`));
      clear(
        this.runs,
        runs.length
          ? h(
              "table",
              { class: "runs-table" },
              h("thead", {}, h("tr", {}, ["Agent", "Run", "Started", "Duration", "Ended", "By", "Output"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                {},
                runs.map((r) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, h("button", { type: "button", class: "link", onclick: () => { this.agent.value = r.agent_id; void this.load(); } }, r.name)),
                    h("td", {}, r.run),
                    h("td", {}, clock(r.started_at_ms)),
                    h("td", {}, duration((r.ended_at_ms ?? Date.now()) - r.started_at_ms)),
                    h(
                      "td",
                      {},
                      r.cause ? `${r.cause}${r.exit_signal ? ` (${r.exit_signal})` : r.exit_code !== null ? ` (${r.exit_code})` : ""}` : "running",
                      // How it ended, when classified as more than an ordinary exit (docs/agents.md).
                      r.exit_class && r.exit_class !== "other" ? h("span", { class: `badge exit-class class-${r.exit_class}`, "data-exit-class": r.exit_class }, r.exit_class) : null,
                    ),
                    h("td", {}, r.stopped_by ?? ""),
                    h("td", {}, `${Math.round(r.output_bytes / 1024)} KiB`),
                  ),
                ),
              ),
            )
          : h("p", { class: "empty" }, "No runs."),
      );
      let text: string;
      if (grep) {
        const path = on(`/v1/logs?grep=${encodeURIComponent(grep)}&limit=500&format=jsonl${agent ? `&agent=${encodeURIComponent(agent)}` : ""}`);
        const lines = (await apiText(path)).split("\n").filter(Boolean).map((l) => JSON.parse(l) as LogLine);
        text = lines.map((l) => `${new Date(l.time_ms).toISOString()} ${l.agent_id} ${l.text}`).join("\n") || "no match";
      } else if (agent) {
        text = await apiText(on(`/v1/agents/${encodeURIComponent(agent)}/logs?tail=500&format=text`));
      } else {
        text = "Choose an agent, or search every agent's output.";
      }
      this.output.textContent = text;
    } catch (e) {
      if (isOffline(e)) {
        clear(this.runs, h("p", { class: "empty machine-offline", role: "status" }, e.message));
        this.output.textContent = "";
        return;
      }
      toast((e as Error).message, "error");
    }
  }
}
