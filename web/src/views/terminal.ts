// Terminals: one xterm.js per tab on the shared-terminal protocol (docs/terminal-protocol.md):
// a single-use ticket, the `celistra.terminal.v1` WebSocket, binary output and input, JSON control
// messages, fit to the window, a read-only (viewer) toggle, and reconnection with backoff and a
// fresh ticket. On touch screens a row of keys gives Esc, Ctrl, Tab and the arrows. A session that
// may not write (a viewer) gets viewer tickets only, no input at all, and says so.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { api, ApiError, on } from "../api";
import { clear, h } from "../dom";
import { can } from "../role";
import { store, type Machine } from "../store";

interface Ticket {
  path: string;
}

const PROTOCOL = "celistra.terminal.v1";

class TermTab {
  readonly term: Terminal;
  readonly fit = new FitAddon();
  readonly element: HTMLElement;
  readonly status: HTMLElement;
  private socket: WebSocket | null = null;
  private backoff = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  /// This session may not write to terminals (it is a viewer): read-only for good.
  readonly locked = !can("operator");
  readOnly = this.locked;
  ctrl = false;
  private readonly encoder = new TextEncoder();

  constructor(
    readonly machine: Machine,
    readonly agentId: string,
    readonly name: string,
  ) {
    this.term = new Terminal({
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
      fontSize: 14,
      scrollback: 5000,
      theme: { background: "#0b1120" },
      screenReaderMode: false,
      // Nothing typed is even taken when the session cannot write.
      disableStdin: this.locked,
      cursorBlink: !this.locked,
    });
    this.term.loadAddon(this.fit);
    this.status = h("span", { class: "term-status", role: "status", "aria-live": "polite" }, "connecting…");
    this.element = h("div", { class: "term-host", "data-agent": agentId });
    this.term.onData((data) => this.input(data));
    this.term.onBinary((data) => this.send(new Uint8Array(Array.from(data, (c) => c.charCodeAt(0)))));
    this.term.onResize(({ cols, rows }) => {
      if (!this.readOnly && this.socket?.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify({ type: "resize", cols, rows }));
      }
    });
  }

  mount(): void {
    if (!this.term.element) {
      this.term.open(this.element);
      new ResizeObserver(() => this.fitNow()).observe(this.element);
      void this.connect();
    }
    this.fitNow();
  }

  fitNow(): void {
    if (this.element.offsetParent === null || this.readOnly) return;
    try {
      this.fit.fit();
    } catch {
      /* not laid out yet */
    }
  }

  /// Typed input: applies a pending on-screen Ctrl, then sends.
  input(data: string): void {
    if (this.ctrl && data.length === 1) {
      const code = data.toUpperCase().charCodeAt(0);
      if (code >= 64 && code < 96) data = String.fromCharCode(code - 64);
      this.ctrl = false;
      document.dispatchEvent(new CustomEvent("celistra-ctrl", { detail: false }));
    }
    this.send(this.encoder.encode(data));
  }

  private send(bytes: Uint8Array<ArrayBuffer>): void {
    if (this.readOnly) {
      this.setStatus("read-only: input is not sent");
      return;
    }
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  private setStatus(text: string): void {
    this.status.textContent = text;
  }

  async connect(): Promise<void> {
    if (this.closed) return;
    this.setStatus("connecting…");
    let ticket: Ticket;
    try {
      ticket = await api<Ticket>("POST", on(`/v1/agents/${encodeURIComponent(this.agentId)}/terminal/tickets`, this.machine.name), {
        role: this.readOnly ? "viewer" : "writer",
      });
    } catch (e) {
      this.setStatus(`cannot attach: ${(e as Error).message}`);
      // A refused role stays refused: say so and stop; anything else may pass on a retry.
      if (!(e instanceof ApiError && e.code === "role_required")) this.retry();
      return;
    }
    // The ticket's path is the machine's own (`/v1/agents/{agent}/terminal?ticket=…`): addressed to
    // the machine like every other path, so a hub splices it through to the machine.
    const url = new URL(on(ticket.path, this.machine.name), location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url, PROTOCOL);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) {
        this.term.write(new Uint8Array(message.data));
        return;
      }
      this.control(String(message.data));
    };
    socket.onopen = () => {
      this.backoff = 0;
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === 1000) {
        this.setStatus("the agent was removed");
        return;
      }
      this.retry();
    };
  }

  private control(text: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    switch (message.type) {
      case "hello": {
        this.term.reset();
        const size = message.size as { cols: number; rows: number };
        if (this.readOnly) this.term.resize(size.cols, size.rows);
        else this.fitNow();
        this.setStatus(`${this.readOnly ? "viewer" : "writer"} · ${String(message.state)} · run ${String(message.run)}`);
        if (!this.readOnly && this.socket) {
          this.socket.send(JSON.stringify({ type: "resize", cols: this.term.cols, rows: this.term.rows }));
        }
        break;
      }
      case "resync":
        this.term.reset();
        break;
      case "size":
        if (this.readOnly) this.term.resize(Number(message.cols), Number(message.rows));
        break;
      case "exit": {
        const how = message.exit_signal ? `signal ${String(message.exit_signal)}` : `code ${String(message.exit_code)}`;
        this.term.write(`\r\n\x1b[7m[run ${String(message.run)} exited: ${how}]\x1b[0m\r\n`);
        this.setStatus(`exited: ${how}`);
        break;
      }
      case "restarted":
        this.term.write(`\r\n\x1b[7m[run ${String(message.run)} started]\x1b[0m\r\n`);
        this.setStatus(`${this.readOnly ? "viewer" : "writer"} · running · run ${String(message.run)}`);
        break;
      case "error":
        this.setStatus(String(message.message));
        break;
    }
  }

  private retry(): void {
    if (this.closed) return;
    this.backoff = this.backoff ? Math.min(this.backoff * 2, 5000) : 250;
    const delay = Math.round(this.backoff * (0.8 + Math.random() * 0.4));
    this.setStatus(`disconnected; reconnecting in ${Math.ceil(delay / 1000)} s`);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  setReadOnly(readOnly: boolean): void {
    this.readOnly = readOnly || this.locked;
    this.reconnectNow();
  }

  reconnectNow(): void {
    if (this.timer) clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
    void this.connect();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close(1000);
    this.term.dispose();
  }
}

const KEYS: [string, string, string][] = [
  ["Esc", "\x1b", "Escape"],
  ["Tab", "\t", "Tab"],
  ["↑", "\x1b[A", "Up arrow"],
  ["↓", "\x1b[B", "Down arrow"],
  ["←", "\x1b[D", "Left arrow"],
  ["→", "\x1b[C", "Right arrow"],
  ["^C", "\x03", "Control C"],
];

export class TerminalView {
  readonly element: HTMLElement;
  private readonly tabs: TermTab[] = [];
  private active: TermTab | null = null;
  private readonly tabBar: HTMLElement;
  private readonly body: HTMLElement;
  private readonly toolbar: HTMLElement;
  private readonly ctrlButton: HTMLButtonElement;
  private readonly keys: HTMLElement;

  constructor() {
    this.tabBar = h("div", { class: "term-tabs", role: "tablist", "aria-label": "Open terminals" });
    this.body = h("div", { class: "term-body" });
    this.toolbar = h("div", { class: "term-toolbar" });
    this.ctrlButton = h("button", { type: "button", class: "key", "aria-pressed": "false", "aria-label": "Control (applies to the next key)" }, "Ctrl");
    this.ctrlButton.addEventListener("click", () => {
      if (!this.active) return;
      this.active.ctrl = !this.active.ctrl;
      this.ctrlButton.setAttribute("aria-pressed", String(this.active.ctrl));
      this.active.term.focus();
    });
    document.addEventListener("celistra-ctrl", () => this.ctrlButton.setAttribute("aria-pressed", "false"));
    const keys = (this.keys = h(
      "div",
      { class: "screen-keys", role: "toolbar", "aria-label": "Terminal keys", hidden: !can("operator") },
      KEYS.slice(0, 2).map(([label, seq, aria]) => this.keyButton(label, seq, aria)),
      this.ctrlButton,
      KEYS.slice(2).map(([label, seq, aria]) => this.keyButton(label, seq, aria)),
    ));
    this.element = h(
      "section",
      { class: "view terminal-view", "aria-labelledby": "terminal-title" },
      h("div", { class: "toolbar" }, h("h1", { id: "terminal-title" }, "Terminals"), this.toolbar),
      this.tabBar,
      this.body,
      keys,
    );
    this.renderEmpty();
    // Terminals follow the selected machine: another machine's are closed when it is left.
    store.subscribe((what) => {
      if (what.has("selected")) for (const tab of this.tabs.filter((t) => t.machine.name !== store.selected)) this.closeTab(tab);
    });
  }

  private keyButton(label: string, sequence: string, aria: string): HTMLElement {
    return h(
      "button",
      {
        type: "button",
        class: "key",
        "aria-label": aria,
        onclick: () => {
          this.active?.input(sequence);
          this.active?.term.focus();
        },
      },
      label,
    );
  }

  private renderEmpty(): void {
    if (this.tabs.length === 0) {
      clear(this.body, h("p", { class: "empty" }, "No terminal open. Open one from an agent's ⌨ button."));
      clear(this.toolbar);
    }
  }

  open(machine: Machine, agentId: string, name: string): void {
    let tab = this.tabs.find((t) => t.machine.name === machine.name && t.agentId === agentId);
    if (!tab) {
      tab = new TermTab(machine, agentId, name);
      this.tabs.push(tab);
    }
    this.select(tab);
  }

  /// Fits the visible terminal (after the view is shown again).
  shown(): void {
    this.active?.mount();
  }

  private select(tab: TermTab): void {
    this.active = tab;
    if (!this.body.contains(tab.element)) {
      if (this.tabs.length === 1 || this.body.querySelector(".empty")) clear(this.body);
      this.body.append(tab.element);
    }
    for (const t of this.tabs) t.element.hidden = t !== tab;
    this.renderTabs();
    const readOnly = h("input", { type: "checkbox", id: "term-readonly" });
    readOnly.checked = tab.readOnly;
    readOnly.addEventListener("change", () => tab.setReadOnly(readOnly.checked));
    clear(
      this.toolbar,
      tab.status,
      tab.locked
        ? h("span", { class: "badge readonly", "data-readonly": "locked", title: "This session is a viewer: it sees the terminal and cannot type into it" }, "Read-only: viewer session")
        : h("span", { class: "check" }, readOnly, h("label", { for: "term-readonly" }, "Read-only")),
      h("button", { type: "button", onclick: () => tab.reconnectNow() }, "Reconnect"),
    );
    this.keys.hidden = tab.locked;
    requestAnimationFrame(() => {
      tab.mount();
      tab.term.focus();
    });
  }

  private renderTabs(): void {
    clear(
      this.tabBar,
      this.tabs.map((tab) =>
        h(
          "div",
          { class: "term-tab" },
          h(
            "button",
            {
              type: "button",
              role: "tab",
              "aria-selected": String(tab === this.active),
              onclick: () => this.select(tab),
            },
            tab.name,
          ),
          h(
            "button",
            {
              type: "button",
              class: "icon",
              "aria-label": `Close terminal of ${tab.name}`,
              onclick: () => this.closeTab(tab),
            },
            "×",
          ),
        ),
      ),
    );
  }

  private closeTab(tab: TermTab): void {
    tab.close();
    tab.element.remove();
    this.tabs.splice(this.tabs.indexOf(tab), 1);
    if (this.active === tab) this.active = null;
    const next = this.tabs[this.tabs.length - 1];
    if (next) this.select(next);
    else {
      this.renderTabs();
      this.renderEmpty();
    }
  }
}
