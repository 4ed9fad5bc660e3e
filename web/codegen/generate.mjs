// Generates web/generated/api.ts, the TypeScript types of the API, from web/openapi.json (the
// OpenAPI document the daemon serves; a test in celistra-daemon keeps that copy current). build.mjs
// runs this before type-checking; `node codegen/generate.mjs` runs it alone.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const banner = "// Generated from web/openapi.json by web/codegen/generate.mjs: do not edit.\n\n";

export async function generate(web) {
  const document = JSON.parse(readFileSync(join(web, "openapi.json"), "utf8"));
  const types = banner + astToString(await openapiTS(document));
  const out = join(web, "generated/api.ts");
  let current = null;
  try {
    current = readFileSync(out, "utf8");
  } catch {}
  // Rewritten only when it changes, so the build does not see a fresh file every time.
  if (current !== types) {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, types);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await generate(join(dirname(fileURLToPath(import.meta.url)), ".."));
}
