/**
 * Server streams that stay open: each panel's stream reconnects after an
 * error or an end (the mesh restarting, a proxy timing out) with a short,
 * growing backoff, and says which state it is in.
 */
import { badge, h } from "./dom.js";
import { errorText } from "./format.js";

export type StreamState =
  | { readonly kind: "connecting" }
  | { readonly kind: "live" }
  | { readonly kind: "disconnected"; readonly reason: string; readonly retryAt: number }
  | { readonly kind: "stopped" };

export interface StreamOptions<T> {
  /** Opens the stream; aborting the signal closes it. */
  readonly open: (signal: AbortSignal) => AsyncIterable<T>;
  /** Every message, in order. */
  readonly onMessage: (message: T) => void;
  /** Before each (re)connection: the stream will send its snapshot again. */
  readonly onConnect?: () => void;
  readonly onState: (state: StreamState) => void;
}

/** First wait after a failure; doubled per failure in a row, up to the maximum. */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;

const wait = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** Keeps a stream open until `stop()`. */
export const keepStreaming = <T>(options: StreamOptions<T>): { stop: () => void } => {
  const stopped = new AbortController();
  const run = async () => {
    let backoff = BACKOFF_MIN_MS;
    while (!stopped.signal.aborted) {
      options.onState({ kind: "connecting" });
      options.onConnect?.();
      let reason = "the stream ended";
      try {
        let first = true;
        for await (const message of options.open(stopped.signal)) {
          if (first) {
            first = false;
            backoff = BACKOFF_MIN_MS;
            options.onState({ kind: "live" });
          }
          options.onMessage(message);
        }
      } catch (e) {
        reason = errorText(e);
      }
      if (stopped.signal.aborted) break;
      // Jitter, so that many consoles do not all come back at the same instant.
      const delay = backoff * (0.8 + Math.random() * 0.4);
      options.onState({ kind: "disconnected", reason, retryAt: Date.now() + delay });
      await wait(delay, stopped.signal);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
    options.onState({ kind: "stopped" });
  };
  void run();
  return { stop: () => stopped.abort() };
};

/** A badge that shows a stream's state; the reason of a disconnection is its tooltip. */
export const streamBadge = (name: string) => {
  const root = h("span", { class: "stream", "data-stream": name });
  const set = (state: StreamState) => {
    root.dataset.state = state.kind;
    switch (state.kind) {
      case "connecting":
        root.replaceChildren(badge("connecting", "warn"));
        root.title = `${name}: connecting`;
        return;
      case "live":
        root.replaceChildren(badge("live", "ok"));
        root.title = `${name}: streaming`;
        return;
      case "disconnected": {
        const seconds = Math.max(1, Math.round((state.retryAt - Date.now()) / 1000));
        root.replaceChildren(badge("disconnected", "bad"));
        root.title = `${name}: ${state.reason} (retrying in ${seconds} s)`;
        return;
      }
      case "stopped":
        root.replaceChildren(badge("closed", "muted"));
        root.title = `${name}: closed`;
        return;
    }
  };
  set({ kind: "connecting" });
  return { root, set };
};
