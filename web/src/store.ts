// The dashboard's state: machines (this daemon today; the model holds several for the fleet), each
// with its agents and approvals, kept live by its own event stream. Views subscribe to changes.

import { api, ApiError } from "./api";
import { toast } from "./dom";
import { can } from "./role";
import { Stream, type StreamStatus } from "./stream";
import type { AgentInfo, Approval, Health, ServerEvent } from "./types";

export interface Machine {
  /// Stable id (the daemon's machine_id); `local` until /v1/health answers.
  id: string;
  name: string;
  /// Prefix of this machine's API paths: "" for the daemon serving the page.
  base: string;
  status: StreamStatus;
  retryInMs?: number;
  downSince?: number;
  health?: Health;
  agents: Map<string, AgentInfo>;
  approvals: Map<string, Approval>;
  /// CPU load (percent of one core, null until two readings) and memory, by agent id.
  usage: Map<string, { cpu: number | null; memory: number; cpuUsec: number; time: number }>;
  /// True for machines that exist only in the page (benchmarks).
  synthetic?: boolean;
  stream?: Stream;
}

type Listener = (what: Set<string>) => void;

export class Store {
  machines: Machine[] = [];
  private listeners = new Set<Listener>();
  private pending = new Set<string>();
  private scheduled = false;
  /// Called with each approval that arrives while the page is open.
  onNewApproval: ((approval: Approval, machine: Machine) => void) | null = null;

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /// Batches change notifications to one per animation frame.
  changed(what: string): void {
    this.pending.add(what);
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const what = this.pending;
      this.pending = new Set();
      for (const listener of this.listeners) listener(what);
    });
  }

  addLocal(): Machine {
    const machine: Machine = {
      id: "local",
      name: location.hostname,
      base: "",
      status: "connecting",
      agents: new Map(),
      approvals: new Map(),
      usage: new Map(),
    };
    this.machines.push(machine);
    this.connect(machine);
    setInterval(() => void this.pollUsage(machine), 3000);
    return machine;
  }

  machine(id: string): Machine | undefined {
    return this.machines.find((m) => m.id === id);
  }

  private connect(machine: Machine): void {
    machine.stream = new Stream({
      url: (last) => `${machine.base}/v1/events${last ? `?after=${encodeURIComponent(last)}` : ""}`,
      events: [
        "agent_spawned", "agent_state", "agent_exited", "agent_restarted", "agent_backoff",
        "agent_crashed_out", "agent_spawn_failed", "agent_renamed", "agent_updated",
        "agent_signalled", "agent_removed", "agent_unsandboxed", "approval_requested",
        "approval_decided", "resync", "daemon_started",
      ],
      onOpen: () => void this.reload(machine),
      onStatus: (status, retryInMs) => {
        if (status === "down" && machine.status !== "down") machine.downSince = Date.now();
        if (status === "up") machine.downSince = undefined;
        machine.status = status;
        machine.retryInMs = retryInMs;
        this.changed("machines");
      },
      onEvent: (_type, data) => this.apply(machine, data),
    });
    // Show what the daemon has even while its event stream cannot connect (a proxy that drops
    // SSE, say); the banner says the view may be stale, and every reconnection reads it again.
    void this.reload(machine);
  }

  /// Re-reads everything (at every (re)connection: events missed while down are not replayed
  /// beyond the daemon's backlog, so the lists are read again).
  async reload(machine: Machine): Promise<void> {
    // Only the lists this session's role may read: an approver sees no agents, a viewer no
    // approvals (the daemon would refuse them).
    const none = <T>(): Promise<T[] | null> => Promise.resolve(null);
    try {
      const [health, agents, approvals] = await Promise.all([
        api<Health>("GET", `${machine.base}/v1/health`),
        can("viewer") ? refusedAsNull(api<AgentInfo[]>("GET", `${machine.base}/v1/agents`)) : none<AgentInfo>(),
        can("approver") ? refusedAsNull(api<Approval[]>("GET", `${machine.base}/v1/approvals`)) : none<Approval>(),
      ]);
      machine.health = health;
      machine.name = health.hostname;
      machine.id = health.machine_id;
      if (agents) machine.agents = new Map(agents.map((a) => [a.id, a]));
      if (approvals) machine.approvals = new Map(approvals.slice(0, 200).map((a) => [a.id, a]));
      this.changed("machines");
      this.changed("agents");
      this.changed("approvals");
    } catch {
      /* the stream's status says the machine is down */
    }
  }

  /// Reads CPU time and memory; the load is the CPU time used between two readings.
  async pollUsage(machine: Machine): Promise<void> {
    if (machine.status !== "up" || document.hidden || !can("viewer")) return;
    try {
      const readings = await api<{ agent_id: string; cpu_usec: number; memory_bytes: number; time_ms: number }[]>("GET", `${machine.base}/v1/usage`);
      const next = new Map<string, { cpu: number | null; memory: number; cpuUsec: number; time: number }>();
      for (const r of readings) {
        const before = machine.usage.get(r.agent_id);
        const elapsed = before ? r.time_ms - before.time : 0;
        const cpu = before && elapsed > 0 ? Math.max(0, ((r.cpu_usec - before.cpuUsec) / 1000 / elapsed) * 100) : null;
        next.set(r.agent_id, { cpu, memory: r.memory_bytes, cpuUsec: r.cpu_usec, time: r.time_ms });
      }
      machine.usage = next;
      this.changed("usage");
    } catch {
      /* the stream's status says the machine is down */
    }
  }

  private async refreshAgent(machine: Machine, id: string): Promise<void> {
    if (!can("viewer")) return;
    try {
      const agent = await api<AgentInfo>("GET", `${machine.base}/v1/agents/${encodeURIComponent(id)}`);
      machine.agents.set(agent.id, agent);
    } catch {
      machine.agents.delete(id);
    }
    this.changed("agents");
  }

  /** An event of the stream; its body carries its `type` (the SSE event name) and is typed by it. */
  private apply(machine: Machine, data: string): void {
    let event: ServerEvent;
    try {
      event = JSON.parse(data) as ServerEvent;
    } catch {
      return;
    }
    const agentId = "agent_id" in event && typeof event.agent_id === "string" ? event.agent_id : null;
    switch (event.type) {
      case "agent_spawned":
        machine.agents.set(event.agent.id, event.agent);
        this.changed("agents");
        break;
      case "agent_state": {
        const agent = machine.agents.get(event.agent_id);
        if (agent) {
          agent.state = event.state;
          agent.pid = event.pid ?? null;
          this.changed("agents");
        }
        void this.refreshAgent(machine, event.agent_id);
        break;
      }
      case "agent_removed":
        machine.agents.delete(event.agent_id);
        this.changed("agents");
        break;
      case "approval_requested":
      case "approval_decided": {
        const approval = event.approval;
        const isNew = event.type === "approval_requested" && !machine.approvals.has(approval.id);
        machine.approvals.set(approval.id, approval);
        if (isNew) this.onNewApproval?.(approval, machine);
        this.changed("approvals");
        break;
      }
      case "resync":
      case "daemon_started":
        void this.reload(machine);
        break;
      default:
        if (agentId) void this.refreshAgent(machine, agentId);
    }
  }
}

/// A list the daemon refused to this role (it changed, or the page misjudged it): said once, in
/// words, and the rest of the page goes on.
async function refusedAsNull<T>(request: Promise<T>): Promise<T | null> {
  try {
    return await request;
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "role_required") throw e;
    if (!refusalShown.has(e.message)) {
      refusalShown.add(e.message);
      toast(e.message, "error");
    }
    return null;
  }
}

const refusalShown = new Set<string>();

export const store = new Store();
