/**
 * Reads a V8 CPU profile (`node --cpu-prof`) of the mesh and says where its
 * time went while the profiled load ran: self time by area (a package, a
 * directory of src/, Node's own modules, the garbage collector) and by
 * function. Samples outside the load's window (start-up, shutdown) are left
 * out; both clocks are CLOCK_MONOTONIC.
 */
import { existsSync, readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { fileURLToPath } from "node:url";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame }>;
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Milliseconds sampled inside the window. */
  readonly windowMs: number;
  /** Share of the window the mesh's main thread was busy (not idle). */
  readonly busy: number;
  /** Self time by area, as shares of the busy time. */
  readonly areas: ReadonlyArray<{ readonly area: string; readonly share: number }>;
  /** Self time by function, as shares of the busy time. */
  readonly functions: ReadonlyArray<{ readonly fn: string; readonly share: number }>;
}

const area = (functionName: string, url: string): string => {
  if (url === "") {
    if (functionName === "(garbage collector)") return "garbage collector";
    if (functionName === "(program)") return "V8 and native code";
    return functionName === "(idle)" ? "idle" : `native: ${functionName}`;
  }
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg?.[1]) return pkg[1];
  if (url.startsWith("node:")) {
    const parts = url.slice("node:".length).split("/");
    return `node:${parts[0] === "internal" ? (parts[1] ?? "internal") : parts[0]}`;
  }
  const own = /\/(src|gen|bench)\/(?:([^/]+)\/)?/.exec(url);
  if (own?.[1]) return own[2] === undefined ? own[1] : `${own[1]}/${own[2]}`;
  return "other";
};

const where = (url: string, line: number) =>
  `${url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*?\/(src|gen|bench)\//, "$1/")}:${line + 1}`;

/**
 * The frame as its source has it, for bundled code with a source map next to
 * it (the mesh runs `dist/mesh/main.js`, scripts/build-mesh.ts).
 */
const sourceFrames = () => {
  const maps = new Map<string, SourceMap | undefined>();
  const mapOf = (url: string) => {
    if (!maps.has(url)) {
      const file = `${fileURLToPath(url)}.map`;
      maps.set(
        url,
        existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, "utf8"))) : undefined,
      );
    }
    return maps.get(url);
  };
  return (frame: CallFrame): CallFrame => {
    if (!frame.url.startsWith("file:") || frame.url.includes("/node_modules/")) return frame;
    const entry = mapOf(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
    if (entry === undefined || !("originalSource" in entry)) return frame;
    return {
      functionName: frame.functionName,
      url: new URL(entry.originalSource, frame.url).href,
      lineNumber: entry.originalLine,
      columnNumber: entry.originalColumn,
    };
  };
};

export const summarizeProfile = (
  file: string,
  window: readonly [number, number],
  top = 15,
): ProfileSummary => {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const source = sourceFrames();
  const byId = new Map(profile.nodes.map((n) => [n.id, source(n.callFrame)]));
  const areas = new Map<string, number>();
  const functions = new Map<string, number>();
  let time = profile.startTime;
  let total = 0;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    time += delta;
    if (time < window[0] || time > window[1]) continue;
    const frame = byId.get(profile.samples[i] as number);
    if (frame === undefined) continue;
    total += delta;
    const a = area(frame.functionName, frame.url);
    if (a === "idle") {
      idle += delta;
      continue;
    }
    areas.set(a, (areas.get(a) ?? 0) + delta);
    const fn =
      frame.url === ""
        ? frame.functionName
        : `${frame.functionName || "(anonymous)"} ${where(frame.url, frame.lineNumber)}`;
    functions.set(fn, (functions.get(fn) ?? 0) + delta);
  }
  const busy = total - idle;
  const ranked = (m: Map<string, number>) => [...m].sort((x, y) => y[1] - x[1]).slice(0, top);
  return {
    windowMs: total / 1000,
    busy: total > 0 ? busy / total : 0,
    areas: ranked(areas).map(([a, t]) => ({ area: a, share: t / busy })),
    functions: ranked(functions).map(([fn, t]) => ({ fn, share: t / busy })),
  };
};
