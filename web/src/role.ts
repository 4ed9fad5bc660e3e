// The session's role (`GET /v1/session` → `session.role`, the role of its login link) and what it
// may do, as the daemon decides it: the page shows only what the role can use, so it never calls a
// route that would refuse it, and says plainly when it is refused anyway.

import type { Role } from "./types";

let current: Role = "owner";

export function setRole(role: Role): void {
  current = role;
}

export function role(): Role {
  return current;
}

/// Whether this session may call a route that requires `required` (the daemon's
/// `Role::satisfies`: an owner everything, an operator all but the owner's, viewers and approvers
/// only their own).
export function can(required: Role): boolean {
  switch (current) {
    case "owner":
      return true;
    case "operator":
      return required !== "owner";
    case "viewer":
    case "approver":
      return current === required;
  }
}

/// What a `role_required` refusal means for a dashboard session, and what to do about it.
export function refusal(required: Role | null | undefined): string {
  const need = required ?? "another";
  return `Not allowed for this ${current} session: this needs the ${need} role. Ask the machine's owner for a dashboard link with that role (celistrad ctl dashboard --role ${need}).`;
}
