/** `grpc.health.v1.Health`: Check, Watch and List over the health registry. */
import type { ServiceImpl } from "@connectrpc/connect";
import { Effect, Option, Stream } from "effect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.js";
import { NotFound } from "../common/errors.js";
import type { Bridge } from "./bridge.js";
import { HealthRegistry, type WatchedStatus } from "./health.js";

const toProto: Record<WatchedStatus, Status> = {
  SERVING: Status.SERVING,
  NOT_SERVING: Status.NOT_SERVING,
  SERVICE_UNKNOWN: Status.SERVICE_UNKNOWN,
};

export const healthService = (bridge: Bridge<HealthRegistry>): ServiceImpl<typeof Health> => ({
  check: (req, ctx) =>
    bridge.unary(
      ctx,
      HealthRegistry.pipe(
        Effect.flatMap((h) => h.check(req.service)),
        Effect.flatMap(
          Option.match({
            onNone: () =>
              Effect.fail(
                new NotFound({
                  message: `unknown service "${req.service}"`,
                  metadata: { service: req.service },
                }),
              ),
            onSome: (status) => Effect.succeed({ status: toProto[status] }),
          }),
        ),
      ),
    ),
  watch: (req, ctx) =>
    bridge.stream(
      ctx,
      Stream.unwrap(Effect.map(HealthRegistry, (h) => h.watch(req.service))).pipe(
        Stream.map((status) => ({ status: toProto[status] })),
      ),
    ),
  list: (_req, ctx) =>
    bridge.unary(
      ctx,
      Effect.flatMap(HealthRegistry, (h) => h.list).pipe(
        Effect.map((all) => ({
          statuses: Object.fromEntries(
            Object.entries(all).map(([name, s]) => [name, { status: toProto[s] }]),
          ),
        })),
      ),
    ),
});
