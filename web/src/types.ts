// Names for the API's types that the dashboard uses. The types are generated at build time from the
// OpenAPI document the daemon serves (web/openapi.json → generated/api.ts, by codegen/generate.mjs).

import type { components } from "../generated/api";

type Schemas = components["schemas"];

export type AgentState = Schemas["AgentState"];
export type AgentInfo = Schemas["AgentInfo"];
export type AgentSpec = Schemas["AgentSpec"];
export type Approval = Schemas["Approval"];
export type Health = Schemas["Health"];
export type AuditEntry = Schemas["AuditEntry"];
export type RunRecord = Schemas["RunRecord"];
export type LogLine = Schemas["LogLine"];
export type SessionState = Schemas["SessionState"];
/** One event of `GET /v1/events`. */
export type ServerEvent = Schemas["Event"];
export type Role = Schemas["Role"];

/** One machine of `GET /v1/machines`. */
export type MachineInfo = Schemas["Machine"];
export type Activity = Schemas["Activity"];
export type ActivityInfo = Schemas["ActivityInfo"];
export type ExitClassification = Schemas["ExitClassification"];
export type LimitWait = Schemas["LimitWait"];
export type ProbeStatus = Schemas["ProbeStatus"];
