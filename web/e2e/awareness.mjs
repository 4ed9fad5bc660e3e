// What AI agents are doing, in a real browser (Debian's chromium through playwright-core), against a
// real fleet: a hub whose stand-in agent (`asker`, kind `stand-in`) asks "Proceed?" once this
// script writes `go` into its workspace (a screen rule of the hub's agent-rules.json makes that
// `needs-input`), and a node whose Claude Code stand-in (`limited`) exited on a usage limit that
// resets at --reset-ms. Checks the activity badges and their evidence, the change to needs-input
// without a reload, the fleet-wide filters ("waiting on a limit", "needs attention"), the agent's
// detail view (kind, evidence, reset, exit class and its line), the exit class in History, and that
// a pushed `agent_activity` notice is shown by the service worker. Every wait is bounded.
//
//   node e2e/awareness.mjs --bin CELISTRAD --home HUB_STATE_DIR --work HUB_WORKSPACE
//                          --node-home NODE_STATE_DIR --reset-ms MS --shots DIR [--browser PATH]
//
// Exits 0 when every step passed; prints "N passed, M failed" last.

import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
for (const required of ["bin", "home", "work", "node-home", "reset-ms", "shots"]) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const WAIT = Number(args.wait ?? 20_000);
const resetMs = Number(args["reset-ms"]);
mkdirSync(args.shots, { recursive: true });

let passed = 0;
let failed = 0;

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    passed++;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed++;
    console.log(`FAIL ${name}: ${error.stack ?? error}`);
    throw error;
  }
}

/// Waits (bounded) until `probe` returns something truthy, and returns it.
async function until(probe, what) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function expect(condition, what) {
  if (!condition) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: args.browser ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const link = JSON.parse(execFileSync(args.bin, ["ctl", "--home", args.home, "dashboard", "--json", "--no-open"], { encoding: "utf8" })).url;
  await page.goto(link);
  await page.waitForSelector('.agent-row[data-name="asker"]');
  const row = '.agent-row[data-name="asker"]';
  let limitedId = "";

  await step("a question on screen turns the badge to needs-input, live", async () => {
    const loads = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    writeFileSync(join(args.work, "go"), "");
    await page.waitForSelector(`${row}[data-activity="needs-input"] .activity-badge.act-needs-input`);
    const title = await page.getAttribute(`${row} .activity-badge`, "title");
    expect(/screen rule stand-in\/asks/.test(title) && title.includes("Proceed?") && /\d+s ago/.test(title), `evidence in the title: ${title}`);
    const text = await page.textContent(`${row} .activity-badge`);
    expect(text.includes("needs-input"), `badge text: ${text}`);
    // The same page, not a reload.
    expect((await page.evaluate(() => performance.getEntriesByType("navigation").length)) === loads, "the page reloaded");
    expect(!(await page.$('.agent-row[data-name="limited"]')), "the node's agent is listed while the hub alone is selected");
    await page.screenshot({ path: join(args.shots, "1-needs-input.png") });
  });

  await step("waiting on a limit, across the fleet", async () => {
    await page.selectOption("#agents-view-filter", "limit");
    await page.waitForSelector('.agent-row[data-name="limited"][data-activity="waiting-limit"] .activity-badge.act-waiting-limit');
    expect(!(await page.$(row)), "the asker is not waiting on a limit");
    const limited = '.agent-row[data-name="limited"]';
    expect((await page.textContent(`${limited} .col-machine`)).trim() === "aw-node", "the node's agent, from the hub");
    const title = await page.getAttribute(`${limited} .activity-badge`, "title");
    const local = new Date(resetMs).toLocaleTimeString("en-US");
    expect(/resets .* \(in (59m|1h 0m)/.test(title) && title.includes("usage limit reached"), `reset in the title: ${title} (reset ${local})`);
    limitedId = await page.getAttribute(limited, "data-agent");
    await page.screenshot({ path: join(args.shots, "2-waiting-limit.png") });
  });

  await step("needs attention, across the fleet", async () => {
    await page.selectOption("#agents-view-filter", "attention");
    await page.waitForSelector(`${row}[data-activity="needs-input"]`);
    await page.waitForSelector('.agent-row[data-name="limited"][data-activity="waiting-limit"]');
    await page.selectOption("#agents-view-filter", "all");
    await page.waitForFunction(() => !document.querySelector('.agent-row[data-name="limited"]'), null, { timeout: WAIT });
    await page.selectOption("#agents-view-filter", "limit");
    await page.waitForSelector('.agent-row[data-name="limited"]');
  });

  await step("the agent's detail", async () => {
    await page.click('.agent-row[data-name="limited"] .agent-link');
    await page.waitForSelector('.agent-detail-view [data-section="limit"]');
    const text = (selector) => page.textContent(`.agent-detail-view ${selector}`);
    expect((await text('[data-field="kind"]')) === "claude", "kind");
    expect((await text('[data-field="activity"]')) === "waiting-limit", "activity");
    expect(/^resets .* \(in (59m|1h 0m)/.test(await text('[data-field="reset"]')), `reset: ${await text('[data-field="reset"]')}`);
    expect((await text('[data-field="exit-class"]')) === "usage-limit", "exit class");
    expect((await text('[data-field="exit-line"]')).includes("Claude AI usage limit reached"), "exit line");
    await page.screenshot({ path: join(args.shots, "3-detail.png") });
    // The hub's asker, from its row: its evidence in full.
    await page.goto(`${new URL(link).origin}/#/agents`);
    await page.waitForSelector('.machine[data-machine="aw-node"][aria-pressed="true"]');
    await page.click('.machine[data-machine="aw-hub"]');
    await page.selectOption("#agents-view-filter", "all");
    await page.click(`${row} .agent-link`);
    await page.waitForSelector('.agent-detail-view [data-field="signal"]');
    expect((await text('[data-field="signal"]')).includes("screen rule stand-in/asks"), "signal");
    expect((await text('[data-field="said"]')).includes("Proceed?"), "said");
  });

  await step("history shows the run's exit class", async () => {
    await page.click('.machine[data-machine="aw-node"]');
    await page.goto(`${new URL(link).origin}/#/history`);
    await page.waitForSelector('.runs-table [data-exit-class="usage-limit"]');
  });

  await step("the service worker shows an agent_activity push notice", async () => {
    const base = new URL(link).origin;
    await page.goto(`${base}/#/agents`);
    await page.evaluate(() => navigator.serviceWorker.ready);
    await context.grantPermissions(["notifications"], { origin: base });
    const cdp = await context.newCDPSession(page);
    const registrations = [];
    cdp.on("ServiceWorker.workerRegistrationUpdated", (event) => registrations.push(...event.registrations));
    await cdp.send("ServiceWorker.enable");
    const registration = await until(() => registrations.find((r) => r.scopeURL.startsWith(base) && !r.isDeleted), "the service worker's registration");
    const message = {
      kind: "agent_activity",
      machine: "m",
      sent_at_ms: Date.now(),
      activity: {
        agent_id: "ag-push0",
        agent_name: "coder",
        activity: { activity: "needs-input", since_ms: Date.now(), evidence: { tier: "hook", signal: "claude hook Notification (idle_prompt)", said: "Claude is waiting for your input", at_ms: Date.now() } },
      },
    };
    let tries = 0;
    const [note] = await until(async () => {
      const list = await page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, agent: n.data?.agent })));
      if (list.length) return list;
      // A busy browser may drop a push delivered while it restarts the worker: deliver again.
      if (tries++ % 40 === 0) await cdp.send("ServiceWorker.deliverPushMessage", { origin: base, registrationId: registration.registrationId, data: JSON.stringify(message) });
      return null;
    }, "the notification");
    expect(note.title === "coder needs input" && note.body.includes("Claude is waiting for your input") && note.agent === "ag-push0", `notification: ${JSON.stringify(note)}`);
  });

  await step("a link to an agent without its machine (a notice's) finds the machine", async () => {
    const base = new URL(link).origin;
    await page.click('.machine[data-machine="aw-hub"]');
    await page.waitForSelector('.machine[data-machine="aw-hub"][aria-pressed="true"]');
    await page.goto(`${base}/#/agent/${limitedId}`);
    await page.waitForSelector('.agent-detail-view [data-section="limit"]');
    expect((await page.textContent('.agent-detail-view [data-field="kind"]')) === "claude", "kind");
    await page.waitForSelector('.machine[data-machine="aw-node"][aria-pressed="true"]');
  });

  expect(errors.length === 0, `page errors: ${errors.join(" | ")}`);
} catch (error) {
  if (failed === 0) console.log(`FAIL ${error.stack ?? error}`);
  failed = Math.max(failed, 1);
  exitCode = 1;
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(exitCode);
