/**
 * The embedded MemoryStore: the working memory of one mesh instance, in
 * process and never persisted (what a single Hazelcast member would hold).
 *
 * Times come from the Effect `Clock` of the layer's construction (so a
 * TestClock drives them). An entry is expired from `min(record.expireTime,
 * lastAccessTime + record.maxIdleMs)` on (inclusive); a lock from its
 * `expireTime` on. Expired entries and locks are invisible at once to every
 * method (checked on access), and a sweeper fiber removes what expired
 * without anyone touching it, publishing an `expired` event for each entry:
 * watchers see every expiry within one sweep interval.
 *
 * Every method runs as one synchronous step (checks and changes never
 * interleave, so `update` is a true compare-and-set; `modify` runs its
 * change inside the step), and its events are published within it, so
 * events reach subscribers in the order the changes happened. A `modify`,
 * whose change is an effect, holds a mutex until its events are out; the
 * steps that come meanwhile queue behind it, the others (nearly all) run
 * at once without taking it.
 * The event buffer is sliding: a subscriber that falls more than
 * `EVENT_BUFFER` events behind loses the oldest ones instead of growing
 * memory without bound.
 */
import { Duration, Effect, Layer, Option, PubSub, Schedule } from "effect";
import {
  type BranchRecord,
  type MemoryFilter,
  type MemoryRecord,
  MemoryStore,
  type MemoryStoreShape,
  type StoredEntry,
  type StoreEvent,
  StoreUnavailable,
  type UnlockResult,
} from "./store.js";

/** Events kept for the slowest subscriber. */
const EVENT_BUFFER = 16_384;

const DEFAULT_SWEEP_INTERVAL = Duration.millis(100);

interface Entry {
  /** Frozen: handed out as is, nobody can change it. */
  record: MemoryRecord;
  data: Uint8Array;
  lastAccessTime: number;
}

interface Lock {
  readonly holder: string;
  readonly expireTime: number;
}

interface State {
  readonly entries: Map<string, Entry>;
  /** executionId → branchPath → record (frozen). */
  readonly branches: Map<string, Map<string, BranchRecord>>;
  readonly locks: Map<string, Lock>;
  /** No entry or lock expires before this: the sweeper skips its scan until then. */
  nextExpiry: number;
  closed: boolean;
}

const deadline = (entry: Entry): number =>
  Math.min(entry.record.expireTime, entry.lastAccessTime + entry.record.maxIdleMs);

const matches = (record: MemoryRecord, filter: MemoryFilter): boolean =>
  (filter.executionId === undefined || record.executionId === filter.executionId) &&
  (filter.flowId === undefined || record.flowId === filter.flowId) &&
  (filter.owner === undefined || record.owner === filter.owner) &&
  (filter.stepType === undefined || record.stepType === filter.stepType) &&
  (filter.branchPrefix === undefined ||
    record.branchPath === filter.branchPrefix ||
    record.branchPath.startsWith(`${filter.branchPrefix}.`));

const storedEntry = (entry: Entry): StoredEntry => ({
  record: entry.record,
  lastAccessTime: entry.lastAccessTime,
});

const closedError = () =>
  new StoreUnavailable({ cause: new Error("the embedded memory store is closed") });

export const EmbeddedMemoryStore = {
  /** A fresh, empty store for the layer's lifetime; `sweepInterval` (default 100 ms) bounds how late an `expired` event comes. */
  layer: (options?: {
    readonly sweepInterval?: Duration.DurationInput;
  }): Layer.Layer<MemoryStore> =>
    Layer.scoped(
      MemoryStore,
      Effect.gen(function* () {
        const clock = yield* Effect.clock;
        const mutex = yield* Effect.makeSemaphore(1);
        // Released in reverse: the sweeper stops, the state is cleared, then subscribers end.
        const pubsub = yield* Effect.acquireRelease(
          PubSub.sliding<StoreEvent>(EVENT_BUFFER),
          PubSub.shutdown,
        );
        const state = yield* Effect.acquireRelease(
          Effect.sync(
            (): State => ({
              entries: new Map(),
              branches: new Map(),
              locks: new Map(),
              nextExpiry: Number.POSITIVE_INFINITY,
              closed: false,
            }),
          ),
          (s) =>
            Effect.sync(() => {
              s.closed = true;
              s.entries.clear();
              s.branches.clear();
              s.locks.clear();
            }),
        );

        type Emit = (type: StoreEvent["type"], address: string, record: MemoryRecord) => void;

        /**
         * Fibers holding or waiting for the mutex. Only a `stepWith` (whose
         * change is an effect) and the steps that queue behind one take it:
         * a step is one synchronous block, its change and the publishing of
         * its events included, so while nobody holds the mutex it runs at
         * once, and no other step or change can come between.
         */
        let locking = 0;
        const locked = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              locking++;
            }),
            () => mutex.withPermits(1)(effect),
            () =>
              Effect.sync(() => {
                locking--;
              }),
          );

        /** The events of the step under way: steps never overlap, each is one synchronous block. */
        let stepEvents: StoreEvent[] = [];
        let stepTime = 0;
        const emitStep: Emit = (type, address, record) => {
          stepEvents.push({ type, address, record, time: stepTime });
        };

        /**
         * `f` at the current time, then its events published, in one
         * synchronous block: nothing can interrupt it or run in between, so
         * no change is ever left without its event. Publishing to a sliding
         * PubSub never waits, and the PubSub is shut down only after `closed`
         * is set.
         */
        const runStep = <A>(
          f: (now: number, emit: Emit) => A,
        ): Effect.Effect<A, StoreUnavailable> => {
          if (state.closed) return Effect.fail(closedError());
          // A step that threw (a defect) leaves its events unpublished, as its change unfinished.
          if (stepEvents.length > 0) stepEvents = [];
          stepTime = clock.unsafeCurrentTimeMillis();
          const result = f(stepTime, emitStep);
          if (stepEvents.length > 0) {
            const events = stepEvents;
            stepEvents = [];
            Effect.runSync(PubSub.publishAll(pubsub, events));
          }
          return Effect.succeed(result);
        };

        /** One synchronous step at the current time, with its events; behind a `stepWith` under way. */
        const step = <A>(f: (now: number, emit: Emit) => A): Effect.Effect<A, StoreUnavailable> =>
          Effect.suspend(() =>
            locking === 0 ? runStep(f) : locked(Effect.suspend(() => runStep(f))),
          );

        /** `step` around an effect (a `modify`'s change): its events are published however it ends. */
        const stepWith = <A, E>(
          f: (now: number, emit: Emit) => Effect.Effect<A, E>,
        ): Effect.Effect<A, E | StoreUnavailable> =>
          locked(
            Effect.uninterruptible(
              Effect.suspend((): Effect.Effect<A, E | StoreUnavailable> => {
                if (state.closed) return Effect.fail(closedError());
                const now = clock.unsafeCurrentTimeMillis();
                const events: StoreEvent[] = [];
                return f(now, (type, address, record) =>
                  events.push({ type, address, record, time: now }),
                ).pipe(
                  Effect.ensuring(
                    Effect.suspend(() =>
                      events.length === 0 ? Effect.void : PubSub.publishAll(pubsub, events),
                    ),
                  ),
                );
              }),
            ),
          );

        const expectExpiry = (time: number) => {
          if (time < state.nextExpiry) state.nextExpiry = time;
        };

        /** The entry if it is live; an expired one is removed (and reported) on the spot. */
        const live = (address: string, now: number, emit: Emit): Entry | undefined => {
          const entry = state.entries.get(address);
          if (entry === undefined || now < deadline(entry)) return entry;
          state.entries.delete(address);
          emit("expired", address, entry.record);
          return undefined;
        };

        const liveLock = (resource: string, now: number): Lock | undefined => {
          const lock = state.locks.get(resource);
          if (lock === undefined || now < lock.expireTime) return lock;
          state.locks.delete(resource);
          return undefined;
        };

        const sweep = step((now, emit) => {
          if (now < state.nextExpiry) return;
          let next = Number.POSITIVE_INFINITY;
          for (const [address, entry] of state.entries) {
            const at = deadline(entry);
            if (now < at) next = Math.min(next, at);
            else {
              state.entries.delete(address);
              emit("expired", address, entry.record);
            }
          }
          for (const [resource, lock] of state.locks) {
            if (now < lock.expireTime) next = Math.min(next, lock.expireTime);
            else state.locks.delete(resource);
          }
          state.nextExpiry = next;
        }).pipe(Effect.catchAll(() => Effect.void)); // fails only once closed

        yield* Effect.forkScoped(
          Effect.repeat(sweep, Schedule.spaced(options?.sweepInterval ?? DEFAULT_SWEEP_INTERVAL)),
        );

        const branchesOf = (executionId: string) => state.branches.get(executionId);

        const store: MemoryStoreShape = {
          backend: "embedded",
          ping: step(() => undefined),

          create: (record) =>
            step((now, emit) => {
              if (live(record.address, now, emit) !== undefined) return false;
              const entry: Entry = {
                record: Object.freeze({ ...record }),
                data: new Uint8Array(0),
                lastAccessTime: now,
              };
              state.entries.set(record.address, entry);
              expectExpiry(deadline(entry));
              emit("created", record.address, entry.record);
              return true;
            }),

          get: (address, touch) =>
            step((now, emit) => {
              const entry = live(address, now, emit);
              if (entry === undefined) return Option.none();
              if (touch) entry.lastAccessTime = now;
              return Option.some(storedEntry(entry));
            }),

          read: (address) =>
            step((now, emit) => {
              const entry = live(address, now, emit);
              if (entry === undefined) return Option.none();
              entry.lastAccessTime = now;
              return Option.some({ entry: storedEntry(entry), data: entry.data.slice() });
            }),

          readMany: (addresses) =>
            step((now, emit) =>
              addresses.map((address) => {
                const entry = live(address, now, emit);
                if (entry === undefined) return Option.none();
                entry.lastAccessTime = now;
                return Option.some({ entry: storedEntry(entry), data: entry.data.slice() });
              }),
            ),

          modify: (address, change) =>
            stepWith((now, emit) => {
              const entry = live(address, now, emit);
              if (entry === undefined) return Effect.succeed(Option.none());
              return Effect.flatMap(change(storedEntry(entry)), ({ record, data }) => {
                if (record.address !== address) {
                  return Effect.dieMessage(`a change of ${address} must keep its address`);
                }
                entry.record = Object.freeze({ ...record });
                if (data !== undefined) entry.data = data.slice();
                entry.lastAccessTime = now;
                expectExpiry(deadline(entry));
                emit("updated", address, entry.record);
                return Effect.succeed(Option.some(storedEntry(entry)));
              });
            }),

          update: (address, expectedRevision, record, data) =>
            record.address !== address
              ? Effect.dieMessage(`update of ${address} must not change its address`)
              : step((now, emit) => {
                  const entry = live(address, now, emit);
                  if (entry === undefined || entry.record.revision !== expectedRevision)
                    return false;
                  entry.record = Object.freeze({ ...record });
                  if (data !== undefined) entry.data = data.slice();
                  entry.lastAccessTime = now;
                  expectExpiry(deadline(entry));
                  emit("updated", address, entry.record);
                  return true;
                }),

          remove: (address) =>
            step((now, emit) => {
              const entry = live(address, now, emit);
              if (entry === undefined) return false;
              state.entries.delete(address);
              emit("removed", address, entry.record);
              return true;
            }),

          query: (filter) =>
            step((now, emit) => {
              const found: StoredEntry[] = [];
              // Deleting the current key while iterating a Map is well defined.
              for (const address of state.entries.keys()) {
                const entry = live(address, now, emit);
                if (entry !== undefined && matches(entry.record, filter)) {
                  found.push(storedEntry(entry));
                }
              }
              return found;
            }),

          subscribe: Effect.suspend(() =>
            state.closed ? Effect.fail(closedError()) : PubSub.subscribe(pubsub),
          ),

          branches: {
            get: (executionId, branchPath) =>
              step(() => Option.fromNullable(branchesOf(executionId)?.get(branchPath))),

            create: (record) =>
              step(() => {
                let branches = branchesOf(record.executionId);
                if (branches?.has(record.branchPath)) return false;
                if (branches === undefined) {
                  branches = new Map();
                  state.branches.set(record.executionId, branches);
                }
                branches.set(record.branchPath, Object.freeze({ ...record }));
                return true;
              }),

            update: (expectedRevision, record) =>
              step(() => {
                const branches = branchesOf(record.executionId);
                const current = branches?.get(record.branchPath);
                if (branches === undefined || current?.revision !== expectedRevision) return false;
                branches.set(record.branchPath, Object.freeze({ ...record }));
                return true;
              }),

            list: (executionId) =>
              step(() =>
                [...(branchesOf(executionId)?.values() ?? [])].sort((a, b) =>
                  a.branchPath < b.branchPath ? -1 : a.branchPath > b.branchPath ? 1 : 0,
                ),
              ),

            removeExecution: (executionId) =>
              step(() => {
                const count = branchesOf(executionId)?.size ?? 0;
                state.branches.delete(executionId);
                return count;
              }),
          },

          tryLock: (resource, holder, leaseMs) =>
            step((now) => {
              const lock = liveLock(resource, now);
              if (lock !== undefined && lock.holder !== holder) {
                return { acquired: false, expireTime: lock.expireTime };
              }
              const expireTime = now + leaseMs;
              state.locks.set(resource, { holder, expireTime });
              expectExpiry(expireTime);
              return { acquired: true, expireTime };
            }),

          unlock: (resource, holder) =>
            step((now): UnlockResult => {
              const lock = liveLock(resource, now);
              if (lock === undefined) return "missing";
              if (lock.holder !== holder) return "others";
              state.locks.delete(resource);
              return "unlocked";
            }),
        };
        return store;
      }),
    ),
};
