/**
 * GetHealth and WatchHealth over the health registry: its snapshots as
 * protobuf messages, and the watch stream (a snapshot, then the components
 * whose status or last error changed, and heartbeats).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type DurationSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Clock, Effect, Option, Schedule, Stream } from "effect";
import {
  type ComponentHealthSchema,
  ServingStatus,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_pb.js";
import {
  type GetHealthResponseSchema,
  WatchHealthResponse_Type as Type,
  type WatchHealthResponseSchema,
} from "../../gen/floworchestrator/telemetry/v1/telemetry_service_pb.js";
import {
  type ComponentHealth,
  type HealthRegistry,
  type HealthSnapshot,
  type ServingStatus as Status,
  WATCH_HEARTBEAT,
} from "../server/health.js";

type Component = MessageInitShape<typeof ComponentHealthSchema>;
type WatchEvent = MessageInitShape<typeof WatchHealthResponseSchema>;
interface Event {
  readonly type: Type;
  readonly status: ServingStatus;
  readonly components: Component[];
}

const statuses: Record<Status, ServingStatus> = {
  SERVING: ServingStatus.SERVING,
  NOT_SERVING: ServingStatus.NOT_SERVING,
};

/** Milliseconds (fractions too) as a Duration, to the nanosecond. */
const duration = (ms: number): MessageInitShape<typeof DurationSchema> => {
  const nanos = Math.max(0, Math.round(ms * 1e6));
  return { seconds: BigInt(Math.floor(nanos / 1e9)), nanos: nanos % 1e9 };
};

const component = (c: ComponentHealth): Component => {
  const check = Option.getOrUndefined(c.check);
  const error = Option.getOrUndefined(Option.flatMap(c.check, (x) => x.lastError));
  return {
    name: c.name,
    status: statuses[c.status],
    ...(check && {
      lastCheckTime: timestampFromMs(check.time),
      lastCheckLatency: duration(check.latencyMs),
    }),
    ...(error && {
      lastError: error.message,
      lastErrorTime: timestampFromMs(error.time),
    }),
  };
};

export const getHealth = (
  snapshot: HealthSnapshot,
): MessageInitShape<typeof GetHealthResponseSchema> => ({
  status: statuses[snapshot.status],
  components: snapshot.components.map(component),
});

/** What makes a component "changed" for watchers: its status or last error message. */
const signature = (c: ComponentHealth) =>
  `${c.status}\u0000${Option.match(
    Option.flatMap(c.check, (x) => x.lastError),
    { onNone: () => "", onSome: (e) => e.message },
  )}`;

interface Seen {
  readonly status: Status;
  readonly components: ReadonlyMap<string, string>;
}

const seen = (s: HealthSnapshot): Seen => ({
  status: s.status,
  components: new Map(s.components.map((c) => [c.name, signature(c)])),
});

/** The event a snapshot makes after the previous one, if any. */
const diff = (before: Option.Option<Seen>, now: HealthSnapshot): Option.Option<Event> => {
  if (Option.isNone(before))
    return Option.some({
      type: Type.SNAPSHOT,
      status: statuses[now.status],
      components: now.components.map(component),
    });
  const previous = before.value;
  const changed = now.components.filter((c) => previous.components.get(c.name) !== signature(c));
  if (changed.length === 0 && previous.status === now.status) return Option.none();
  return Option.some({
    type: Type.CHANGED,
    status: statuses[now.status],
    components: changed.map(component),
  });
};

const stamped = (event: Event) =>
  Effect.map(
    Clock.currentTimeMillis,
    (ms): WatchEvent => ({ ...event, time: timestampFromMs(ms) }),
  );

/** WatchHealth: a snapshot, then changes, with a heartbeat every WATCH_HEARTBEAT. */
export const watchHealth = (health: HealthRegistry): Stream.Stream<WatchEvent> => {
  const changes = health.snapshots().pipe(
    Stream.mapAccum(Option.none<Seen>(), (before, now) => [
      Option.some(seen(now)),
      diff(before, now),
    ]),
    Stream.filterMap((event) => event),
  );
  const heartbeats = Stream.fromSchedule(Schedule.spaced(WATCH_HEARTBEAT)).pipe(
    Stream.mapEffect(() => health.snapshot),
    Stream.map(
      (s): Event => ({ type: Type.HEARTBEAT, status: statuses[s.status], components: [] }),
    ),
  );
  return Stream.merge(changes, heartbeats).pipe(Stream.mapEffect(stamped));
};
