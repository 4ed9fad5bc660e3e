// The approvals inbox: pending requests with agent, prompt, detail and a countdown; approve by
// press-and-hold (a deliberate gesture), deny with an optional reason; decided ones show who
// decided, how and when. `#/approvals/<id>` shows one request (the page a notification opens).

import { api, on } from "../api";
import { clear, clock, duration, h, toast } from "../dom";
import { holdButton } from "../hold";
import { store, type Machine } from "../store";
import type { Approval } from "../types";

export class ApprovalsView {
  readonly element: HTMLElement;
  private readonly list: HTMLElement;
  private only: string | null = null;

  constructor() {
    this.list = h("div", { class: "approvals" });
    this.element = h(
      "section",
      { class: "view approvals-view", "aria-labelledby": "approvals-title" },
      h("div", { class: "toolbar" }, h("h1", { id: "approvals-title" }, "Approvals")),
      this.list,
    );
    store.subscribe((what) => {
      if (what.has("approvals")) this.render();
    });
    setInterval(() => this.tick(), 1000);
  }

  show(only: string | null): void {
    this.only = only;
    this.render();
  }

  private entries(): { machine: Machine; approval: Approval }[] {
    const all: { machine: Machine; approval: Approval }[] = [];
    for (const machine of store.machines) {
      for (const approval of machine.approvals.values()) {
        if (!this.only || approval.id === this.only) all.push({ machine, approval });
      }
    }
    return all.sort((a, b) => {
      const pa = a.approval.status === "pending" ? 0 : 1;
      const pb = b.approval.status === "pending" ? 0 : 1;
      return pa - pb || b.approval.created_at_ms - a.approval.created_at_ms;
    });
  }

  render(): void {
    const entries = this.entries();
    const pending = entries.filter((e) => e.approval.status === "pending");
    const decided = entries.filter((e) => e.approval.status !== "pending").slice(0, 50);
    clear(
      this.list,
      this.only ? h("p", {}, h("a", { href: "#/approvals" }, "← All requests")) : null,
      h("h2", {}, `Pending (${pending.length})`),
      pending.length ? h("ul", { class: "cards", "aria-label": "Pending requests" }, pending.map((e) => this.card(e.machine, e.approval))) : h("p", { class: "empty" }, "Nothing is waiting for you."),
      decided.length ? h("h2", {}, "Decided") : null,
      decided.length ? h("ul", { class: "cards decided", "aria-label": "Decided requests" }, decided.map((e) => this.card(e.machine, e.approval))) : null,
    );
  }

  private tick(): void {
    for (const el of this.list.querySelectorAll<HTMLElement>("[data-expires]")) {
      const left = Number(el.dataset.expires) - Date.now();
      el.textContent = left > 0 ? `${duration(left)} left` : "expiring…";
    }
  }

  private card(machine: Machine, approval: Approval): HTMLElement {
    const pending = approval.status === "pending";
    const body: (HTMLElement | null)[] = [
      h("p", { class: "meta" }, h("strong", {}, approval.agent_name), ` · ${approval.agent_id} · ${machine.name} · asked ${clock(approval.created_at_ms)} via ${approval.origin}`),
      h("p", { class: "prompt" }, approval.prompt),
      approval.detail ? h("pre", { class: "detail" }, approval.detail) : null,
    ];
    if (pending) {
      const left = approval.expires_at_ms - Date.now();
      const reason = h("input", { type: "text", id: `reason-${approval.id}`, placeholder: "optional", autocomplete: "off" });
      const approve = h("button", { type: "button", class: "hold primary", "data-action": "approve", "aria-label": `Approve: press and hold for one second` }, h("span", { class: "fill", "aria-hidden": "true" }), h("span", { class: "label" }, "Hold to approve"));
      const deny = h("button", { type: "button", class: "danger", "data-action": "deny" }, "Deny");
      const decide = async (verdict: "approve" | "deny") => {
        approve.disabled = deny.disabled = true;
        try {
          const decided = await api<Approval>("POST", on(`/v1/approvals/${approval.id}/${verdict}`, machine.name), reason.value ? { reason: reason.value } : {});
          machine.approvals.set(decided.id, decided);
          store.changed("approvals");
          toast(`${verdict === "approve" ? "Approved" : "Denied"}: ${approval.prompt}`);
        } catch (e) {
          toast((e as Error).message, "error");
          approve.disabled = deny.disabled = false;
        }
      };
      holdButton(approve, () => void decide("approve"));
      deny.addEventListener("click", () => void decide("deny"));
      body.push(
        h("p", { class: "countdown", "data-expires": String(approval.expires_at_ms) }, left > 0 ? `${duration(left)} left` : "expiring…"),
        h("div", { class: "field" }, h("label", { for: `reason-${approval.id}` }, "Reason"), reason),
        h("div", { class: "actions" }, deny, approve),
      );
    } else {
      const who = approval.status === "expired" ? "nobody decided in time" : `by ${approval.decided_by ?? "?"} via ${approval.decided_via ?? "?"}`;
      body.push(
        h(
          "p",
          { class: `decision ${approval.status}` },
          `${approval.status} ${who}${approval.decided_at_ms ? ` at ${clock(approval.decided_at_ms)}` : ""}${approval.reason ? `: ${approval.reason}` : ""}`,
        ),
      );
    }
    return h("li", { class: `card approval ${approval.status}`, "data-approval": approval.id }, body);
  }
}
