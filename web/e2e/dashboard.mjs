// The dashboard in a real browser (Debian's chromium through playwright-core), against a real
// daemon, in a desktop and a phone viewport: log in with a one-time link, spawn an agent (after an
// inline validation error), see it running, type into its terminal and see the echo, kill it with
// a chosen signal, approve a real `celistrad ask` by press-and-hold, see the decision in Activity,
// approve through a webhook's decision link on a device without a session, show a pushed request
// from the service worker, see the stream-down banner; check width (360 px, dark), focus and labels;
// then the offline shell and, on the desktop, the 1000-agent benchmark. With --tls-home, the same
// browser (trusting exactly that daemon's certificate by its SPKI hash) opens an HTTPS daemon's
// dashboard with a viewer session (no spawn, no actions, a read-only terminal that sends nothing),
// an operator session (agent settings without reading the owner's spec) and, on a phone, an
// approver session (approvals only; approve a real `celistrad ask` by
// press-and-hold), with no refused request along the way. With --node-home, the first daemon is a
// fleet hub that a second daemon (the node) joined: the sidebar lists both machines, online;
// selecting the node (remembered across a reload) shows its agents, spawns one there from the form,
// attaches its terminal through the hub, reads its history, logs and activity; selecting the hub
// again shows the hub's own agents and activity, and closes the node's terminal; stopping the node
// shows it offline, with the hub's 503 message in its views. While the node is selected, every
// request of a machine's route goes to `/v1/machines/{node}/…`. Every wait is for a selector or a condition,
// bounded. Screenshots go to --shots.
//
//   node e2e/dashboard.mjs --bin CELISTRAD --home STATE_DIR --work WORKSPACE --shots DIR [--browser PATH]
//                          [--tls-home STATE_DIR --tls-work WORKSPACE]
//                          [--hub-name NAME --node-name NAME --node-home STATE_DIR --node-work WORKSPACE]
//
// Exits 0 when every step passed; prints "N passed, M failed" last.

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { X509Certificate, createHash } from "node:crypto";
import { createServer, request as httpRequest } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
for (const required of ["bin", "home", "work", "shots"]) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const browserPath = args.browser ?? "/usr/bin/chromium";
const WAIT = Number(args.wait ?? 20_000);
mkdirSync(args.shots, { recursive: true });
const secret = JSON.parse(readFileSync(join(args.home, "auth.json"), "utf8")).secret;

function loginLink(home = args.home, role = undefined) {
  const out = execFileSync(args.bin, ["ctl", "--home", home, "dashboard", "--json", "--no-open", ...(role ? ["--role", role] : [])], { encoding: "utf8" });
  return JSON.parse(out).url;
}

/// The API over a daemon's Unix socket with its machine secret (an owner): what the test itself
/// does around a session with another role. Answers the parsed JSON, or the text.
function sock(home, method, path, body) {
  const token = JSON.parse(readFileSync(join(home, "auth.json"), "utf8")).secret;
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      {
        socketPath: join(home, "celistrad.sock"),
        method,
        path,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Host: "localhost" },
        timeout: WAIT,
      },
      (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => {
          if (response.statusCode >= 400) return reject(new Error(`${method} ${path}: ${response.statusCode} ${text}`));
          try {
            resolve(JSON.parse(text));
          } catch {
            resolve(text);
          }
        });
      },
    );
    request.on("timeout", () => request.destroy(new Error(`${method} ${path}: timed out`)));
    request.on("error", reject);
    request.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

let passed = 0;
let failed = 0;
const results = [];

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    passed++;
    results.push(`ok   ${name} (${Date.now() - started} ms)`);
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

/// The daemon's API as `ctl` uses it (the bearer secret; never given to a page).
async function api(base, path, body) {
  const response = await fetch(`${base}${path}`, {
    method: body ? "POST" : "GET",
    headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  return response.json();
}

async function shot(page, name) {
  await page.screenshot({ path: join(args.shots, `${name}.png`), fullPage: false });
}

/// The text xterm.js shows (its accessibility-free DOM rows).
async function terminalText(page) {
  return page.evaluate(() => document.querySelector(".term-host:not([hidden]) .xterm-rows")?.textContent ?? "");
}

async function run(browser, viewport) {
  const tag = viewport.name;
  const context = await browser.newContext(viewport.options);
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  try {
    const link = loginLink();
    const base = new URL(link).origin;

    await step(`${tag}: login with the one-time link`, async () => {
      await page.goto(link);
      await page.waitForSelector(".agents-view");
      if (new URL(page.url()).hash) throw new Error(`the code stayed in the address bar: ${page.url()}`);
      const cookies = await context.cookies(base);
      const session = cookies.find((c) => c.name === "celistra_session");
      if (!session || !session.httpOnly || session.sameSite !== "Strict") {
        throw new Error(`session cookie flags wrong: ${JSON.stringify(session)}`);
      }
      const html = await page.content();
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
      if (html.includes(secret) || stored.includes(secret) || page.url().includes(secret)) {
        throw new Error("the machine secret reached the page");
      }
      // The link worked once: a second use is refused with a clear page.
      const again = await context.newPage();
      await again.goto(link);
      await again.waitForSelector("#login-error");
      const message = await again.textContent("#login-error");
      if (!/already used|not valid/.test(message)) throw new Error(`replayed link: ${message}`);
      await again.close();
      await page.waitForSelector(".machine.status-up");
      await shot(page, `${tag}-1-agents`);
    });

    await step(`${tag}: fits the width, follows the colour scheme, and the keyboard shows where it is`, async () => {
      const layout = await page.evaluate(() => ({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        dark: matchMedia("(prefers-color-scheme: dark)").matches,
        background: getComputedStyle(document.body).backgroundColor,
      }));
      if (layout.overflow > 0) throw new Error(`the page is ${layout.overflow} px wider than the screen`);
      const channels = layout.background.match(/\d+/g).slice(0, 3).map(Number);
      const light = channels.reduce((a, b) => a + b, 0) / 3 > 128;
      if (light === layout.dark) throw new Error(`background ${layout.background} in a ${layout.dark ? "dark" : "light"} scheme`);
      // Tab reaches controls, and the focused one is outlined.
      for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
      const focus = await page.evaluate(() => {
        const element = document.activeElement;
        const style = getComputedStyle(element);
        const name = element.getAttribute("aria-label") || element.textContent?.trim() || element.getAttribute("placeholder") || "";
        return { tag: element.tagName, outline: style.outlineStyle, width: style.outlineWidth, name };
      });
      if (focus.tag === "BODY" || focus.outline === "none" || focus.width === "0px" || !focus.name) {
        throw new Error(`keyboard focus not visible or unlabelled: ${JSON.stringify(focus)}`);
      }
      // Every control has a name a screen reader can say.
      const unnamed = await page.evaluate(() =>
        [...document.querySelectorAll("button, input, select, a[href]")]
          .filter((e) => e.offsetParent !== null)
          .filter((e) => !(e.getAttribute("aria-label") || e.textContent?.trim() || e.labels?.length || e.getAttribute("title") || e.getAttribute("aria-labelledby")))
          .map((e) => e.outerHTML.slice(0, 80)),
      );
      if (unnamed.length) throw new Error(`controls without a name: ${unnamed.join(" | ")}`);
    });

    const name = `e2e-cat-${tag}`;
    await step(`${tag}: spawn form shows the API's error inline, then spawns`, async () => {
      await page.click("text=+ Spawn agent");
      await page.fill("#spawn-command", "cat");
      await page.fill("#spawn-name", name);
      await page.fill("#spawn-workspace", "relative/dir");
      await page.click("#spawn-form button[type=submit], dialog button[type=submit]");
      const error = await page.waitForSelector('[data-field="workspace"] .field-error:not(:empty)');
      const text = await error.textContent();
      if (!/absolute/.test(text)) throw new Error(`workspace error: ${text}`);
      await shot(page, `${tag}-2-spawn-error`);
      await page.fill("#spawn-workspace", args.work);
      await page.click("dialog button[type=submit]");
      await page.waitForSelector(`.agent-row[data-name="${name}"][data-state="running"]`);
      if (!viewport.options.isMobile) {
        // CPU and memory come from /v1/usage, read every 3 s.
        await page.waitForFunction(
          (n) => /\d/.test(document.querySelector(`.agent-row[data-name="${n}"] .col-memory`)?.textContent ?? ""),
          name,
        );
      }
      await shot(page, `${tag}-3-running`);
    });

    const marker = `hello-${tag}-${Date.now() % 100000}`;
    await step(`${tag}: terminal attaches and echoes what is typed`, async () => {
      await page.click(`[aria-label="Terminal of ${name}"]`);
      await page.waitForFunction(() => /writer/.test(document.querySelector(".term-status")?.textContent ?? ""));
      await page.click(".term-host:not([hidden]) .xterm");
      await page.keyboard.type(marker);
      await page.keyboard.press("Enter");
      // The terminal echoes the line, then cat prints it again.
      await page.waitForFunction(
        (m) => (document.querySelector(".term-host:not([hidden]) .xterm-rows")?.textContent ?? "").split(m).length - 1 >= 2,
        marker,
      );
      if (viewport.options.isMobile) {
        const keys = await page.locator(".screen-keys button").count();
        if (keys < 7 || !(await page.isVisible('.screen-keys [aria-label="Escape"]'))) throw new Error("no on-screen keys on the phone");
        // Ctrl then "d" from the on-screen row sends EOF at a line start: cat exits 0... so it is
        // only armed here, then released, to keep cat alive for the kill step.
        await page.click('.screen-keys [aria-label^="Control"]');
        if ((await page.getAttribute('.screen-keys [aria-label^="Control"]', "aria-pressed")) !== "true") throw new Error("Ctrl not armed");
        await page.click('.screen-keys [aria-label^="Control"]');
      }
      await shot(page, `${tag}-4-terminal`);
      if (!(await terminalText(page)).includes(marker)) throw new Error("marker missing");
    });

    const signal = viewport.signal;
    await step(`${tag}: kill with SIG${signal} from the signal picker`, async () => {
      await page.goto(`${base}/#/agents`);
      await page.waitForSelector(`.agent-row[data-name="${name}"]`);
      await page.click(`[aria-label="Kill ${name}"]`);
      await page.selectOption("#kill-signal", signal);
      await shot(page, `${tag}-5-kill-dialog`);
      await page.click('[data-action="confirm-kill"]');
      // An operator's kill leaves it `stopped` (never restarted), its exit the signal.
      await page.waitForSelector(`.agent-row[data-name="${name}"][data-state="stopped"][data-exit="SIG${signal}"]`);
      if (!viewport.options.isMobile) {
        const exit = await page.textContent(`.agent-row[data-name="${name}"] .col-exit`);
        if (exit !== `SIG${signal}`) throw new Error(`exit column shows ${exit}`);
      }
      // The API agrees (the phone layout hides the exit column).
      const agent = await page.evaluate(async (n) => (await (await fetch(`/v1/agents/${n}`)).json()).exit_signal, name);
      if (agent !== `SIG${signal}`) throw new Error(`the agent ended by ${agent}`);
      if (viewport.options.isMobile) {
        // The phone's columns (state, name, actions) line up too; the desktop's have their own step.
        const table = await page.evaluate(tableLayout);
        if (table.problems.length) throw new Error(table.problems.join("\n"));
      }
      await shot(page, `${tag}-6-killed`);
    });

    if (viewport.more) {
      await step(`${tag}: the settings dialog changes an agent's spec`, async () => {
        await page.click(`[aria-label="Settings of ${name}"]`);
        await page.waitForSelector("#settings-env");
        await page.fill("#settings-env", "MODE=e2e");
        await page.check("#settings-auto");
        await page.click('dialog button[type="submit"]');
        await page.waitForSelector("dialog", { state: "detached" });
        const spec = await page.evaluate(async (n) => (await fetch(`/v1/agents/${n}/spec`)).json(), name);
        if (spec.env?.MODE !== "e2e" || spec.auto_restart !== true) throw new Error(`spec not saved: ${JSON.stringify(spec)}`);
      });
    }

    const asker = `e2e-ask-${tag}`;
    const prompt = `deploy ${tag} build`;
    await step(`${tag}: approve a real request by press-and-hold`, async () => {
      // Vibration is recorded, not felt: the page buzzes when a request arrives and when a hold
      // completes.
      await page.evaluate(() => {
        window.__vibrations = [];
        navigator.vibrate = (pattern) => (window.__vibrations.push(pattern), true);
      });
      await page.click("text=+ Spawn agent");
      await page.fill("#spawn-command", `${args.bin} ask '${prompt}' --detail 'from the browser test' --ttl 120`);
      await page.fill("#spawn-name", asker);
      await page.fill("#spawn-workspace", args.work);
      await page.click("dialog button[type=submit]");
      await page.waitForSelector(`.agent-row[data-name="${asker}"][data-state="waiting-approval"]`);
      await shot(page, `${tag}-7-waiting`);
      await page.click('.nav a[data-view="approvals"]');
      const card = `.card.pending:has(.prompt:text-is("${prompt}"))`;
      await page.waitForSelector(card);
      await page.waitForSelector(".nav-badge:not([hidden])");
      await page.waitForFunction(() => window.__vibrations.length >= 1);
      // A short press does nothing.
      const button = page.locator(`${card} [data-action="approve"]`);
      const box = await button.boundingBox();
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await page.mouse.down();
      await page.mouse.up();
      if (!(await page.isVisible(card))) throw new Error("a short press decided");
      // Holding decides once the hold completes; released after the decision is seen.
      await page.mouse.down();
      await shot(page, `${tag}-8-holding`);
      const decided = await page.waitForSelector(`.card.approved:has(.prompt:text-is("${prompt}"))`);
      await page.mouse.up();
      const buzzes = await page.evaluate(() => window.__vibrations.length);
      if (buzzes < 2) throw new Error(`vibrated ${buzzes} times (a request and a completed hold make 2)`);
      const who = await decided.textContent();
      if (!/by session:se-[0-9a-f]{12} via dashboard/.test(who)) throw new Error(`decider not shown: ${who}`);
      await shot(page, `${tag}-9-approved`);
      await page.goto(`${base}/#/agents`);
      await page.waitForSelector(`.agent-row[data-name="${asker}"][data-state="exited"]`);
      const code = await page.evaluate(async (n) => (await (await fetch(`/v1/agents/${n}`)).json()).exit_code, asker);
      if (code !== 0) throw new Error(`ask exited ${code}`);
    });

    await step(`${tag}: the decision appears in Activity`, async () => {
      await page.click('.nav a[data-view="activity"]');
      await page.waitForSelector('.entry[data-action="approval_decided"][data-actor^="session:se-"]');
      await page.fill("#activity-action", "session_login");
      await page.waitForSelector('.entry[data-action="session_login"]');
      await page.waitForFunction(() => !document.querySelector('.entry[data-action="approval_decided"]'));
      await shot(page, `${tag}-10-activity`);
    });

    await step(`${tag}: a webhook's decision link approves by press-and-hold, once`, async () => {
      // A loopback webhook receiver; config.json is read at each request, so it applies at once.
      const notices = [];
      const receiver = createServer((request, response) => {
        let body = "";
        request.on("data", (chunk) => (body += chunk));
        request.on("end", () => {
          notices.push(JSON.parse(body));
          response.end();
        });
      });
      await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
      const linkContext = await browser.newContext(viewport.options);
      try {
        const hook = `http://127.0.0.1:${receiver.address().port}/hook`;
        writeFileSync(join(args.home, "config.json"), JSON.stringify({ notifications: { webhooks: [{ name: "e2e", url: hook }] } }));
        const linkPrompt = `link ${tag} release`;
        const agent = await api(base, "/v1/agents", {
          name: `e2e-link-${tag}`,
          command: `${args.bin} ask '${linkPrompt}' --ttl 120`,
          workspace: args.work,
        });
        const notice = await until(
          () => notices.find((n) => n.kind === "approval_requested" && n.approval?.prompt === linkPrompt),
          "the webhook's notice",
        );
        // Opened on a device with no session: the link alone is the credential.
        const phone = await linkContext.newPage();
        await phone.goto(notice.decide_url);
        await phone.waitForSelector("#approve");
        if (!(await phone.textContent("main")).includes(linkPrompt)) throw new Error("the page does not show the request");
        const box = await phone.locator("#approve").boundingBox();
        await phone.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
        await phone.mouse.down();
        await phone.mouse.up();
        const stillPending = await api(base, `/v1/approvals/${notice.approval.id}`);
        if (stillPending.status !== "pending") throw new Error(`a short press decided: ${stillPending.status}`);
        if (viewport.options.isMobile) {
          await phone.mouse.down();
          await phone.waitForFunction(() => document.querySelector("#status")?.textContent === "Approved.");
          await phone.mouse.up();
        } else {
          // With a keyboard: holding Space on the focused button is the same deliberate gesture.
          await phone.focus("#approve");
          await phone.keyboard.down(" ");
          await phone.waitForFunction(() => document.querySelector("#status")?.textContent === "Approved.");
          await phone.keyboard.up(" ");
        }
        await shot(phone, `${tag}-10b-decision-link`);
        const decided = await api(base, `/v1/approvals/${notice.approval.id}`);
        if (decided.status !== "approved" || decided.decided_by !== "link:webhook:e2e" || decided.decided_via !== "decision-page") {
          throw new Error(`decided as ${JSON.stringify(decided)}`);
        }
        await until(async () => (await api(base, `/v1/agents/${agent.id}`)).exit_code === 0, "the asking agent to exit 0");
        // The link worked once: opened again, it says the request was decided.
        const response = await phone.goto(notice.decide_url);
        if (response.status() !== 409 || !/already used/.test(await phone.textContent("main"))) {
          throw new Error(`a used link answered ${response.status()}`);
        }
      } finally {
        writeFileSync(join(args.home, "config.json"), "{}");
        await linkContext.close();
        receiver.close();
      }
    });

    if (viewport.offline) {
      await step(`${tag}: the service worker shows a pushed request with its actions and takes it down once decided`, async () => {
        await page.goto(`${base}/#/agents`);
        await page.evaluate(() => navigator.serviceWorker.ready);
        await context.grantPermissions(["notifications"], { origin: base });
        const cdp = await context.newCDPSession(page);
        const registrations = [];
        cdp.on("ServiceWorker.workerRegistrationUpdated", (event) => registrations.push(...event.registrations));
        await cdp.send("ServiceWorker.enable");
        const registration = await until(
          () => registrations.find((r) => r.scopeURL.startsWith(base) && !r.isDeleted),
          "the service worker's registration",
        );
        const approval = { id: "ap-e2e0000push0", agent_name: "pusher", prompt: "push it", detail: "to prod", created_at_ms: Date.now() };
        const push = (message) =>
          cdp.send("ServiceWorker.deliverPushMessage", { origin: base, registrationId: registration.registrationId, data: JSON.stringify(message) });
        const shown = () =>
          page.evaluate(async () =>
            (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, tag: n.tag, body: n.body, actions: n.actions.map((a) => a.action), url: n.data?.decide_url })),
          );
        // Delivers a push again every 2 s until the worker's notifications show its effect: a busy
        // browser may drop a push delivered while it restarts the worker, and both showing (by
        // tag) and taking down a notification are idempotent.
        const pushUntil = async (message, done, what) => {
          let tries = 0;
          return until(async () => {
            const list = await shown();
            if (done(list)) return list;
            if (tries++ % 40 === 0) await push(message);
            return null;
          }, what);
        };
        const pushUntilShown = (message, what) => pushUntil(message, (list) => list.length > 0, what);
        const [note] = await pushUntilShown({ kind: "approval_requested", approval, decide_url: `${base}/d/token` }, "the notification");
        if (note.title !== "pusher asks for approval" || note.tag !== approval.id || note.actions.join() !== "approve,deny" || note.url !== `${base}/d/token` || !note.body.includes("to prod")) {
          throw new Error(`notification: ${JSON.stringify(note)}`);
        }
        await pushUntil({ kind: "approval_decided", approval: { ...approval, status: "approved" } }, (list) => list.length === 0, "the notification to close");
        const [test] = await pushUntilShown({ kind: "test", machine: "m-e2e" }, "the test notification");
        if (test.tag !== "celistra-test" || !test.body.includes("m-e2e")) throw new Error(`test notification: ${JSON.stringify(test)}`);
        await cdp.detach();
      });
    }

    if (viewport.more) {
      await step(`${tag}: history lists the runs and searches their output`, async () => {
        await page.click('.nav a[data-view="history"]');
        await page.fill("#history-agent", name);
        await page.click('.history-view button[type="submit"]');
        await page.waitForSelector(`.runs-table td:has-text("${name}")`);
        await page.waitForFunction((m) => (document.querySelector(".log-output")?.textContent ?? "").includes(m), marker);
        await page.fill("#history-agent", "");
        await page.fill("#history-grep", marker);
        await page.click('.history-view button[type="submit"]');
        await page.waitForFunction(
          (m) => /ag-[a-z0-9]+ /.test(document.querySelector(".log-output")?.textContent ?? "") && (document.querySelector(".log-output")?.textContent ?? "").includes(m),
          marker,
        );
        await shot(page, `${tag}-11-history`);
      });

      await step(`${tag}: this device: sessions, and the notifications switch says why this browser cannot subscribe`, async () => {
        await page.click('.nav a[data-view="settings"]');
        await page.waitForSelector('.sessions .card:has-text("(this browser)")');
        await page.click("#push-toggle");
        await page.waitForFunction(() => /Cannot turn notifications on: .+/.test(document.querySelector(".settings-view [role=status]")?.textContent ?? ""));
        if (await page.isChecked("#push-toggle")) throw new Error("the switch stayed on");
        await shot(page, `${tag}-12-device`);
      });
    }

    if (viewport.more) {
      await step(`${tag}: a dropped event stream shows the machine's banner, then reconnects`, async () => {
        await page.route(machineRoute("events"), (route) => route.abort());
        await page.goto(`${base}/#/agents`);
        await page.reload();
        const banner = await page.waitForSelector(".banners .banner.down");
        if (!/stream down, reconnecting in \d+ s/.test(await banner.textContent())) throw new Error(`banner: ${await banner.textContent()}`);
        // What the daemon has is still shown, marked as possibly stale.
        await page.waitForSelector(`.agent-row[data-name="${name}"]`);
        await shot(page, `${tag}-12b-stream-down`);
        await page.unroute(machineRoute("events"));
        // The next attempt (about 1 s later; the backoff doubles from there) gets through.
        await page.waitForSelector(".banners .banner.down", { state: "detached" });
        await page.waitForSelector(".machine.status-up");
      });
    }

    if (viewport.offline) {
      await step(`${tag}: offline shell says the daemon is unreachable`, async () => {
        await page.evaluate(() => navigator.serviceWorker.ready);
        await page.reload();
        await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
        await context.setOffline(true);
        await page.reload();
        await page.waitForSelector("#unreachable");
        await shot(page, `${tag}-13-offline`);
        await context.setOffline(false);
        // Back online, a reload finds the daemon again.
        await page.reload();
        await page.waitForSelector(".machine.status-up");
      });
    }

    if (viewport.bench) {
      await step(`${tag}: 1000 agents on 10 machines stay responsive`, async () => {
        await page.goto(`${base}/#/agents`);
        await page.waitForSelector(".machine.status-up");
        const result = await page.evaluate(() => window.__celistra.bench(10, 100));
        const scroll = await page.evaluate(async () => {
          const list = document.querySelector(".vlist");
          const t0 = performance.now();
          list.scrollTop = list.scrollHeight;
          await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
          return { scrollRenderMs: performance.now() - t0, rowsInDom: document.querySelectorAll(".agent-row").length };
        });
        const filterMs = await page.evaluate(async () => {
          const input = document.querySelector("#fleet-filter");
          const t0 = performance.now();
          input.value = "shard 42";
          input.dispatchEvent(new Event("input"));
          await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
          return performance.now() - t0;
        });
        const bench = { ...result, ...scroll, filterMs };
        console.log(`BENCH ${JSON.stringify(bench)}`);
        await shot(page, `${tag}-14-bench`);
        if (result.agents !== 1000 || result.rowsInDom > 120 || scroll.rowsInDom > 120) throw new Error(`not virtualised: ${JSON.stringify(bench)}`);
        if (result.fullUpdateMs > 500 || result.changeUpdateMs > 500) throw new Error(`too slow: ${JSON.stringify(bench)}`);
      });
    }
    if (viewport.bench) {
      // The bench's rows (badges, every action) at the desktop width, then at the widest layout.
      await step(`${tag}: the agents table's header and rows share their columns; badges and actions fit`, async () => {
        const report = [];
        for (const width of [1280, 1440]) {
          await page.setViewportSize({ width, height: 800 });
          await page.waitForFunction((w) => window.innerWidth === w, width);
          await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
          const table = await page.evaluate(tableLayout);
          console.log(`TABLE ${width} ${JSON.stringify(table.measured)}`);
          await shot(page, `${tag}-15-table-${width}`);
          if (!table.measured.command) report.push(`${width} px: no command column`);
          report.push(...table.problems.map((p) => `${width} px: ${p}`));
        }
        await page.setViewportSize(viewport.options.viewport);
        if (report.length) throw new Error(report.join("\n"));
      });
    }
    // Chromium itself logs that a browser context (incognito-like) cannot subscribe to push; the
    // switch's message is checked in its own step.
    const ignored = /Failed to load resource|ERR_INTERNET_DISCONNECTED|net::|does not support the Push API in incognito/;
    if (consoleErrors.filter((e) => !ignored.test(e)).length) {
      throw new Error(`page errors: ${consoleErrors.join("\n")}`);
    }
  } finally {
    await context.close();
  }
}

/// Runs in the page: the agents table's geometry. Each header cell's left edge and width against
/// its column's cell in the first row (±1 px); every visible sandbox badge whole (or ellipsised with
/// a title) and inside its cell; every row button inside the actions cell and clear of the command
/// cell. Answers the problems found and what was measured.
function tableLayout() {
  const problems = [];
  const head = document.querySelector(".agents-head");
  const first = document.querySelector('.agent-row[aria-rowindex="2"]');
  if (!head || !first) return { problems: ["no header or no first row"], measured: {} };
  const measured = {};
  for (const header of head.querySelectorAll('[role="columnheader"]')) {
    const column = [...header.classList].find((c) => c.startsWith("col-"));
    const cell = first.querySelector(`.${column}`);
    const h = header.getBoundingClientRect();
    const c = cell?.getBoundingClientRect();
    if (!c || (h.width === 0) !== (c.width === 0)) {
      problems.push(`${column}: header ${h.width ? "shown" : "hidden"}, cell ${c?.width ? "shown" : "hidden"}`);
      continue;
    }
    if (h.width === 0) continue;
    measured[column.slice(4)] = [Math.round(h.left), Math.round(c.left)];
    if (Math.abs(h.left - c.left) > 1 || Math.abs(h.width - c.width) > 1) {
      problems.push(`${column}: header at ${h.left.toFixed(1)}+${h.width.toFixed(1)}, cell at ${c.left.toFixed(1)}+${c.width.toFixed(1)}`);
    }
  }
  const inside = (inner, outer) => inner.left >= outer.left - 1 && inner.right <= outer.right + 1;
  const meets = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  let badges = 0;
  for (const row of document.querySelectorAll(".agent-row")) {
    const name = row.dataset.name;
    for (const badge of row.querySelectorAll(".badge")) {
      if (badge.getClientRects().length === 0) continue;
      badges++;
      const whole = badge.scrollWidth <= badge.clientWidth;
      const ellipsis = getComputedStyle(badge).textOverflow === "ellipsis" && badge.title;
      if (!whole && !ellipsis) problems.push(`${name}: badge cut (${badge.scrollWidth} > ${badge.clientWidth}) without an ellipsis and a title`);
      if (!inside(badge.getBoundingClientRect(), row.querySelector(".col-name").getBoundingClientRect())) {
        problems.push(`${name}: badge reaches out of its cell, which cuts it`);
      }
    }
    const actions = row.querySelector(".col-actions").getBoundingClientRect();
    const command = row.querySelector(".col-command").getBoundingClientRect();
    for (const button of row.querySelectorAll(".col-actions button")) {
      if (button.getClientRects().length === 0) continue;
      const b = button.getBoundingClientRect();
      const label = button.getAttribute("aria-label");
      if (!inside(b, actions)) problems.push(`${label}: outside the actions cell (${b.left.toFixed(1)}..${b.right.toFixed(1)} in ${actions.left.toFixed(1)}..${actions.right.toFixed(1)})`);
      if (command.width && meets(b, command)) problems.push(`${label}: overlaps the command cell (${b.left.toFixed(1)} < ${command.right.toFixed(1)})`);
    }
  }
  measured.badges = badges;
  return { problems, measured };
}

/// A machine's route `/v1/{path}`, however it is addressed (`/v1/machines/{machine}/{path}` too);
/// one function, so that `unroute` finds it.
const machineRoutes = new Map();
function machineRoute(path) {
  if (!machineRoutes.has(path)) {
    const pattern = new RegExp(`^/v1/(machines/[^/]+/)?${path}$`);
    machineRoutes.set(path, (url) => pattern.test(url.pathname));
  }
  return machineRoutes.get(path);
}

/// Collects what must not happen on a page of a restricted session: page errors, console errors,
/// and any request the daemon refused (401, 403).
function watch(page) {
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("response", (r) => [401, 403].includes(r.status()) && problems.push(`${r.status()} ${r.request().method()} ${r.url()}`));
  return problems;
}

function noProblems(problems) {
  // Chromium itself logs that a browser context cannot subscribe to push (checked in its step).
  const real = problems.filter((p) => !/does not support the Push API in incognito/.test(p));
  if (real.length) throw new Error(`the page met errors or refusals:\n${real.join("\n")}`);
}

/// The views the navigation offers.
async function navViews(page) {
  return page.evaluate(() => [...document.querySelectorAll(".nav a")].map((a) => a.dataset.view).join(","));
}

/// Logs in with a `role` link of the HTTPS daemon; returns the origin.
async function roleLogin(page, context, role) {
  const link = loginLink(args["tls-home"], role);
  if (!link.startsWith("https://")) throw new Error(`the TLS daemon's link is ${link}`);
  await page.goto(link);
  await page.waitForSelector(`.role-chip[data-role="${role}"]`);
  const base = new URL(link).origin;
  const session = (await context.cookies(base)).find((c) => c.name === "celistra_session");
  if (!session?.secure || !session.httpOnly) throw new Error(`session cookie over HTTPS: ${JSON.stringify(session)}`);
  if ((await page.textContent(".role-chip")).trim() !== `Session role: ${role}`) throw new Error(`role shown: ${await page.textContent(".role-chip")}`);
  await page.waitForSelector(".machine.status-up");
  return base;
}

async function runViewer(browser) {
  const home = args["tls-home"];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const problems = watch(page);
  const name = "e2e-view-cat";
  try {
    const agent = await sock(home, "POST", "/v1/agents", { name, command: "cat", workspace: args["tls-work"] });
    let base;
    await step("https viewer: sees agents, no spawn button and no actions; approvals are not its", async () => {
      base = await roleLogin(page, context, "viewer");
      await page.waitForSelector(`.agent-row[data-name="${name}"][data-state="running"]`);
      if (await page.locator("text=+ Spawn agent").count()) throw new Error("a viewer has a spawn button");
      const actions = await page.evaluate((n) => [...document.querySelectorAll(`.agent-row[data-name="${n}"] .col-actions button`)].map((b) => b.getAttribute("aria-label")), name);
      if (actions.join() !== `Terminal of ${name}`) throw new Error(`a viewer's row actions: ${actions.join(", ")}`);
      const views = await navViews(page);
      if (views !== "agents,terminal,activity,history,settings") throw new Error(`a viewer's views: ${views}`);
      await shot(page, "https-viewer-1-agents");
      // An old link to approvals says why, and reads nothing.
      await page.goto(`${base}/#/approvals`);
      const note = await page.textContent(".role-note [role=status]");
      if (!/viewer session: this needs the approver role.*--role approver/.test(note)) throw new Error(`approvals for a viewer: ${note}`);
      await page.click('.nav a[data-view="settings"]');
      await page.waitForSelector(".settings-view");
      if (await page.locator("#push-toggle, .sessions").count()) throw new Error("a viewer has notification or session controls");
    });

    await step("https viewer: the terminal is read-only, says so, and typing sends nothing", async () => {
      const sent = [];
      page.on("websocket", (socket) => socket.on("framesent", (frame) => sent.push(frame.payload)));
      await page.goto(`${base}/#/agents`);
      await page.click(`[aria-label="Terminal of ${name}"]`);
      await page.waitForFunction(() => /^viewer · running/.test(document.querySelector(".term-status")?.textContent ?? ""));
      const badge = await page.textContent(".term-toolbar .badge.readonly");
      if (!/read-only/i.test(badge)) throw new Error(`read-only mark: ${badge}`);
      if (await page.locator("#term-readonly").count()) throw new Error("a viewer can switch read-only off");
      if (await page.isVisible(".screen-keys")) throw new Error("a viewer has on-screen keys");
      const typed = `typed-by-viewer-${Date.now() % 100000}`;
      await page.click(".term-host:not([hidden]) .xterm");
      await page.keyboard.type(typed);
      await page.keyboard.press("Enter");
      // A writer (the test, as the owner) then types a line: once its echo and cat's copy are on the
      // viewer's screen, anything the viewer had sent would be there before it.
      const sentinel = `sentinel-${Date.now() % 100000}`;
      const ticket = await sock(home, "POST", `/v1/agents/${agent.id}/terminal/tickets`, { role: "writer" });
      const writer = await context.newPage();
      await writer.goto(`${base}/manifest.webmanifest`);
      await writer.evaluate(
        ({ path, line }) =>
          new Promise((resolve, reject) => {
            const url = new URL(path, location.href);
            url.protocol = "wss:";
            const socket = new WebSocket(url, "celistra.terminal.v1");
            socket.onmessage = (m) => {
              if (typeof m.data === "string" && JSON.parse(m.data).type === "hello") {
                socket.send(new TextEncoder().encode(`${line}\r`));
                resolve();
              }
            };
            socket.onerror = () => reject(new Error("the writer's socket failed"));
          }),
        { path: ticket.path, line: sentinel },
      );
      await page.waitForFunction((m) => (document.querySelector(".term-host:not([hidden]) .xterm-rows")?.textContent ?? "").split(m).length - 1 >= 2, sentinel);
      await writer.close();
      await shot(page, "https-viewer-2-terminal");
      if ((await terminalText(page)).includes(typed)) throw new Error("the viewer's typing reached the agent");
      // The saved output lags the live screen by the history writer's batching: wait for the
      // sentinel there; what the viewer typed, had it been sent, would be saved before it.
      const log = await until(async () => {
        const text = await sock(home, "GET", `/v1/agents/${agent.id}/logs?format=text`);
        return text.includes(sentinel) && text;
      }, "the sentinel in the agent's saved output");
      if (log.includes(typed)) throw new Error(`the agent's output: ${log}`);
      if (sent.length) throw new Error(`the viewer's page sent ${sent.length} frame(s): ${sent.map(String).join(" | ")}`);
      noProblems(problems);
    });

    await step("https viewer: a refusal the page meets anyway is said in words, and the page goes on", async () => {
      // As if the daemon's rules had changed under the page: its history read is refused.
      const before = problems.length;
      await page.route(machineRoute("history"), (route) =>
        route.fulfill({
          status: 403,
          contentType: "application/json",
          body: JSON.stringify({ code: "role_required", message: "reading runs needs the owner role", required_role: "owner" }),
        }),
      );
      await page.click('.nav a[data-view="history"]');
      const toast = await page.waitForSelector(".toast.error");
      if (!/viewer session: this needs the owner role.*ctl dashboard --role owner/.test(await toast.textContent())) throw new Error(`refusal: ${await toast.textContent()}`);
      await shot(page, "https-viewer-3-refused");
      await page.unroute(machineRoute("history"));
      // Only the injected refusal was met; the page still works.
      problems.splice(before, problems.length - before, ...problems.slice(before).filter((p) => !/\/history\?|status of 403/.test(p)));
      await page.click('.nav a[data-view="agents"]');
      await page.waitForSelector(`.agent-row[data-name="${name}"]`);
      noProblems(problems);
    });
  } finally {
    await context.close();
  }
}

async function runOperator(browser) {
  const home = args["tls-home"];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const problems = watch(page);
  const name = "e2e-op-cat";
  try {
    await step("https operator: agent settings without the owner's spec; environment values stay hidden and kept", async () => {
      const agent = await sock(home, "POST", "/v1/agents", { name, command: "cat", workspace: args["tls-work"], env: { TOKEN: "s3cret-value" } });
      await roleLogin(page, context, "operator");
      await page.waitForSelector(`.agent-row[data-name="${name}"]`);
      if (!(await page.isVisible("text=+ Spawn agent"))) throw new Error("an operator has no spawn button");
      const views = await navViews(page);
      if (views !== "agents,terminal,approvals,activity,history,settings") throw new Error(`an operator's views: ${views}`);
      await page.click(`[aria-label="Settings of ${name}"]`);
      await page.waitForSelector("#settings-env");
      const hint = await page.textContent("#settings-env-hint");
      if (!hint.includes("TOKEN") || (await page.inputValue("#settings-env")) !== "" || (await page.content()).includes("s3cret-value")) {
        throw new Error(`the form shows environment values to an operator: ${hint}`);
      }
      await page.check("#settings-auto");
      await shot(page, "https-operator-1-settings");
      await page.click('dialog button[type="submit"]');
      await page.waitForSelector("dialog", { state: "detached" });
      const spec = await sock(home, "GET", `/v1/agents/${agent.id}/spec`);
      if (spec.auto_restart !== true || spec.env?.TOKEN !== "s3cret-value" || spec.command !== "cat") throw new Error(`spec after an operator's save: ${JSON.stringify(spec)}`);
      await page.click('.nav a[data-view="settings"]');
      await page.waitForSelector(".settings-view #push-toggle");
      if (await page.locator(".sessions").count()) throw new Error("an operator sees the sessions");
      noProblems(problems);
    });
  } finally {
    await context.close();
  }
}

async function runApprover(browser) {
  const home = args["tls-home"];
  const context = await browser.newContext({ viewport: { width: 360, height: 780 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: "dark" });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const problems = watch(page);
  try {
    await step("https approver on a phone: approvals only", async () => {
      await roleLogin(page, context, "approver");
      await page.waitForSelector(".approvals-view");
      const views = await navViews(page);
      if (views !== "approvals,settings") throw new Error(`an approver's views: ${views}`);
      if (await page.locator(".agents-view, #fleet-filter, .terminal-view").count()) throw new Error("an approver sees agents or terminals");
      await shot(page, "https-approver-1-approvals");
    });

    await step("https approver: approves a real request by press-and-hold, and the agent goes on", async () => {
      const prompt = "ship the https build";
      const agent = await sock(home, "POST", "/v1/agents", { name: "e2e-ask-approver", command: `${args.bin} ask '${prompt}' --ttl 120`, workspace: args["tls-work"] });
      const card = `.card.pending:has(.prompt:text-is("${prompt}"))`;
      await page.waitForSelector(card);
      const box = await page.locator(`${card} [data-action="approve"]`).boundingBox();
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await page.mouse.down();
      const decided = await page.waitForSelector(`.card.approved:has(.prompt:text-is("${prompt}"))`);
      await page.mouse.up();
      if (!/by session:se-[0-9a-f]{12} via dashboard/.test(await decided.textContent())) throw new Error(`decider: ${await decided.textContent()}`);
      await shot(page, "https-approver-2-approved");
      await until(async () => (await sock(home, "GET", `/v1/agents/${agent.id}`)).exit_code === 0, "the asking agent to exit 0");
    });

    await step("https approver: this device can ask for notifications, and shows no owner controls", async () => {
      await page.click('.nav a[data-view="settings"]');
      await page.waitForSelector(".settings-view #push-toggle");
      if (await page.locator(".sessions").count()) throw new Error("an approver sees the sessions");
      await page.click("#push-toggle");
      await page.waitForFunction(() => /Cannot turn notifications on: .+/.test(document.querySelector(".settings-view [role=status]")?.textContent ?? ""));
      await shot(page, "https-approver-3-device");
      noProblems(problems);
    });
  } finally {
    await context.close();
  }
}

/// The fleet: the HTTP daemon is a hub (`--hub-name`), the node (`--node-home`) joined it.
async function runFleet(browser) {
  const hub = args["hub-name"];
  const node = args["node-name"];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const problems = watch(page);
  // While the node is selected, every request of a machine's route must name it.
  const unaddressed = [];
  let onNode = false;
  page.on("request", (r) => {
    const path = new URL(r.url()).pathname;
    if (onNode && /^\/v1\/(agents|history|logs|audit|events|approvals|usage|sandbox|health)\b/.test(path)) unaddressed.push(`${r.method()} ${path}`);
  });
  const hubAgent = "e2e-fleet-on-hub";
  const nodeAgent = "e2e-fleet-on-node";
  const machine = (name) => `.machines .machine[data-machine="${name}"]`;
  const marker = `fleet-${Date.now() % 100000}`;
  let base;
  try {
    await sock(args.home, "POST", "/v1/agents", { name: hubAgent, command: "cat", workspace: args.work });

    await step("fleet: the sidebar lists the hub and the node from /v1/machines, online, the hub selected", async () => {
      const link = loginLink();
      base = new URL(link).origin;
      await page.goto(link);
      await page.waitForSelector(`${machine(hub)}[aria-pressed="true"].status-up`);
      await page.waitForSelector(`${machine(node)}[aria-pressed="false"][data-online="true"]`);
      const names = await page.evaluate(() => [...document.querySelectorAll(".machines .machine")].map((b) => b.dataset.machine).join(","));
      if (names !== `${hub},${node}`) throw new Error(`the sidebar lists ${names}`);
      if (await page.locator(".machines .badge.tampered").count()) throw new Error("an audit log is flagged tampered");
      await page.waitForSelector(`.agent-row[data-name="${hubAgent}"]`);
      await shot(page, "fleet-1-hub");
    });

    await step("fleet: selecting the node shows its agents, is remembered, and the spawn form spawns there", async () => {
      await page.click(machine(node));
      onNode = true;
      await page.waitForSelector(`${machine(node)}[aria-pressed="true"].status-up`);
      await page.waitForSelector(`.agent-row[data-name="${hubAgent}"]`, { state: "detached" });
      await page.reload();
      await page.waitForSelector(`${machine(node)}[aria-pressed="true"].status-up`);
      await page.click("text=+ Spawn agent");
      const title = await page.textContent("dialog");
      if (!title.includes(`on ${node}`)) throw new Error(`the spawn form does not name the node: ${title.slice(0, 80)}`);
      await page.fill("#spawn-command", "cat");
      await page.fill("#spawn-name", nodeAgent);
      await page.fill("#spawn-workspace", args["node-work"]);
      await page.click("dialog button[type=submit]");
      await page.waitForSelector(`.agent-row[data-name="${nodeAgent}"][data-state="running"]`);
      const nodeAgents = await sock(args["node-home"], "GET", "/v1/agents");
      const hubAgents = await sock(args.home, "GET", "/v1/agents");
      if (!nodeAgents.some((a) => a.name === nodeAgent)) throw new Error("the agent is not on the node");
      if (hubAgents.some((a) => a.name === nodeAgent)) throw new Error("the agent was spawned on the hub");
      await page.waitForFunction((n) => /1\/1 running/.test(document.querySelector(`.machines .machine[data-machine="${n}"] .machine-counts`)?.textContent ?? ""), node);
      await shot(page, "fleet-2-node");
    });

    await step("fleet: the node's terminal through the hub echoes what is typed", async () => {
      await page.click(`[aria-label="Terminal of ${nodeAgent}"]`);
      await page.waitForFunction(() => /writer/.test(document.querySelector(".term-status")?.textContent ?? ""));
      await page.click(".term-host:not([hidden]) .xterm");
      await page.keyboard.type(marker);
      await page.keyboard.press("Enter");
      await page.waitForFunction(
        (m) => (document.querySelector(".term-host:not([hidden]) .xterm-rows")?.textContent ?? "").split(m).length - 1 >= 2,
        marker,
      );
      await shot(page, "fleet-3-terminal");
    });

    await step("fleet: the node's history, logs and activity", async () => {
      await page.click('.nav a[data-view="history"]');
      await page.fill("#history-agent", nodeAgent);
      // The saved output lags the screen by the history writer's batching: ask again until it is there.
      await until(async () => {
        await page.click('.history-view button[type="submit"]');
        await page.waitForTimeout(200);
        return page.evaluate((m) => (document.querySelector(".log-output")?.textContent ?? "").includes(m), marker);
      }, "the node agent's saved output");
      await page.waitForSelector(`.runs-table td:has-text("${nodeAgent}")`);
      await page.fill("#history-agent", "");
      await page.fill("#history-grep", marker);
      await page.click('.history-view button[type="submit"]');
      await page.waitForFunction((m) => /ag-[a-z0-9]+ /.test(document.querySelector(".log-output")?.textContent ?? "") && (document.querySelector(".log-output")?.textContent ?? "").includes(m), marker);
      await shot(page, "fleet-4-history");
      // The node's audit log: it joined the hub; the hub's own (which minted the code) is not shown.
      await page.click('.nav a[data-view="activity"]');
      await page.waitForSelector('.entry[data-action="fleet_joined"]');
      await page.waitForSelector('.entry[data-action^="agent_spawn"]');
      if (await page.locator('.entry[data-action="pairing_code_created"]').count()) throw new Error("the node's activity shows the hub's entries");
      await shot(page, "fleet-5-activity");
    });

    await step("fleet: back on the hub, its own agents and activity, and the node's terminal closed", async () => {
      onNode = false;
      if (unaddressed.length) throw new Error(`requests for the node not addressed to it: ${[...new Set(unaddressed)].join(", ")}`);
      await page.click(machine(hub));
      await page.waitForSelector(`${machine(hub)}[aria-pressed="true"].status-up`);
      await page.waitForSelector('.entry[data-action="pairing_code_created"]');
      if (await page.locator('.entry[data-action="fleet_joined"]').count()) throw new Error("the hub's activity shows the node's entries");
      await page.click('.nav a[data-view="agents"]');
      await page.waitForSelector(`.agent-row[data-name="${hubAgent}"]`);
      if (await page.locator(`.agent-row[data-name="${nodeAgent}"]`).count()) throw new Error("the hub's agents list shows the node's agent");
      await page.click('.nav a[data-view="terminal"]');
      if (await page.locator(`.term-host[data-agent]`).count()) throw new Error("the node's terminal stayed open");
      await shot(page, "fleet-6-back-on-hub");
      noProblems(problems);
    });

    await step("fleet: a node that stops is shown offline, and its views say so in the hub's words", async () => {
      await page.click('.nav a[data-view="agents"]');
      await page.click(machine(node));
      await page.waitForSelector(`${machine(node)}[aria-pressed="true"].status-up`);
      await page.waitForSelector(`.agent-row[data-name="${nodeAgent}"]`);
      const { pid } = await sock(args["node-home"], "GET", "/v1/health");
      process.kill(pid, "SIGTERM");
      await page.waitForSelector(`${machine(node)}[data-online="false"].status-offline`);
      const banner = await page.waitForSelector(`.banners .banner.offline[data-machine="${node}"]`);
      const said = await banner.textContent();
      if (!said.includes(`${node} is offline`) || said.length < `${node} is offline. `.length + 5) throw new Error(`offline banner: ${said}`);
      if (await page.locator(`.agent-row[data-name="${nodeAgent}"]`).count()) throw new Error("an offline machine's agents are shown as if live");
      await page.click('.nav a[data-view="history"]');
      await page.click('.history-view button[type="submit"]');
      await page.waitForSelector(".history-view .machine-offline");
      await shot(page, "fleet-7-node-offline");
      // The hub is still there.
      await page.click(machine(hub));
      await page.waitForSelector(`${machine(hub)}[aria-pressed="true"].status-up`);
      await page.waitForSelector(".banners .banner.offline", { state: "detached" });
    });
  } finally {
    await context.close();
  }
}

/// Chromium's `--ignore-certificate-errors-spki-list` value for the HTTPS daemon's certificate,
/// checked against the fingerprint its `/v1/health` announces.
async function tlsSpki() {
  const certificate = new X509Certificate(readFileSync(join(args["tls-home"], "tls-cert.pem")));
  const health = await sock(args["tls-home"], "GET", "/v1/health");
  const announced = health.tls?.fingerprint_sha256?.replace(/:/g, "").toLowerCase();
  if (certificate.fingerprint256.replace(/:/g, "").toLowerCase() !== announced) {
    throw new Error(`tls-cert.pem is not the certificate /v1/health announces (${announced})`);
  }
  return createHash("sha256").update(certificate.publicKey.export({ type: "spki", format: "der" })).digest("base64");
}

const spki = args["tls-home"] ? await tlsSpki() : null;
const browser = await chromium.launch({
  executablePath: browserPath,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", ...(spki ? [`--ignore-certificate-errors-spki-list=${spki}`] : [])],
});
let exitCode = 0;
try {
  await run(browser, { name: "desktop", signal: "KILL", offline: true, bench: true, more: true, options: { viewport: { width: 1280, height: 800 }, colorScheme: "light" } });
  await run(browser, {
    name: "phone",
    signal: "TERM",
    // The narrowest phone the dashboard is made for, in the dark.
    options: { viewport: { width: 360, height: 780 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: "dark" },
  });
  if (args["tls-home"]) {
    await runViewer(browser);
    await runOperator(browser);
    await runApprover(browser);
  }
  if (args["node-home"]) await runFleet(browser);
} catch (error) {
  // A failed step printed itself; anything else (page errors) is said here.
  if (!/^FAIL /.test(results.at(-1) ?? "")) console.log(`FAIL ${error.stack ?? error}`);
  exitCode = 1;
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(exitCode);
