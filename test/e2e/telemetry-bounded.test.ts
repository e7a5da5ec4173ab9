/**
 * Exporter failures never grow memory without bound: a mesh process whose
 * OTLP collector is a black hole (accepts connections, never answers: every
 * export hangs until its timeout, the worst case for the queues; a
 * collector that refuses connections behaves the same here, as the
 * exporter retries with backoff, and telemetry-otlp.test.ts covers calls
 * against it) takes a steady load of calls producing ~22k spans and 20k log
 * records, each carrying ~8 KB, with the batch queues set small through
 * the standard `OTEL_BSP_MAX_QUEUE_SIZE` / `OTEL_BLRP_MAX_QUEUE_SIZE`.
 * Every call succeeds; the processors' queues
 * (`otel_sdk_processor_*_queue_size` on /metrics) never exceed their
 * capacity, what does not fit is counted as dropped, the process's resident
 * memory grows far less than keeping everything would take, and the
 * shutdown is not held up by the collector.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { clientFor } from "../support/clients.js";
import { type MeshProcess, spawnMesh } from "../support/process.js";

const QUEUE = 512;
const ROUNDS = 400;
const CONCURRENCY = 8;
const PER_CALL = 50;
/** ~8 KB per span (two attribute values at the 4,096-character limit) and per log record. */
const PAD = "x".repeat(4096);
const PAYLOAD_BYTES = 2 * PAD.length;

/** A collector stand-in that holds every connection open without sending a byte back. */
const blackHole = async () => {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const close = () => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { endpoint: `http://127.0.0.1:${port}`, close };
};

/** Resident memory of a process, MiB (Linux). */
const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;

/** Sum of a metric's samples on /metrics whose labels contain every `match`. */
const sample = (exposition: string, name: string, ...match: string[]) =>
  exposition
    .split("\n")
    .filter((line) => line.startsWith(`${name}{`) && match.every((m) => line.includes(m)))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);

let mesh: MeshProcess | undefined;
let stopCollector: (() => Promise<void>) | undefined;
afterEach(async () => {
  if (mesh?.child.exitCode === null) {
    mesh.child.kill("SIGKILL");
    await mesh.exited;
  }
  await stopCollector?.();
  mesh = undefined;
  stopCollector = undefined;
});

describe("OTLP collector that never answers", () => {
  it("every call succeeds, the queues stay within capacity, memory stays bounded", async () => {
    const sink = await blackHole();
    stopCollector = sink.close;
    const started = await spawnMesh({
      OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint,
      OTEL_BSP_MAX_QUEUE_SIZE: String(QUEUE),
      OTEL_BSP_SCHEDULE_DELAY: "200",
      OTEL_BLRP_MAX_QUEUE_SIZE: String(QUEUE),
      OTEL_BLRP_SCHEDULE_DELAY: "200",
      OTEL_METRIC_EXPORT_INTERVAL: "1000",
      // V8 sizes its heap by the machine's memory and collects late on a large one, so RSS
      // alone says little. With the old space capped below what unbounded queues would hold
      // (~330 MiB), a leak fails the calls (out of memory) instead of hiding in a lazy heap.
      NODE_OPTIONS: "--max-old-space-size=192",
    });
    mesh = started;
    const pid = started.child.pid as number;
    const telemetry = clientFor(TelemetryService, "Connect over HTTP/2", started.url);
    const health = clientFor(Health, "gRPC (h2c)", started.url);
    const metrics = async () => (await fetch(`${started.url}/metrics`)).text();

    let calls = 0;
    let spans = 0;
    let logs = 0;
    /** One client's round: 50 client spans, 50 log records, 4 health checks (each call a server span). */
    const round = async () => {
      const traceId = randomBytes(16).toString("hex");
      const now = { seconds: BigInt(Math.floor(Date.now() / 1000)) };
      const recorded = await telemetry.recordSpans({
        spans: Array.from({ length: PER_CALL }, (_, i) => ({
          traceId,
          spanId: randomBytes(8).toString("hex"),
          name: `bounded load ${i}`,
          startTime: now,
          endTime: now,
          attributes: {
            "load.a": { value: { case: "stringValue" as const, value: PAD } },
            "load.b": { value: { case: "stringValue" as const, value: PAD } },
          },
        })),
      });
      expect(recorded.recordedCount).toBe(PER_CALL);
      const emitted = await telemetry.emitLogs({
        records: Array.from({ length: PER_CALL }, () => ({ severity: 9, body: `${PAD}${PAD}` })),
      });
      expect(emitted.emittedCount).toBe(PER_CALL);
      for (let i = 0; i < 4; i++) expect((await health.check({})).status).toBe(1);
      calls += 6;
      spans += PER_CALL + 6;
      logs += PER_CALL;
    };

    const queues: number[] = [];
    const dropped: number[] = [];
    let baseline = 0;
    for (let done = 0; done < ROUNDS; done += CONCURRENCY) {
      // Any failed call rejects here and fails the test.
      await Promise.all(Array.from({ length: CONCURRENCY }, round));
      if (done % 80 === 0 || done + CONCURRENCY >= ROUNDS) {
        const text = await metrics();
        queues.push(
          sample(text, "otel_sdk_processor_span_queue_size"),
          sample(text, "otel_sdk_processor_log_queue_size"),
        );
        dropped.push(
          sample(text, "otel_sdk_processor_span_processed_total", 'error_type="queue_full"') +
            sample(text, "otel_sdk_processor_log_processed_total", 'error_type="queue_full"'),
        );
      }
      // Past the start-up allocations, with the queues already full.
      if (done === 5 * CONCURRENCY) baseline = rssMiB(pid);
    }
    const growth = rssMiB(pid) - baseline;
    const end = await metrics();

    expect(calls).toBe(ROUNDS * 6);
    expect(spans).toBeGreaterThanOrEqual(20_000);
    expect(sample(end, "otel_sdk_processor_span_queue_capacity")).toBe(QUEUE);
    expect(sample(end, "otel_sdk_processor_log_queue_capacity")).toBe(QUEUE);
    expect(Math.max(...queues)).toBeLessThanOrEqual(QUEUE);
    // Nothing got through: what did not fit in the queues was dropped, more at every sample
    // once they were full (the first sample comes before that).
    for (let i = 2; i < dropped.length; i++) {
      expect(dropped[i]).toBeGreaterThan(dropped[i - 1] ?? 0);
    }
    expect(dropped.at(-1)).toBeGreaterThan(0.8 * (spans + logs));
    // Keeping every span and record would take ~330 MiB; bounded queues hold ~8 MiB.
    const unbounded = ((spans + logs) * PAYLOAD_BYTES) / 2 ** 20;
    expect(growth, `RSS grew ${growth.toFixed(1)} MiB`).toBeLessThan(unbounded / 2);

    // The last flush on shutdown is bounded too: the collector does not hold up the exit.
    const stopping = Date.now();
    started.child.kill("SIGTERM");
    expect(await started.exited).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(10_000);
  }, 60_000);
});
