// A Server-Sent Events stream that stays up: on an error it closes, waits (1 s, doubling to 30 s,
// with jitter) and reopens from the last event id it saw; `onStatus` tells the UI when it is down.

export type StreamStatus = "connecting" | "up" | "down";

export interface StreamOptions {
  url: (lastId: string | null) => string;
  events: string[];
  onEvent: (type: string, data: string, id: string | null) => void;
  onStatus: (status: StreamStatus, retryInMs?: number) => void;
  onOpen?: () => void;
}

export const BACKOFF_FIRST_MS = 1000;
export const BACKOFF_MAX_MS = 30_000;

export function nextBackoff(previousMs: number): number {
  return previousMs === 0 ? BACKOFF_FIRST_MS : Math.min(previousMs * 2, BACKOFF_MAX_MS);
}

export class Stream {
  private source: EventSource | null = null;
  private lastId: string | null = null;
  private backoff = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;

  constructor(private readonly options: StreamOptions) {
    this.open();
  }

  private open(): void {
    if (this.closed) return;
    this.options.onStatus("connecting");
    const source = new EventSource(this.options.url(this.lastId));
    this.source = source;
    source.onopen = () => {
      this.backoff = 0;
      this.options.onStatus("up");
      this.options.onOpen?.();
    };
    for (const type of this.options.events) {
      source.addEventListener(type, (e) => {
        const message = e as MessageEvent<string>;
        if (message.lastEventId) this.lastId = message.lastEventId;
        this.options.onEvent(type, message.data, message.lastEventId || null);
      });
    }
    source.onerror = () => {
      source.close();
      if (this.source !== source || this.closed) return;
      this.backoff = nextBackoff(this.backoff);
      const delay = Math.round(this.backoff * (0.8 + Math.random() * 0.4));
      this.options.onStatus("down", delay);
      this.timer = setTimeout(() => this.open(), delay);
    };
  }

  /// Reconnect now (the user pressed "retry").
  retry(): void {
    if (this.timer) clearTimeout(this.timer);
    this.source?.close();
    this.open();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.source?.close();
  }
}
