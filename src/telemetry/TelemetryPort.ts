/**
 * The Telemetry port: metrics, spans and logs from clients without an
 * OpenTelemetry SDK, and the mesh's health, one method per RPC of
 * `floworchestrator.telemetry.v1.TelemetryService`. (The OpenTelemetry
 * pipeline itself is the `Telemetry` service of `pipeline.ts`.)
 */
import { Context } from "effect";
import type { TelemetryService } from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import type { PortOf } from "../common/port.js";

export type TelemetryPortShape = PortOf<typeof TelemetryService>;

export class TelemetryPort extends Context.Tag("fo/TelemetryPort")<
  TelemetryPort,
  TelemetryPortShape
>() {}
