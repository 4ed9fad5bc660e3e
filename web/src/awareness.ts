// What an AI agent is doing and why, in words (docs/agents.md): its activity and the evidence for
// it, a usage limit's reset, how its last run ended. Shared by the agents table, the agent's detail
// view and the fleet-wide filters.

import { clock, duration } from "./dom";
import type { Activity, AgentInfo, ExitClassification, LimitWait } from "./types";

export const ACTIVITY_ICON: Record<Activity, string> = {
  working: "▶",
  "needs-input": "?",
  "waiting-approval": "⚑",
  "waiting-limit": "◷",
  "model-error": "⚠",
  idle: "◦",
};

/// The activities that wait for a person or for the provider: "needs attention".
export const ATTENTION: ReadonlySet<Activity> = new Set<Activity>(["needs-input", "waiting-approval", "waiting-limit", "model-error"]);

/// The activities also shown next to the agent's name, in short words.
export const PROMINENT: Partial<Record<Activity, string>> = { "needs-input": "needs input", "waiting-limit": "limit", "model-error": "model error" };

/// The fleet-wide filters of the agents table.
export type AgentsFilter = "all" | "attention" | "limit";

export function activityOf(agent: AgentInfo): Activity | null {
  return agent.activity?.activity ?? null;
}

export function passes(agent: AgentInfo, view: AgentsFilter): boolean {
  const activity = activityOf(agent);
  switch (view) {
    case "all":
      return true;
    case "attention":
      return activity !== null && ATTENTION.has(activity);
    case "limit":
      return activity === "waiting-limit" || !!agent.limit;
  }
}

/// "in 2h 5m" / "2h 5m ago".
export function relative(at: number, now: number): string {
  return at >= now ? `in ${duration(at - now)}` : `${duration(now - at)} ago`;
}

/// A usage limit's reset: "resets 14:05:00 (in 2h 5m)", or that its time is unknown.
export function resetText(limit: LimitWait, now: number): string {
  if (limit.reset_at_ms === null || limit.reset_at_ms === undefined) return `reset unknown; tries again ${clock(limit.resume_at_ms)} (${relative(limit.resume_at_ms, now)})`;
  return `resets ${clock(limit.reset_at_ms)} (${relative(limit.reset_at_ms, now)})`;
}

/// The evidence in one line: the signal, what it said, how long ago.
export function evidenceText(agent: AgentInfo, now: number): string {
  const info = agent.activity;
  if (!info) return "no activity signal yet";
  const e = info.evidence;
  return `${info.activity}: ${e.signal}${e.said ? ` said "${e.said}"` : ""}, ${relative(e.at_ms, now)}`;
}

/// The badge's title: the evidence, and for a usage limit its reset.
export function activityTitle(agent: AgentInfo, now: number): string {
  const lines = [evidenceText(agent, now)];
  if (agent.limit) lines.push(resetText(agent.limit, now));
  else if (agent.activity?.activity === "waiting-limit") lines.push("reset unknown");
  return lines.join("\n");
}

/// How a run ended, when it was classified as something other than an ordinary exit.
export function exitClassText(c: ExitClassification): string {
  const retry = c.retry_after_ms ? `, retry after ${duration(c.retry_after_ms)}` : "";
  return `${c.class} (from ${c.source}${retry}): ${c.said}`;
}
