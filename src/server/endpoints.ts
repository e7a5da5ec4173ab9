/**
 * The plain HTTP GET endpoints next to the RPCs on the mesh port, for
 * orchestrators and scrapers:
 * - `/healthz`: the process is alive and serving (200);
 * - `/readyz`: every backend is reachable (200), else 503 — the overall
 *   status of the health registry, which also drives `grpc.health.v1`;
 * - `/metrics`: the Prometheus text exposition of the mesh's metrics.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Option } from "effect";
import type { ServingStatus } from "./health.js";
import { writeHead } from "./http.js";

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

export const plainEndpoints =
  (sources: {
    readonly metrics: (req: IncomingMessage, res: ServerResponse) => void;
    readonly ready: () => Option.Option<ServingStatus>;
  }) =>
  /** Answers the request when it is one of ours; false when it is not. */
  (req: Req, res: Res): boolean => {
    const path = (req.url ?? "").split("?")[0];
    const text = (status: number, body: string) => {
      writeHead(res, status, { "content-type": "text/plain; charset=utf-8" });
      res.end(`${body}\n`);
    };
    switch (path) {
      case "/healthz":
        text(200, "ok");
        return true;
      case "/readyz": {
        const status = sources.ready();
        const ready = status._tag === "Some" && status.value === "SERVING";
        text(ready ? 200 : 503, ready ? "ready" : "not ready");
        return true;
      }
      case "/metrics":
        // The exporter writes through the response API both HTTP versions share.
        sources.metrics(req as IncomingMessage, res as ServerResponse);
        return true;
      default:
        return false;
    }
  };
