/**
 * The health registry behind `grpc.health.v1.Health` and the Telemetry
 * service's GetHealth / WatchHealth. Components (the server itself, each
 * backend adapter) report a status under a service name; the overall status
 * `""` is SERVING only while nothing reports NOT_SERVING and the server is
 * not draining. Components with a periodic check (`healthFromPing`) also
 * keep its latency, time and their last error.
 */
import {
  Clock,
  Duration,
  Effect,
  Either,
  HashMap,
  Layer,
  Option,
  Schedule,
  Stream,
  SubscriptionRef,
} from "effect";

export type ServingStatus = "SERVING" | "NOT_SERVING";
/** What a watcher of an unknown name sees, per the gRPC health protocol. */
export type WatchedStatus = ServingStatus | "SERVICE_UNKNOWN";

/** The last periodic check of a component. */
export interface ComponentCheck {
  /** How long the check took, in milliseconds. */
  readonly latencyMs: number;
  /** When it finished, in epoch milliseconds. */
  readonly time: number;
  /** The most recent failed check (caller-safe message), kept after recovery. */
  readonly lastError: Option.Option<{ readonly message: string; readonly time: number }>;
}

/** One component as GetHealth shows it. */
export interface ComponentHealth {
  readonly name: string;
  readonly status: ServingStatus;
  /** None for components without a periodic check. */
  readonly check: Option.Option<ComponentCheck>;
}

/** The whole registry at one moment: the overall status and every component, by name. */
export interface HealthSnapshot {
  readonly status: ServingStatus;
  readonly components: ReadonlyArray<ComponentHealth>;
}

/** What a periodic check reports. */
export interface CheckReport {
  readonly status: ServingStatus;
  readonly latencyMs: number;
  /** Why it failed, safe to show a caller; ignored when SERVING. */
  readonly error?: string;
}

interface State {
  readonly draining: boolean;
  readonly components: HashMap.HashMap<string, ServingStatus>;
  /** Whether any component is NOT_SERVING: kept with `components`, read by every overall check. */
  readonly anyDown: boolean;
  readonly checks: HashMap.HashMap<string, ComponentCheck>;
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
  return Option.some(state.draining || state.anyDown ? "NOT_SERVING" : "SERVING");
};

const withStatus = (
  components: State["components"],
  name: string,
  status: ServingStatus,
): Pick<State, "components" | "anyDown"> => {
  const next = HashMap.set(components, name, status);
  return { components: next, anyDown: HashMap.some(next, (s) => s === "NOT_SERVING") };
};

export class HealthRegistry extends Effect.Service<HealthRegistry>()("fo/HealthRegistry", {
  effect: Effect.gen(function* () {
    const ref = yield* SubscriptionRef.make<State>({
      draining: false,
      components: HashMap.empty(),
      anyDown: false,
      checks: HashMap.empty(),
    });
    const watchedStatus = (state: State, name: string): WatchedStatus =>
      Option.getOrElse(statusOf(state, name), () => "SERVICE_UNKNOWN" as const);
    const snapshotOf = (state: State): HealthSnapshot => ({
      status: Option.getOrThrow(statusOf(state, OVERALL)),
      components: [...HashMap.keys(state.components)].sort().map((name) => ({
        name,
        status: Option.getOrThrow(statusOf(state, name)),
        check: HashMap.get(state.checks, name),
      })),
    });

    return {
      /** Reports a component's status (registers the name on first use). */
      set: (name: string, status: ServingStatus) =>
        SubscriptionRef.update(ref, (s) => ({
          ...s,
          ...withStatus(s.components, name, status),
        })),
      /**
       * Reports the outcome of a component's periodic check: its status (as
       * `set` does) with the check's latency and time, and the error when it failed.
       */
      report: (name: string, report: CheckReport) =>
        Effect.flatMap(Clock.currentTimeMillis, (time) =>
          SubscriptionRef.update(ref, (s) => {
            const previous = Option.flatMap(HashMap.get(s.checks, name), (c) => c.lastError);
            const failed = report.status === "NOT_SERVING";
            const check: ComponentCheck = {
              latencyMs: report.latencyMs,
              time,
              lastError: failed
                ? Option.some({ message: report.error ?? "check failed", time })
                : previous,
            };
            return {
              ...s,
              ...withStatus(s.components, name, report.status),
              checks: HashMap.set(s.checks, name, check),
            };
          }),
        ),
      /** The overall status and every component with its last check. */
      snapshot: Effect.map(SubscriptionRef.get(ref), snapshotOf),
      /** The current snapshot, then one after every update (even one that changes nothing). */
      snapshots: (): Stream.Stream<HealthSnapshot> => ref.changes.pipe(Stream.map(snapshotOf)),
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

/** Longest a ping may take before the check counts as failed. */
export const CHECK_TIMEOUT = Duration.seconds(3);

class CheckTimedOut {
  readonly _tag = "CheckTimedOut";
}

/**
 * Reports a backend's reachability as the health of a service, with the
 * check's latency and error: known before the server starts answering,
 * then every BACKEND_CHECK, until the scope closes. The error callers see
 * is generic (no driver message, no address); the cause goes to the log
 * when the service turns NOT_SERVING.
 */
export const healthFromPing = <E, R>(serviceName: string, ping: Effect.Effect<void, E, R>) =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const health = yield* HealthRegistry;
      const report = ping.pipe(
        Effect.timeoutFail({ duration: CHECK_TIMEOUT, onTimeout: () => new CheckTimedOut() }),
        Effect.either,
        Effect.timed,
        Effect.flatMap(([took, result]) => {
          const latencyMs = Duration.toMillis(took);
          if (Either.isRight(result))
            return health.report(serviceName, { status: "SERVING", latencyMs });
          const error =
            result.left instanceof CheckTimedOut
              ? `no answer within ${Duration.format(CHECK_TIMEOUT)}`
              : "backend unreachable";
          return health.check(serviceName).pipe(
            Effect.tap((before) =>
              Option.contains(before, "NOT_SERVING")
                ? Effect.void
                : Effect.logWarning(`${serviceName} health check failed`, result.left),
            ),
            Effect.zipRight(
              health.report(serviceName, { status: "NOT_SERVING", latencyMs, error }),
            ),
          );
        }),
      );
      yield* report;
      yield* report.pipe(Effect.repeat(BACKEND_CHECK), Effect.forkScoped);
    }),
  );
