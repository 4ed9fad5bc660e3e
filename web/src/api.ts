// The JSON API as the dashboard uses it: same origin, the session cookie (HttpOnly, never seen
// here), the session's CSRF token on every request that changes state, and `dashboard` as source.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = "";

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
    const e = json as { code?: string; message?: string } | undefined;
    throw new ApiError(response.status, e?.code ?? "http_" + response.status, e?.message ?? text ?? response.statusText);
  }
  return json as T;
}

export async function apiText(path: string): Promise<string> {
  const response = await fetch(path, { headers: { "X-Celistra-Source": "dashboard" }, cache: "no-store" });
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { message: string }).message;
    } catch {
      /* keep the text */
    }
    throw new ApiError(response.status, "http_" + response.status, message);
  }
  return response.text();
}
