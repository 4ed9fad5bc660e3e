// The spawn form and the agent settings dialog. The API's validation errors are shown next to the
// field they are about (by error code, else by the field the message names). The owner edits the
// whole spec; an operator, who may not read environment values, edits what `AgentInfo` shows and
// replaces the environment or capabilities only when it fills those fields in.

import { api, ApiError, on } from "../api";
import { h, modal, toast } from "../dom";
import { can } from "../role";
import type { Machine } from "../store";
import type { AgentInfo, AgentSpec } from "../types";

type Field = "name" | "command" | "workspace" | "env" | "auto_restart" | "capabilities" | "drop_capabilities" | "stop_signal" | "form";

/// Which form field an API error is about.
export function fieldOf(error: ApiError): Field {
  if (error.code === "name_taken") return "name";
  if (error.code === "workspace_invalid") return "workspace";
  const m = error.message.toLowerCase();
  if (m.startsWith("agent name") || m.startsWith("name")) return "name";
  if (m.startsWith("command")) return "command";
  if (m.startsWith("workspace")) return "workspace";
  if (m.startsWith("environment")) return "env";
  if (m.startsWith("drop_capabilities")) return "drop_capabilities";
  if (m.startsWith("capabilities")) return "capabilities";
  return "form";
}

/// `KEY=VALUE` lines into a map; a line without `=` is an error naming it.
export function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new ApiError(400, "invalid_request", `environment line ${i + 1} is not KEY=VALUE`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  return env;
}

function tokens(text: string): string[] {
  return text.split(/[\s,]+/).filter(Boolean);
}

interface FormFields {
  form: HTMLFormElement;
  errors: Map<Field, HTMLElement>;
  values: () => AgentSpec;
}

function field(
  id: string,
  label: string,
  input: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement,
  errors: Map<Field, HTMLElement>,
  name: Field,
  hint?: string,
): HTMLElement {
  const error = h("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  errors.set(name, error);
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-error${hint ? ` ${id}-hint` : ""}`);
  return h(
    "div",
    { class: "field", "data-field": name },
    h("label", { for: id }, label),
    input,
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    error,
  );
}

/// For a session that cannot read the spec: the environment's keys (their values are hidden) and a
/// note that empty capability fields keep the agent's own.
interface Hidden {
  envKeys: string[];
}

function buildForm(initial: Partial<AgentSpec>, prefix: string, hidden?: Hidden): FormFields {
  const errors = new Map<Field, HTMLElement>();
  const command = h("textarea", { name: "command", rows: 2, required: true, spellcheck: "false", autocapitalize: "off" });
  command.value = initial.command ?? "";
  const name = h("input", { name: "name", autocomplete: "off", autocapitalize: "off", spellcheck: "false" });
  name.value = initial.name ?? "";
  const workspace = h("input", { name: "workspace", autocomplete: "off", autocapitalize: "off", spellcheck: "false", placeholder: "/home/me/project" });
  workspace.value = initial.workspace ?? "";
  const env = h("textarea", { name: "env", rows: 2, spellcheck: "false", autocapitalize: "off", placeholder: "KEY=value" });
  env.value = Object.entries(initial.env ?? {}).map(([k, v]) => `${k}=${v}`).join("\n");
  const autoRestart = h("input", { type: "checkbox", name: "auto_restart" });
  autoRestart.checked = initial.auto_restart ?? false;
  const caps = h("input", { name: "capabilities", autocapitalize: "off", spellcheck: "false", placeholder: "write:/srv/out connect:443" });
  caps.value = (initial.capabilities ?? []).join(" ");
  const drops = h("input", { name: "drop_capabilities", autocapitalize: "off", spellcheck: "false", placeholder: "network" });
  drops.value = (initial.drop_capabilities ?? []).join(" ");
  const formError = h("p", { class: "field-error form-error", role: "alert" });
  errors.set("form", formError);
  const autoId = `${prefix}-auto`;
  autoRestart.id = autoId;
  const autoError = h("p", { class: "field-error" });
  errors.set("auto_restart", autoError);
  const form = h(
    "form",
    { class: "spawn-form", novalidate: true },
    field(`${prefix}-command`, "Command", command, errors, "command", "Run as /bin/sh -c COMMAND"),
    field(`${prefix}-name`, "Name", name, errors, "name", "Empty: one is made from the command"),
    field(`${prefix}-workspace`, "Workspace", workspace, errors, "workspace", "Absolute path; empty: the daemon's home"),
    field(
      `${prefix}-env`,
      "Environment",
      env,
      errors,
      "env",
      hidden
        ? `Values are the owner's to read${hidden.envKeys.length ? ` (set: ${hidden.envKeys.join(", ")})` : ""}. Empty keeps them; KEY=value lines replace the whole environment.`
        : "One KEY=value a line",
    ),
    h("div", { class: "field check" }, autoRestart, h("label", { for: autoId }, "Restart automatically when it exits"), autoError),
    field(`${prefix}-caps`, "Extra capabilities", caps, errors, "capabilities", `Tokens added to the default set, e.g. write:/srv/out privileged${hidden ? "; empty keeps the agent's" : ""}`),
    field(`${prefix}-drops`, "Dropped capabilities", drops, errors, "drop_capabilities", `Tokens removed, e.g. network${hidden ? "; empty keeps the agent's" : ""}`),
    formError,
  );
  return {
    form,
    errors,
    values: () => {
      const spec: AgentSpec = {
        name: name.value.trim(),
        command: command.value,
        auto_restart: autoRestart.checked,
        env: parseEnv(env.value),
        capabilities: tokens(caps.value),
        drop_capabilities: tokens(drops.value),
      };
      if (workspace.value.trim()) spec.workspace = workspace.value.trim();
      return spec;
    },
  };
}

function showError(fields: FormFields, error: unknown): void {
  fields.errors.forEach((el) => (el.textContent = ""));
  fields.form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const apiError = error instanceof ApiError ? error : new ApiError(0, "error", String(error));
  const which = fieldOf(apiError);
  const target = fields.errors.get(which) ?? fields.errors.get("form")!;
  target.textContent = apiError.message;
  const input = fields.form.querySelector<HTMLElement>(`[data-field="${which}"] :is(input, textarea, select)`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

/// The spawn dialog.
export function openSpawn(machine: Machine | undefined): void {
  if (!machine) return;
  const fields = buildForm({}, "spawn");
  const submit = h("button", { type: "submit", class: "primary", form: "spawn-form" }, "Spawn");
  const cancel = h("button", { type: "button" }, "Cancel");
  fields.form.id = "spawn-form";
  const dialog = modal(`Spawn an agent on ${machine.name}`, fields.form, [cancel, submit]);
  cancel.addEventListener("click", () => dialog.close());
  fields.form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const agent = await api<AgentInfo>("POST", on("/v1/agents", machine.name), fields.values());
      toast(`spawned ${agent.name} (${agent.id})`);
      dialog.close();
    } catch (error) {
      showError(fields, error);
    } finally {
      submit.disabled = false;
    }
  });
  fields.form.querySelector("textarea")?.focus();
}

/// The settings dialog of one agent: for the owner its spec (environment values included), for an
/// operator what the agent's info shows; saved as an update, optionally restarting it.
export async function openSettings(machine: Machine, agent: AgentInfo): Promise<void> {
  const whole = can("owner");
  let spec: Partial<AgentSpec>;
  if (whole) {
    try {
      spec = await api<AgentSpec>("GET", on(`/v1/agents/${agent.id}/spec`, machine.name));
    } catch (e) {
      toast((e as Error).message, "error");
      return;
    }
  } else {
    spec = { name: agent.name, command: agent.command, workspace: agent.workspace, auto_restart: agent.auto_restart };
  }
  const fields = buildForm(spec, "settings", whole ? undefined : { envKeys: agent.env_keys });
  fields.form.id = "settings-form";
  const restart = h("input", { type: "checkbox", id: "settings-restart" });
  fields.form.append(h("div", { class: "field check" }, restart, h("label", { for: "settings-restart" }, "Restart now so the changes apply")));
  const save = h("button", { type: "submit", class: "primary", form: "settings-form" }, "Save");
  const cancel = h("button", { type: "button" }, "Cancel");
  const dialog = modal(`Settings of ${agent.name}`, fields.form, [cancel, save]);
  cancel.addEventListener("click", () => dialog.close());
  fields.form.addEventListener("submit", async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      const values = fields.values();
      // Without the spec, an empty field means "keep", not "clear".
      const keep = <T>(value: T, empty: boolean): T | undefined => (whole || !empty ? value : undefined);
      const update = {
        name: values.name || undefined,
        command: values.command,
        workspace: values.workspace,
        env: keep(values.env, Object.keys(values.env ?? {}).length === 0),
        auto_restart: values.auto_restart,
        capabilities: keep(values.capabilities, (values.capabilities ?? []).length === 0),
        drop_capabilities: keep(values.drop_capabilities, (values.drop_capabilities ?? []).length === 0),
        restart: restart.checked,
      };
      await api("PATCH", on(`/v1/agents/${agent.id}`, machine.name), update);
      toast(`${agent.name}: settings saved`);
      dialog.close();
    } catch (error) {
      showError(fields, error);
    } finally {
      save.disabled = false;
    }
  });
}
