/**
 * The two outputs of a run: `results.json` (every figure, raw) and
 * `RESULTS.md` (one table row per pair, each checked against the issue's
 * target, then the profiles of the pairs that miss it).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Row, Settings, SideResult, Summary, Target } from "./harness.js";
import type { ProfileSummary } from "./profile.js";

export interface RunInfo {
  readonly date: string;
  readonly durationSeconds: number;
  readonly quick: boolean;
  readonly machine: {
    readonly cpu: string;
    readonly cores: number;
    readonly memoryGiB: number;
    readonly os: string;
    readonly node: string;
    readonly loadAverageAtStart: number;
    readonly loadAverageAtEnd: number;
  };
  readonly settings: Settings;
  readonly tools: Record<string, string>;
}

export interface Check {
  readonly what: string;
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
}

/** Each clause of a row's target against its figures; empty without a target. */
export const checks = (row: Row): Check[] => {
  const { a, b } = row.result;
  const t: Target | undefined = row.target;
  if (t === undefined || b === undefined) return [];
  const out: Check[] = [];
  if (t.minRatio !== undefined) {
    const ratio = a.throughput.rps / b.throughput.rps;
    out.push({
      what: "throughput",
      target: `≥ ${t.minRatio}×`,
      measured: `${ratio.toFixed(2)}×`,
      met: ratio >= t.minRatio,
    });
  }
  for (const [key, max] of [
    ["p50", t.maxAddedP50],
    ["p99", t.maxAddedP99],
  ] as const) {
    if (max === undefined) continue;
    const added = a.latency && b.latency ? a.latency[key] - b.latency[key] : Number.NaN;
    out.push({
      what: key,
      target: `${key} ≤ +${ms(max)} ms`,
      measured: `${key} ${added >= 0 ? "+" : ""}${ms(added)} ms`,
      met: added <= max,
    });
  }
  return out;
};

export const isMet = (row: Row): boolean | undefined => {
  const c = checks(row);
  return c.length === 0 ? undefined : c.every((x) => x.met);
};

const ms = (x: number) =>
  Number.isNaN(x)
    ? "—"
    : Math.abs(x) < 1
      ? x.toFixed(3)
      : Math.abs(x) < 100
        ? x.toFixed(2)
        : x.toFixed(1);
const rate = (x: number) => (Number.isNaN(x) ? "—" : Math.round(x).toLocaleString("en-US"));
const pair = (a: string, b: string | undefined) => (b === undefined ? a : `${a} / ${b}`);

const latencyCell = (s: SideResult | undefined, key: keyof Summary) =>
  s?.latency === undefined ? "—" : ms(s.latency[key]);

/** A Markdown table with its columns padded, so the raw file reads as a table too. */
const table = (head: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = head.map((h, i) => Math.max(3, h.length, ...body.map((r) => (r[i] ?? "").length)));
  const line = (cells: ReadonlyArray<string>) =>
    `| ${widths.map((w, i) => (cells[i] ?? "").padEnd(w)).join(" | ")} |`;
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)];
};

const tableRow = (row: Row, index: number): string[] => {
  const { a, b } = row.result;
  const c = checks(row);
  const met = isMet(row);
  const cells = [
    String(index + 1),
    row.name,
    pair(a.label, b?.label),
    pair(a.tool, b?.tool === a.tool ? undefined : b?.tool),
    `${pair(rate(a.throughput.rps), b && rate(b.throughput.rps))} ${row.unit ?? "req/s"}`,
    row.result.latencyRps === undefined
      ? a.latency && !b
        ? "sequential"
        : "—"
      : `${rate(row.result.latencyRps)}/s`,
    ...(["p50", "p90", "p99", "max"] as const).map((k) =>
      pair(latencyCell(a, k), b && latencyCell(b, k)),
    ),
    pair(
      a.cpuPer1k === undefined ? "—" : a.cpuPer1k.toFixed(3),
      b && (b.cpuPer1k === undefined ? "—" : b.cpuPer1k.toFixed(3)),
    ),
    pair(
      a.peakRssMiB === undefined ? "—" : a.peakRssMiB.toFixed(0),
      b && (b.peakRssMiB === undefined ? "—" : b.peakRssMiB.toFixed(0)),
    ),
    c.length === 0 ? "none (context)" : c.map((x) => x.target).join(", "),
    c.length === 0 ? "—" : c.map((x) => `${x.measured}${x.met ? "" : " ✗"}`).join(", "),
    met === undefined ? "—" : met ? "**met**" : "**not met**",
  ];
  return cells;
};

/**
 * What the latency percentiles alone would hide: a side that could not keep
 * up with the fixed rate (its calls finished at a lower rate than they were
 * issued, so its percentiles are mostly its queue), and how far apart the
 * rounds were (on a shared machine, other work hits some rounds and not
 * others; the pooled percentiles carry those rounds).
 */
const latencyNotes = (row: Row): string[] => {
  const { a, b, latencyRps, requestedRps } = row.result;
  if (latencyRps === undefined || b === undefined) return [];
  const notes: string[] = [];
  if (requestedRps !== undefined)
    notes.push(
      `Latency at ${rate(latencyRps)}/s, not the ${rate(requestedRps)}/s the pair's rule gives: at that rate a side queued behind the open-loop generator on the same two cores (it finished under 97 % of the calls issued, or its p90 was more than twice its p90 at half the rate), so the rate was halved until neither did.`,
    );
  // A paired phase sends each side half the rate.
  const issued = row.result.paired ? latencyRps / 2 : latencyRps;
  for (const side of [a, b]) {
    const achieved = side.latency?.rps ?? Number.NaN;
    if (achieved < issued * 0.95)
      notes.push(
        `${side.label} completed ${rate(achieved)} calls/s of the ${rate(issued)}/s issued to it: it could not keep up, so its percentiles are mostly queueing.`,
      );
  }
  const spread = (side: SideResult) => {
    const p50s = (side.rounds?.latency ?? []).map((r) => r.p50).sort((x, y) => x - y);
    return p50s.length < 2
      ? undefined
      : `${ms(p50s[0] as number)}–${ms(p50s[p50s.length - 1] as number)}`;
  };
  const [sa, sb] = [spread(a), spread(b)];
  if (sa !== undefined && sb !== undefined)
    notes.push(`p50 of each round, lowest–highest: ${a.label} ${sa} ms, ${b.label} ${sb} ms.`);
  return notes;
};

const profileSection = (name: string, p: ProfileSummary) => {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  return [
    `### ${name}`,
    "",
    `Side A's mesh process under the throughput load for ${(p.windowMs / 1000).toFixed(1)} s: main thread busy ${pct(p.busy)} of the time. Self time, as shares of the busy time:`,
    "",
    `By area: ${p.areas.map((x) => `${x.area} ${pct(x.share)}`).join(", ")}.`,
    "",
    ...table(
      ["self time", "function"],
      p.functions.map((f) => [pct(f.share), `\`${f.fn.replaceAll("|", "\\|")}\``]),
    ),
    "",
  ].join("\n");
};

export interface Results extends RunInfo {
  readonly rows: ReadonlyArray<Row & { readonly group: string }>;
  readonly profiles: ReadonlyArray<{ readonly name: string; readonly profile: ProfileSummary }>;
}

/** `results.json`: every figure, with each row's checks against its target. */
export const writeJson = (dir: string, results: Results) => {
  mkdirSync(dir, { recursive: true });
  const json = {
    ...results,
    rows: results.rows.map((r) => ({ ...r, checks: checks(r), met: isMet(r) })),
  };
  writeFileSync(join(dir, "results.json"), `${JSON.stringify(json, null, 2)}\n`);
};

/** `RESULTS.md`, from the figures alone (so `--render` can redo it from `results.json`). */
export const writeMarkdown = (dir: string, results: Results, method: string) => {
  const { rows, profiles } = results;
  const info = results;
  const m = info.machine;
  const md = [
    "# Benchmark results",
    "",
    info.quick
      ? "**A `--quick` smoke run: seconds per pair on a busy machine. These figures mean nothing; only a full `npm run bench` gives figures to read.**\n"
      : "",
    `Written by \`npm run bench\` on ${info.date} (the run took ${Math.round(info.durationSeconds / 60)} min). ` +
      `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}; ` +
      `load average ${m.loadAverageAtStart.toFixed(2)} at the start and ${m.loadAverageAtEnd.toFixed(2)} at the end ` +
      "(the machine is shared with other work, so every figure carries that noise; the interleaved rounds spread it over both sides). " +
      `Tools: ${Object.values(info.tools).join(", ")}. Raw figures: \`results.json\`.`,
    "",
    method,
    "",
    "A is the mesh side, B the baseline; cells hold A / B. Throughput is from the closed-loop phase, the percentiles from the open-loop phase at the rate shown. " +
      "CPU is user + system seconds of the server processes per 1,000 calls during the throughput phase (— where the baseline is a driver inside the bench process, except where a note says which processes are counted); " +
      "peak RSS is their high-water mark at the end of the pair.",
    "",
    ...table(
      [
        "#",
        "pair",
        "A / B",
        "load",
        "throughput",
        "latency at",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "CPU s per 1k",
        "peak RSS MiB",
        "target",
        "measured",
        "met",
      ],
      rows.map(tableRow),
    ),
    "",
    ...rows.flatMap((r, i) => {
      const notes = [...(r.note === undefined ? [] : [r.note]), ...latencyNotes(r)];
      return notes.length === 0 ? [] : [`${i + 1}. ${r.name}: ${notes.join(" ")}`];
    }),
    "",
    ...(profiles.length === 0
      ? []
      : [
          "## Where the time goes in the pairs that miss their target",
          "",
          "Each profile is a separate run after the measured ones (`node --cpu-prof` on side A's mesh process, the same throughput load alone for a few seconds), so profiling never slowed a measured figure.",
          "",
          ...profiles.map((p) => profileSection(p.name, p.profile)),
        ]),
  ].join("\n");
  writeFileSync(join(dir, "RESULTS.md"), `${md.replace(/\n{3,}/g, "\n\n").trimEnd()}\n`);
};
