// Wire types of the celistrad API that the dashboard reads (crates/celistra-proto).

export type AgentState =
  | "starting" | "running" | "waiting-approval" | "backoff" | "stopping"
  | "exited" | "failed" | "stopped" | "crashed-out";

export interface RunSandbox {
  sandboxed: boolean;
  unsandboxed_because?: string;
  capabilities: string[];
  user: string;
  limits?: string[];
}

export interface AgentInfo {
  id: string;
  name: string;
  state: AgentState;
  pid: number | null;
  restarts: number;
  exit_code: number | null;
  exit_signal: string | null;
  command: string;
  workspace: string;
  env_keys: string[];
  auto_restart: boolean;
  source: string;
  run: number;
  created_at_ms: number;
  started_at_ms: number | null;
  exited_at_ms: number | null;
  next_restart_at_ms: number | null;
  last_error: string | null;
  mode: "pty" | "pipes";
  sandbox?: RunSandbox;
  settings: { stop_signal: string; stop_timeout_ms: number; restart_max: number; [k: string]: unknown };
}

export interface AgentSpec {
  name: string;
  command: string;
  workspace?: string;
  env?: Record<string, string>;
  auto_restart?: boolean;
  capabilities?: string[];
  drop_capabilities?: string[];
  stop_signal?: string;
  stop_timeout_ms?: number;
  [k: string]: unknown;
}

export interface Approval {
  id: string;
  agent_id: string;
  agent_name: string;
  origin: string;
  prompt: string;
  detail?: string;
  created_at_ms: number;
  expires_at_ms: number;
  on_timeout: "deny" | "approve";
  status: "pending" | "approved" | "denied" | "expired";
  decided_by?: string;
  decided_via?: string;
  decided_at_ms?: number;
  reason?: string;
}

export interface Health {
  status: string;
  version: string;
  machine_id: string;
  hostname: string;
  agents: number;
  agents_running: number;
}

export interface AuditEntry {
  seq: number;
  time_ms: number;
  actor: string;
  action: string;
  target: string;
  body: unknown;
}

export interface RunRecord {
  agent_id: string;
  name: string;
  run: number;
  command: string;
  started_at_ms: number;
  ended_at_ms: number | null;
  exit_code: number | null;
  exit_signal: string | null;
  cause: string | null;
  stopped_by: string | null;
  output_bytes: number;
}

export interface LogLine {
  agent_id: string;
  run: number;
  stream: string;
  time_ms: number;
  text: string;
}

export interface SessionState {
  session: { id: string; actor: string; expires_at_ms: number };
  csrf_token: string;
}

export interface ServerEvent {
  id: number;
  time_ms: number;
  type: string;
  [k: string]: unknown;
}
