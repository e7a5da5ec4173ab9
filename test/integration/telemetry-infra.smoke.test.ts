// Proves the Telemetry tier's real components: Jaeger takes OTLP/HTTP and
// serves the trace back from its query API; promtool lints exposition text;
// a Prometheus from startPrometheus scrapes a target and answers PromQL.
// Needs test/infra/global-setup.ts as globalSetup (it provides "infra").
import { spawnSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { InfraAddresses } from "../infra/index.js";
import { type PrometheusServer, startPrometheus } from "../infra/prometheus.js";

const infra: InfraAddresses = inject("infra");
// Unique per run so reruns against a long-lived Jaeger never see old data.
const suiteId = `smoke_${randomBytes(6).toString("hex")}`;

/** Calls `attempt` until it returns a value (not undefined) or the deadline passes. */
async function poll<T>(
  what: string,
  attempt: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: nothing within ${timeoutMs / 1000}s (last error: ${String(last)})`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("Jaeger (OTLP/HTTP in, query API out)", () => {
  type JaegerTrace = {
    traceID: string;
    spans: { spanID: string; operationName: string; processID: string }[];
    processes: Record<string, { serviceName: string }>;
  };

  it("stores an OTLP/JSON trace and returns it by trace id", async () => {
    const traceId = randomBytes(16).toString("hex");
    const spanId = randomBytes(8).toString("hex");
    const service = `${suiteId}-svc`;
    const startNs = BigInt(Date.now()) * 1_000_000n;
    const payload = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: "service.name", value: { stringValue: service } }] },
          scopeSpans: [
            {
              scope: { name: "telemetry-infra.smoke" },
              spans: [
                {
                  traceId,
                  spanId,
                  name: "smoke-op",
                  kind: 2, // SPAN_KIND_SERVER
                  startTimeUnixNano: startNs.toString(),
                  endTimeUnixNano: (startNs + 5_000_000n).toString(),
                  attributes: [{ key: "suite", value: { stringValue: suiteId } }],
                  status: { code: 1 },
                },
              ],
            },
          ],
        },
      ],
    };
    const res = await fetch(`${infra.jaeger.otlpHttp}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
    });
    expect(res.status).toBe(200);
    // A full success has no (or an empty) partialSuccess.
    const ack = (await res.json()) as { partialSuccess?: { rejectedSpans?: string | number } };
    expect(Number(ack.partialSuccess?.rejectedSpans ?? 0)).toBe(0);

    const trace = await poll(`trace ${traceId} in Jaeger`, async () => {
      const r = await fetch(`${infra.jaeger.query}/api/traces/${traceId}`);
      if (r.status === 404) return undefined;
      if (!r.ok) throw new Error(`query API said ${r.status}: ${await r.text()}`);
      const body = (await r.json()) as { data: JaegerTrace[] };
      return body.data[0];
    });
    expect(trace.traceID).toBe(traceId);
    expect(trace.spans).toHaveLength(1);
    const span = trace.spans[0];
    expect(span).toMatchObject({ spanID: spanId, operationName: "smoke-op" });
    expect(trace.processes[span?.processID ?? ""]?.serviceName).toBe(service);

    const services = (await (await fetch(`${infra.jaeger.query}/api/services`)).json()) as {
      data: string[];
    };
    expect(services.data).toContain(service);
    // Jaeger does not trace itself into itself (see test/infra/jaeger.ts).
    expect(services.data).not.toContain("jaeger");
  });
});

const VALID_EXPOSITION = `# HELP smoke_requests_total Requests handled.
# TYPE smoke_requests_total counter
smoke_requests_total{method="get",code="200"} 3
smoke_requests_total{method="put",code="500"} 1
# HELP smoke_in_flight Requests in flight.
# TYPE smoke_in_flight gauge
smoke_in_flight 0
`;

function promtoolCheckMetrics(text: string) {
  const r = spawnSync(infra.prometheus.promtool, ["check", "metrics"], {
    input: text,
    encoding: "utf8",
    timeout: 30_000,
  });
  if (r.error !== undefined) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("promtool check metrics", () => {
  it("accepts valid exposition text", () => {
    expect(promtoolCheckMetrics(VALID_EXPOSITION)).toEqual({ status: 0, output: "" });
  });

  it("rejects invalid exposition text", () => {
    const r = promtoolCheckMetrics(
      "# TYPE smoke_requests_total counter\nsmoke_requests_total{method=get} three\n",
    );
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/parsing error/);
  });
});

describe("Prometheus from startPrometheus", () => {
  const value = randomInt(1_000, 1_000_000);
  const exposition = `# HELP smoke_value A value only this run knows.
# TYPE smoke_value gauge
smoke_value{suite="${suiteId}"} ${value}
`;
  let scrapes = 0;
  let target: Server | undefined;
  let prometheus: PrometheusServer | undefined;

  beforeAll(async () => {
    target = createServer((req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404).end();
        return;
      }
      scrapes++;
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
      res.end(exposition);
    });
    await new Promise<void>((resolve) => target?.listen(0, "127.0.0.1", resolve));
    const { port } = target.address() as AddressInfo;
    prometheus = await startPrometheus({
      scrapeTarget: `127.0.0.1:${port}`,
      scrapeIntervalMs: 500,
    });
  });

  afterAll(async () => {
    await prometheus?.stop();
    await new Promise((resolve) => target?.close(resolve));
  });

  it("serves what the target exposes (and promtool agrees it is valid)", async () => {
    if (prometheus === undefined) throw new Error("prometheus not started");
    expect(prometheus.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(promtoolCheckMetrics(exposition).status).toBe(0);

    type Vector = { metric: Record<string, string>; value: [number, string] }[];
    const query = async (promql: string): Promise<Vector | undefined> => {
      const url = `${prometheus?.url}/api/v1/query?query=${encodeURIComponent(promql)}`;
      const r = await fetch(url);
      if (!r.ok) throw new Error(`query API said ${r.status}: ${await r.text()}`);
      const body = (await r.json()) as { status: string; data: { result: Vector } };
      expect(body.status).toBe("success");
      return body.data.result.length > 0 ? body.data.result : undefined;
    };

    const result = await poll("smoke_value in Prometheus", () =>
      query(`smoke_value{suite="${suiteId}"}`),
    );
    expect(result).toHaveLength(1);
    expect(result[0]?.metric).toMatchObject({
      __name__: "smoke_value",
      suite: suiteId,
      job: "mesh",
      instance: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
    });
    expect(Number(result[0]?.value[1])).toBe(value);
    expect(await query('up{job="mesh"}')).toMatchObject([{ value: [expect.any(Number), "1"] }]);
    expect(scrapes).toBeGreaterThan(0);
  });

  it("is gone after stop()", async () => {
    if (prometheus === undefined) throw new Error("prometheus not started");
    const { url } = prometheus;
    await prometheus.stop();
    await expect(fetch(`${url}/-/ready`)).rejects.toThrow();
  });
});
