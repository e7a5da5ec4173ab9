/**
 * The health registry behind `grpc.health.v1.Health`. Components (the
 * server itself, each backend adapter) report a status under a service name;
 * the overall status `""` is SERVING only while nothing reports NOT_SERVING
 * and the server is not draining.
 */
import { Effect, HashMap, Layer, Option, Schedule, Stream, SubscriptionRef } from "effect";

export type ServingStatus = "SERVING" | "NOT_SERVING";
/** What a watcher of an unknown name sees, per the gRPC health protocol. */
export type WatchedStatus = ServingStatus | "SERVICE_UNKNOWN";

interface State {
  readonly draining: boolean;
  readonly components: HashMap.HashMap<string, ServingStatus>;
}

/** The name of the whole server in the health protocol. */
export const OVERALL = "";

/** How often Watch repeats the current status, so proxies keep an idle stream open. */
export const WATCH_HEARTBEAT = "25 seconds";

const statusOf = (state: State, name: string): Option.Option<ServingStatus> => {
  if (name !== OVERALL) {
    return HashMap.get(state.components, name).pipe(
      Option.map((s) => (state.draining ? "NOT_SERVING" : s)),
    );
  }
  const anyDown = HashMap.some(state.components, (s) => s === "NOT_SERVING");
  return Option.some(state.draining || anyDown ? "NOT_SERVING" : "SERVING");
};

export class HealthRegistry extends Effect.Service<HealthRegistry>()("fo/HealthRegistry", {
  effect: Effect.gen(function* () {
    const ref = yield* SubscriptionRef.make<State>({
      draining: false,
      components: HashMap.empty(),
    });
    const watchedStatus = (state: State, name: string): WatchedStatus =>
      Option.getOrElse(statusOf(state, name), () => "SERVICE_UNKNOWN" as const);

    return {
      /** Reports a component's status (registers the name on first use). */
      set: (name: string, status: ServingStatus) =>
        SubscriptionRef.update(ref, (s) => ({
          ...s,
          components: HashMap.set(s.components, name, status),
        })),
      /** The status of one name; None when the name was never registered. */
      check: (name: string) => Effect.map(SubscriptionRef.get(ref), (s) => statusOf(s, name)),
      /** Every registered name (and the overall status) with its status. */
      list: Effect.map(SubscriptionRef.get(ref), (s) => {
        const out: Record<string, ServingStatus> = {};
        for (const name of [OVERALL, ...HashMap.keys(s.components)]) {
          out[name] = Option.getOrThrow(statusOf(s, name));
        }
        return out;
      }),
      /**
       * The current status, then every change, repeated every WATCH_HEARTBEAT.
       * An unknown name yields SERVICE_UNKNOWN and keeps watching: it may register later.
       */
      watch: (name: string): Stream.Stream<WatchedStatus> => {
        const changes = ref.changes.pipe(
          Stream.map((s) => watchedStatus(s, name)),
          Stream.changes,
        );
        const heartbeat = Stream.fromSchedule(Schedule.spaced(WATCH_HEARTBEAT)).pipe(
          Stream.mapEffect(() =>
            Effect.map(SubscriptionRef.get(ref), (s) => watchedStatus(s, name)),
          ),
        );
        return Stream.merge(changes, heartbeat);
      },
      /** Marks the server as going away: every status reads NOT_SERVING from now on. */
      drain: SubscriptionRef.update(ref, (s) => ({ ...s, draining: true })),
    };
  }),
}) {}

/** How often a backend is pinged for the health service. */
const BACKEND_CHECK = Schedule.spaced("2 seconds");

/**
 * Reports a backend's reachability as the health of a service: known before
 * the server starts answering, then every BACKEND_CHECK, until the scope closes.
 */
export const healthFromPing = <E, R>(serviceName: string, ping: Effect.Effect<void, E, R>) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const health = yield* HealthRegistry;
      const report = ping.pipe(
        Effect.as("SERVING" as const),
        Effect.orElseSucceed(() => "NOT_SERVING" as const),
        Effect.flatMap((status) => health.set(serviceName, status)),
      );
      yield* report;
      yield* report.pipe(Effect.repeat(BACKEND_CHECK), Effect.forkScoped);
    }),
  );
