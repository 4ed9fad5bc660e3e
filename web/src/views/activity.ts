// Activity: the selected machine's live audit tail (`/v1/audit/tail`, SSE, resumed from the last
// entry seen) with filters by actor, action and text. Selecting another machine closes the tail
// and opens that machine's; an offline machine is said to be offline.

import { api, isOffline, on } from "../api";
import { clear, clock, h } from "../dom";
import { store } from "../store";
import { Stream } from "../stream";
import type { AuditEntry } from "../types";

const KEEP = 500;

export class ActivityView {
  readonly element: HTMLElement;
  private readonly list: HTMLElement;
  private readonly banner: HTMLElement;
  private entries: AuditEntry[] = [];
  private stream: Stream | null = null;
  private starting = false;
  private readonly filters = { actor: "", action: "", text: "" };

  constructor() {
    this.list = h("ol", { class: "activity", "aria-label": "Audit entries, newest first", "aria-live": "polite", "aria-relevant": "additions" });
    this.banner = h("div", { class: "banner", hidden: true, role: "status" });
    const input = (key: keyof typeof this.filters, label: string, placeholder: string) => {
      const id = `activity-${key}`;
      const el = h("input", { id, type: "search", placeholder, autocomplete: "off", autocapitalize: "off" });
      el.addEventListener("input", () => {
        this.filters[key] = el.value.toLowerCase();
        this.render();
      });
      return h("div", { class: "field inline" }, h("label", { for: id }, label), el);
    };
    this.element = h(
      "section",
      { class: "view activity-view", "aria-labelledby": "activity-title" },
      h("div", { class: "toolbar" }, h("h1", { id: "activity-title" }, "Activity")),
      this.banner,
      h("div", { class: "filters" }, input("actor", "Actor", "session:…"), input("action", "Action", "agent_spawned"), input("text", "Text", "anything")),
      this.list,
    );
    store.subscribe((what) => {
      if (!what.has("selected")) return;
      this.stream?.close();
      this.stream = null;
      this.entries = [];
      this.render();
      if (this.element.isConnected) void this.start();
    });
  }

  /// Starts the tail on first display.
  async start(): Promise<void> {
    if (this.stream || this.starting) return;
    const machine = store.selected;
    if (!machine) return;
    this.starting = true;
    let after = 0;
    let offline: string | null = null;
    try {
      const page = await api<{ entries: AuditEntry[] }>("GET", on("/v1/audit?limit=100", machine));
      this.entries = page.entries.slice().reverse();
      after = this.entries.at(-1)?.seq ?? 0;
      this.render();
    } catch (e) {
      /* the stream reports it */
      if (isOffline(e)) offline = e.message;
    } finally {
      this.starting = false;
    }
    if (this.stream) return;
    if (machine !== store.selected) {
      // Another machine was selected meanwhile: start on that one instead.
      this.entries = [];
      this.render();
      if (this.element.isConnected) void this.start();
      return;
    }
    this.banner.hidden = offline === null;
    this.banner.textContent = offline ?? "";
    this.stream = new Stream({
      url: (last) => on(`/v1/audit/tail?after=${last ?? after}`, machine),
      events: ["audit"],
      onStatus: (status, retry) => {
        const offline = store.current()?.offline;
        this.banner.hidden = status !== "down";
        this.banner.textContent = status !== "down" ? "" : offline ? offline : `Activity stream down; reconnecting in ${Math.ceil((retry ?? 0) / 1000)} s`;
      },
      onEvent: (_type, data) => {
        try {
          const entry = JSON.parse(data) as AuditEntry;
          if (this.entries.length && entry.seq <= this.entries.at(-1)!.seq) return;
          this.entries.push(entry);
          if (this.entries.length > KEEP) this.entries.splice(0, this.entries.length - KEEP);
          if (this.visible(entry)) this.list.prepend(this.item(entry));
        } catch {
          /* skip */
        }
      },
    });
  }

  private visible(e: AuditEntry): boolean {
    const f = this.filters;
    return (
      (!f.actor || e.actor.toLowerCase().includes(f.actor)) &&
      (!f.action || e.action.toLowerCase().includes(f.action)) &&
      (!f.text || JSON.stringify(e).toLowerCase().includes(f.text))
    );
  }

  private item(e: AuditEntry): HTMLElement {
    return h(
      "li",
      { class: "entry", "data-action": e.action, "data-actor": e.actor },
      h("span", { class: "time" }, clock(e.time_ms)),
      h("span", { class: "action" }, e.action),
      h("span", { class: "actor" }, e.actor),
      h("span", { class: "target mono" }, e.target),
      h("details", {}, h("summary", {}, `#${e.seq}`), h("pre", {}, JSON.stringify(e.body, null, 2))),
    );
  }

  private render(): void {
    clear(this.list, this.entries.filter((e) => this.visible(e)).reverse().map((e) => this.item(e)));
  }
}
