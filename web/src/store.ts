// The dashboard's state: the fleet's machines (`GET /v1/machines`, polled: online state, agent
// counts, what witnessing each one's audit log found), and the selected machine's agents and
// approvals, kept live by its event stream. Only the selected machine is read and streamed, through
// `on()` (`/v1/machines/{machine}/…`); selecting another closes its stream and opens the new one.
// Views subscribe to changes; `selected` says the machine changed.

import { api, ApiError, isOffline, on, setMachine } from "./api";
import { toast } from "./dom";
import { can } from "./role";
import { Stream, type StreamStatus } from "./stream";
import type { AgentInfo, Approval, Health, MachineInfo, ServerEvent } from "./types";

export interface Machine {
  /// Its name in the fleet (`--machine-name`): the key, and what its API paths address.
  id: string;
  name: string;
  /// What `GET /v1/machines` says of it (null for the benchmark's rows).
  info: MachineInfo | null;
  status: StreamStatus;
  /// Why it cannot be reached (the hub's `503 machine_offline` message), while it cannot.
  offline: string | null;
  retryInMs?: number;
  downSince?: number;
  health?: Health;
  agents: Map<string, AgentInfo>;
  approvals: Map<string, Approval>;
  /// CPU load (percent of one core, null until two readings) and memory, by agent id.
  usage: Map<string, { cpu: number | null; memory: number; cpuUsec: number; time: number }>;
  stream?: Stream;
}

/// Where the selected machine is remembered.
const REMEMBERED = "celistra.machine";
/// How often the machines list (online state, counts) is read again.
const MACHINES_POLL_MS = 3000;

export function newMachine(name: string, info: MachineInfo | null = null): Machine {
  return { id: name, name, info, status: "connecting", offline: null, agents: new Map(), approvals: new Map(), usage: new Map() };
}

type Listener = (what: Set<string>) => void;

export class Store {
  machines: Machine[] = [];
  /// The selected machine's name ("" until the machines list answers).
  selected = "";
  /// Rows the benchmark hook adds to the agents table: never listed as machines, never read.
  bench: Machine[] = [];
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

  /// Reads the machines, selects the remembered one (else the daemon serving the page) and keeps
  /// the list fresh.
  async start(): Promise<void> {
    await this.refreshMachines();
    let remembered: string | null = null;
    try {
      remembered = localStorage.getItem(REMEMBERED);
    } catch {
      /* no storage: the default */
    }
    const pick = this.machines.find((m) => m.name === remembered) ?? this.machines.find((m) => m.info?.this) ?? this.machines[0];
    if (pick) this.select(pick.name);
    setInterval(() => void this.refreshMachines(), MACHINES_POLL_MS);
    setInterval(() => void this.pollFleet(), MACHINES_POLL_MS);
    setInterval(() => void this.pollUsage(), 3000);
  }

  /// The selected machine.
  current(): Machine | undefined {
    return this.machines.find((m) => m.name === this.selected);
  }

  /// The machines whose agents the table shows: the selected one (and the benchmark's); with
  /// `fleetWide` (a fleet-wide filter), every machine.
  shown(): Machine[] {
    if (this.fleetWide) return [...this.machines, ...this.bench];
    const current = this.current();
    return current ? [current, ...this.bench] : [...this.bench];
  }

  /// Whether the other machines' agents are read too (polled, as the machines list is): while a
  /// fleet-wide filter ("needs attention", "waiting on a limit") is shown.
  fleetWide = false;

  setFleetWide(on: boolean): void {
    if (this.fleetWide === on) return;
    this.fleetWide = on;
    if (on) void this.pollFleet();
    else for (const m of this.machines) if (m.name !== this.selected) m.agents = new Map();
    this.changed("agents");
  }

  /// Reads the agents of every online machine but the selected one (whose stream keeps it live).
  async pollFleet(): Promise<void> {
    if (!this.fleetWide || document.hidden || !can("viewer")) return;
    await Promise.all(
      this.machines
        .filter((m) => m.name !== this.selected && m.info?.online !== false)
        .map(async (m) => {
          try {
            const agents = await api<AgentInfo[]>("GET", on("/v1/agents", m.name));
            if (this.fleetWide && m.name !== this.selected) m.agents = new Map(agents.map((a) => [a.id, a]));
          } catch {
            m.agents = new Map();
          }
        }),
    );
    this.changed("agents");
  }

  machine(id: string): Machine | undefined {
    return this.machines.find((m) => m.id === id);
  }

  /// Shows `name`: closes the previous machine's stream (and forgets its lists), opens this one's.
  select(name: string): void {
    if (name === this.selected && this.current()?.stream) return;
    const previous = this.current();
    if (previous) {
      previous.stream?.close();
      previous.stream = undefined;
      previous.agents = new Map();
      previous.approvals = new Map();
      previous.usage = new Map();
      previous.status = "connecting";
      previous.offline = null;
    }
    this.selected = name;
    setMachine(name);
    try {
      localStorage.setItem(REMEMBERED, name);
    } catch {
      /* not remembered */
    }
    const next = this.current();
    if (next) this.connect(next);
    for (const what of ["selected", "machines", "agents", "approvals", "usage"]) this.changed(what);
    if (this.fleetWide) void this.pollFleet();
  }

  /// Reads the machines list (a hub's: itself and every machine that joined; a lone daemon's: itself).
  async refreshMachines(): Promise<void> {
    let list: MachineInfo[];
    try {
      if (can("viewer")) {
        list = await api<MachineInfo[]>("GET", "/v1/machines");
      } else {
        // An approver may not read the machines list: it is shown the daemon serving the page.
        if (this.machines.length) return;
        const health = await api<Health>("GET", "/v1/health");
        const name = health.machine_name ?? health.hostname;
        list = [
          {
            name,
            this: true,
            online: true,
            agents: 0,
            agents_running: 0,
            last_seen_ms: null,
            address: null,
            version: health.version,
            joined_at_ms: null,
            audit: { status: "ok", size: 0, checked_at_ms: null, problem: null },
          },
        ];
      }
    } catch {
      return;
    }
    const before = this.current();
    this.machines = list.map((info) => {
      const known = this.machines.find((m) => m.name === info.name) ?? newMachine(info.name);
      known.info = info;
      return known;
    });
    const current = this.current();
    if (current?.info) {
      if (!current.info.online && current.offline === null) {
        // Its link went down: the hub's answer says so in words.
        void this.reload(current);
      } else if (current.info.online && current.offline !== null) {
        current.offline = null;
        current.stream?.retry();
      }
    } else if (this.selected && this.machines.length) {
      // The selected machine left the fleet (revoked): back to the daemon serving the page.
      before?.stream?.close();
      this.selected = "";
      this.select((this.machines.find((m) => m.info?.this) ?? this.machines[0]!).name);
    }
    this.changed("machines");
  }

  private connect(machine: Machine): void {
    machine.stream = new Stream({
      url: (last) => `${on("/v1/events", machine.name)}${last ? `?after=${encodeURIComponent(last)}` : ""}`,
      events: [
        "agent_spawned", "agent_state", "agent_exited", "agent_restarted", "agent_backoff",
        "agent_crashed_out", "agent_spawn_failed", "agent_renamed", "agent_updated",
        "agent_signalled", "agent_removed", "agent_unsandboxed", "agent_activity",
        "agent_waiting_limit", "agent_model_errors_exhausted", "agent_scheduled", "agent_ready",
        "agent_unhealthy", "agent_memory_restart", "approval_requested",
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
        api<Health>("GET", on("/v1/health", machine.name)),
        can("viewer") ? refusedAsNull(api<AgentInfo[]>("GET", on("/v1/agents", machine.name))) : none<AgentInfo>(),
        can("approver") ? refusedAsNull(api<Approval[]>("GET", on("/v1/approvals", machine.name))) : none<Approval>(),
      ]);
      if (machine.stream === undefined) return; // no longer selected
      machine.health = health;
      machine.offline = null;
      if (agents) machine.agents = new Map(agents.map((a) => [a.id, a]));
      if (approvals) machine.approvals = new Map(approvals.slice(0, 200).map((a) => [a.id, a]));
      this.changed("machines");
      this.changed("agents");
      this.changed("approvals");
    } catch (e) {
      // A known machine whose link is down: the views say so, in the hub's words.
      if (isOffline(e) && machine.stream !== undefined) {
        machine.offline = e.message;
        machine.agents = new Map();
        machine.approvals = new Map();
        this.changed("machines");
        this.changed("agents");
        this.changed("approvals");
      }
      /* otherwise the stream's status says the machine is down */
    }
  }

  /// Reads CPU time and memory as the daemon last sampled them (every 2 s): the load is the
  /// daemon's `cpu_percent`, else (an older daemon) the CPU time used between two readings.
  async pollUsage(): Promise<void> {
    const machine = this.current();
    if (!machine || machine.status !== "up" || machine.offline !== null || document.hidden || !can("viewer")) return;
    try {
      const readings = await api<{ agent_id: string; cpu_usec: number; memory_bytes: number; time_ms: number; cpu_percent?: number | null }[]>("GET", on("/v1/usage", machine.name));
      const next = new Map<string, { cpu: number | null; memory: number; cpuUsec: number; time: number }>();
      for (const r of readings) {
        const before = machine.usage.get(r.agent_id);
        const elapsed = before ? r.time_ms - before.time : 0;
        const cpu = r.cpu_percent ?? (before && elapsed > 0 ? Math.max(0, ((r.cpu_usec - before.cpuUsec) / 1000 / elapsed) * 100) : before?.cpu ?? null);
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
      const agent = await api<AgentInfo>("GET", on(`/v1/agents/${encodeURIComponent(id)}`, machine.name));
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
      case "agent_activity": {
        // The activity and its evidence come with the event: no need to read the agent again.
        const agent = machine.agents.get(event.agent_id);
        if (agent) {
          agent.activity = event.activity;
          this.changed("agents");
        } else void this.refreshAgent(machine, event.agent_id);
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
