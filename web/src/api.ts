// The JSON API as the dashboard uses it: same origin, the session cookie (HttpOnly, never seen
// here), the session's CSRF token on every request that changes state, and `dashboard` as source.
// A `role_required` refusal becomes a message that says which role the session lacks.

import { refusal } from "./role";
import type { Role } from "./types";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requiredRole: Role | null = null,
  ) {
    super(message);
  }
}

let csrf = "";

/// The machine the dashboard shows (its fleet name), set by the store.
let machine = "";

export function setMachine(name: string): void {
  machine = name;
}

export function selectedMachine(): string {
  return machine;
}

/// The one place a path of a via-hub route (agents, logs, history, events, terminals, approvals,
/// audit, sandbox, usage, health) is addressed to a machine: `/v1/agents/x` becomes
/// `/v1/machines/{machine}/agents/x`, by default the selected machine's; a hub forwards it over
/// the machine's link, and every daemon answers its own name itself, so the page's own machine
/// takes the same path. The hub's own routes (session, login, tokens, push, notifications, the
/// machines list, fleet) are called as they are, never through here.
export function on(path: string, name: string = machine): string {
  if (!path.startsWith("/v1/")) throw new Error(`not an API path: ${path}`);
  if (!name) throw new Error("no machine selected yet");
  return `/v1/machines/${encodeURIComponent(name)}${path.slice(3)}`;
}

/// The answer of a known machine whose link is down (`503 machine_offline`).
export function isOffline(e: unknown): e is ApiError {
  return e instanceof ApiError && e.code === "machine_offline";
}

export function setCsrf(token: string): void {
  csrf = token;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { "X-Celistra-Source": "dashboard" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "unreachable", "the daemon is unreachable; is celistrad running?");
  }
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    const e = json as { code?: string; message?: string; required_role?: Role | null } | undefined;
    if (e?.code === "role_required") throw new ApiError(response.status, e.code, refusal(e.required_role), e.required_role ?? null);
    throw new ApiError(response.status, e?.code ?? "http_" + response.status, e?.message ?? text ?? response.statusText);
  }
  return json as T;
}

export async function apiText(path: string): Promise<string> {
  const response = await fetch(path, { headers: { "X-Celistra-Source": "dashboard" }, cache: "no-store" });
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    let code = "http_" + response.status;
    try {
      const e = JSON.parse(text) as { code: string; message: string; required_role?: Role | null };
      code = e.code;
      message = code === "role_required" ? refusal(e.required_role) : e.message;
    } catch {
      /* keep the text */
    }
    throw new ApiError(response.status, code, message);
  }
  return response.text();
}
