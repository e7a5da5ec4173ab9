/**
 * The entries. `meta` maps an address to the record as a
 * `HazelcastJsonValue` (so member-side predicates filter on its fields),
 * plus its bytes: up to `INLINE_MAX_BYTES` inline (`_inline`, base64), so
 * the record and its bytes are one value, read with one `get` and written
 * with one `set`; larger ones as `_data`, the key of the bytes in `data`.
 * Each version of large bytes gets a fresh key (`address#uuid`) and the
 * record is switched to it in one write, so a reader never sees a record
 * with another version's bytes; the old bytes are deleted after the switch
 * (a reader that loses that race reads the record again). Those bytes
 * expire a second after their record, so a live record has them.
 *
 * Expiry is Hazelcast's own: every write of a record passes the remaining
 * TTL and the max idle to the member, and every touching read is a member
 * read (which restarts max idle). What Hazelcast 5.6 does, measured against
 * the member (see the tests; for events and the member's own expiry task,
 * see events.ts and expiry.ts):
 * - TTL and max idle are kept in whole seconds (a value is truncated: 1.5 s
 *   is 1 s, under 1 s expires at once) and expiration times are rounded down
 *   to the second, so an entry would go up to a second early. We pass
 *   `ceil(ms / 1000) * 1000 + 1000`: entries expire never early and at most
 *   ~1-2 s late. On top, the record's own `expireTime` is checked on every
 *   read (on this instance's clock), so the TTL is exact for callers; only
 *   the physical removal (and its `expired` event) lags. Max idle has the
 *   member's granularity: gone between `maxIdleMs` and ~2 s later.
 * - The TTL counts from the last *write*, and `put`/`set`/`replace`/
 *   `replaceIfSame` without TTL arguments reset TTL and max idle to the map
 *   defaults (forever). So `update` writes with `set(key, value, remaining
 *   TTL, max idle)`, which cannot be conditional: it runs under the key's
 *   map lock (see key-lock.ts). `setTtl` keeps max idle as it is and fires
 *   no event.
 * - `get`, `getAll` and `containsKey` restart max idle; `getEntryView` and
 *   predicate queries do not. Per-entry statistics are off on a default
 *   member, so the entry view has no last access time: `get` without touch
 *   derives it from the expiration time (`expirationTime - maxIdle`, to the
 *   second; a lower bound when the TTL is the nearer limit). `query` does so
 *   for up to `QUERY_ACCESS_TIMES_LIMIT` results (one call each) and gives
 *   the record's `lastWriteTime` (a lower bound) beyond that.
 *
 * `create` is `putIfAbsent` (an entry past its TTL that the member still
 * holds is evicted under the key lock first, with an `expired` event);
 * `modify` and `update` read, decide and write under the key lock
 * (key-lock.ts); `remove` is `remove`. Calls to the cluster, with inline
 * bytes: a `read` is one `get`; a change is `tryLock` then `getEntryView`
 * (one bounded call), `set` of the record, and an `unlock` it does not wait
 * for. With bytes in `data`, a `read` is a `get` on each map, and a change
 * that writes new ones does their `set` before the record's and `delete`s
 * the old ones with the `unlock` (two calls in one socket write); one that
 * keeps them does a `containsKey` of them (their max idle) instead of the
 * `set`. `readMany` is one `getAll` on `meta`
 * (per member holding the keys), and one on `data` when some bytes are there.
 */
import { randomUUID } from "node:crypto";
import { type Duration, Effect, Option } from "effect";
import type { HazelcastJsonValue, SimpleEntryView } from "hazelcast-client";
import type {
  EntryChange,
  EntryWithData,
  MemoryFilter,
  MemoryRecord,
  MemoryStoreShape,
  StoredEntry,
  StoreUnavailable,
} from "../store.js";
import { bestEffort, type Cluster, MAX_ATTEMPTS, PARALLEL } from "./client.js";
import { predicateOf } from "./filter.js";
import { makeKeyLocks, type TimeLeft } from "./key-lock.js";
import {
  asLong,
  fromBase64,
  INLINE_MAX_BYTES,
  json,
  memberMaxIdle,
  memberMillis,
  NO_LIMIT,
  now,
  parse,
  recordOf,
  type StoredMeta,
  splitMeta,
} from "./stored.js";

/** The bytes outlive their record by this much (TTL and max idle), so a live record never lacks them. */
const DATA_GRACE_MS = 1_000;
/** Up to this many query results get their last access time from the member (one call each). */
const QUERY_ACCESS_TIMES_LIMIT = 256;

const newDataKey = (address: string): string => `${address}#${randomUUID()}`;

/** The record a change wrote, and the key of the bytes it replaced (deleted with the unlock). */
interface WriteOutcome {
  readonly record: MemoryRecord;
  readonly replaced?: string;
}

/** Where a record's bytes are: inline, or the key of their entry in `data`. */
type Storage = Pick<StoredMeta, "_data" | "_inline">;

/**
 * The record behind a stored value apart from its inline bytes' base64 (see
 * `splitMeta`), unless its TTL has run out (the member removes it a little
 * later).
 */
const liveSplit = (raw: HazelcastJsonValue | null, at: number) => {
  if (raw === null) return undefined;
  const split = splitMeta(raw);
  return at < split.meta.expireTime ? split : undefined;
};

/** `liveSplit` as one record: the base64 goes back in as the text it is, never parsed. */
const liveMeta = (raw: HazelcastJsonValue | null, at: number): StoredMeta | undefined => {
  const split = liveSplit(raw, at);
  if (split === undefined) return undefined;
  const stored: { -readonly [K in keyof StoredMeta]: StoredMeta[K] } = split.meta;
  if (split.inline !== undefined) stored._inline = split.inline;
  return stored;
};

/** The entry an entry view shows, read without touching it. */
const untouchedEntry = (
  view: SimpleEntryView<string, HazelcastJsonValue>,
  stored: StoredMeta,
  at: number,
): StoredEntry => {
  // No per-entry statistics on a default member: derived from the expiration (see the module comment).
  const maxIdle = asLong(view.maxIdle);
  const fromIdle = maxIdle > 0 && maxIdle < NO_LIMIT ? asLong(view.expirationTime) - maxIdle : 0;
  const lastAccessTime = Math.max(
    asLong(view.lastAccessTime) < NO_LIMIT ? asLong(view.lastAccessTime) : 0,
    asLong(view.lastUpdateTime) < NO_LIMIT ? asLong(view.lastUpdateTime) : 0,
    fromIdle,
    stored.lastWriteTime,
  );
  return { record: recordOf(stored), lastAccessTime: Math.min(lastAccessTime, at) };
};

export const makeEntryStore = (
  cluster: Cluster,
): Pick<
  MemoryStoreShape,
  "create" | "get" | "read" | "readMany" | "modify" | "update" | "remove" | "query"
> => {
  const { onMeta, onData } = cluster;
  const { serialized, withKeyLock } = makeKeyLocks(cluster);

  const getUntouched = (address: string) =>
    Effect.gen(function* () {
      const view = yield* onMeta("getEntryView", (m) => m.getEntryView(address));
      const at = yield* now;
      const stored = liveMeta(view?.value ?? null, at);
      if (view === null || stored === undefined) return Option.none<StoredEntry>();
      return Option.some(untouchedEntry(view, stored, at));
    });

  const getTouched = (address: string) =>
    Effect.gen(function* () {
      const stored = liveMeta(yield* onMeta("get", (m) => m.get(address)), yield* now);
      if (stored === undefined) return Option.none<StoredEntry>();
      const dataKey = stored._data;
      // Keep the bytes' max idle in step with the record's.
      if (dataKey !== undefined) yield* onData("containsKey", (m) => m.containsKey(dataKey));
      return Option.some<StoredEntry>({ record: recordOf(stored), lastAccessTime: yield* now });
    });

  /**
   * The record and its bytes: one `get` when they are inline. As plain
   * combinators (no generator): the busiest call of the store.
   */
  const read = (
    address: string,
    previousKey?: string,
    attempt = 1,
  ): Effect.Effect<Option.Option<EntryWithData>, StoreUnavailable> =>
    Effect.flatMap(
      onMeta("get", (m) => m.get(address)),
      (raw): Effect.Effect<Option.Option<EntryWithData>, StoreUnavailable> =>
        Effect.clockWith((clock) => {
          const at = clock.unsafeCurrentTimeMillis();
          const live = liveSplit(raw, at);
          if (live === undefined) return Effect.succeed(Option.none());
          const { meta: stored, inline } = live;
          const dataKey = stored._data;
          if (dataKey === undefined) {
            return Effect.succeed(
              Option.some({
                // Neither `_data` nor `_inline` is in it: the record as it is.
                entry: { record: stored, lastAccessTime: at },
                data: fromBase64(inline ?? ""),
              }),
            );
          }
          return Effect.flatMap(
            onData("get", (m) => m.get(dataKey)),
            (bytes): Effect.Effect<Option.Option<EntryWithData>, StoreUnavailable> => {
              if (bytes !== null) {
                return Effect.succeed(
                  Option.some({
                    entry: {
                      record: recordOf(stored),
                      lastAccessTime: clock.unsafeCurrentTimeMillis(),
                    },
                    data: new Uint8Array(bytes),
                  }),
                );
              }
              // Replaced by an update since the record was read: read the new one. The
              // same key twice: the bytes are gone with an entry at the end of its life.
              return dataKey === previousKey || attempt >= MAX_ATTEMPTS
                ? Effect.succeed(Option.none())
                : read(address, dataKey, attempt + 1);
            },
          );
        }),
    );

  /**
   * `read` of many: the records with one `getAll`, then the bytes not
   * inline with another (both touch, as `get` does). A record whose bytes
   * were replaced in between is read again on its own.
   */
  const readMany = (addresses: ReadonlyArray<string>) =>
    Effect.gen(function* () {
      if (addresses.length === 0) return [];
      const keys = [...new Set(addresses)];
      const metas = yield* onMeta("getAll", (m) => m.getAll(keys));
      const at = yield* now;
      const live = metas.flatMap(([, value]) => liveSplit(value, at) ?? []);
      const dataKeys = live.flatMap(({ meta }) => (meta._data === undefined ? [] : [meta._data]));
      const bytes = new Map(
        dataKeys.length === 0 ? [] : yield* onData("getAll", (m) => m.getAll(dataKeys)),
      );
      const found = new Map<string, EntryWithData>();
      const replaced: string[] = [];
      const readAt = yield* now;
      for (const { meta: stored, inline } of live) {
        const data =
          stored._data === undefined ? fromBase64(inline ?? "") : bytes.get(stored._data);
        if (data == null) replaced.push(stored.address);
        else {
          found.set(stored.address, {
            entry: { record: recordOf(stored), lastAccessTime: readAt },
            data,
          });
        }
      }
      const again = yield* Effect.forEach(replaced, (address) => read(address), {
        concurrency: PARALLEL,
      });
      again.forEach((entry, i) => {
        if (Option.isSome(entry)) found.set(replaced[i] as string, entry.value);
      });
      // A copy per answer: an address given twice gets two.
      return addresses.map((address) =>
        Option.map(Option.fromNullable(found.get(address)), (f) => ({
          entry: f.entry,
          data: new Uint8Array(f.data),
        })),
      );
    });

  /** Writes the bytes of a record version under a fresh key; expiring a little after the record. */
  const putData = (
    record: MemoryRecord,
    data: Uint8Array,
    at: number,
    timeout?: Duration.Duration,
  ) => {
    const key = newDataKey(record.address);
    return onData(
      "set",
      (m) =>
        m.set(
          key,
          Buffer.from(data),
          memberMillis(record.expireTime - at + DATA_GRACE_MS),
          memberMaxIdle(record.maxIdleMs > 0 ? record.maxIdleMs + DATA_GRACE_MS : 0),
        ),
      timeout,
    ).pipe(Effect.as(key));
  };

  /**
   * Where a version's bytes go: inline in the record, or (large ones) first
   * to `data` under a fresh key nobody else knows, so the record is complete
   * once visible.
   */
  const storageOf = (
    record: MemoryRecord,
    data: Uint8Array,
    at: number,
    timeout?: Duration.Duration,
  ): Effect.Effect<Storage, StoreUnavailable> =>
    data.length <= INLINE_MAX_BYTES
      ? Effect.succeed({
          _inline: Buffer.from(data.buffer, data.byteOffset, data.length).toString("base64"),
        })
      : Effect.map(putData(record, data, at, timeout), (key) => ({ _data: key }));

  const create = (record: MemoryRecord) =>
    serialized(record.address)(
      Effect.gen(function* () {
        const address = record.address;
        const at = yield* now;
        // No bytes yet: inline, so an allocation is one call.
        const value = json({ ...record, _inline: "" } satisfies StoredMeta);
        const ttl = memberMillis(record.expireTime - at);
        const maxIdle = memberMaxIdle(record.maxIdleMs);
        const putIfAbsent = onMeta("putIfAbsent", (m) =>
          m.putIfAbsent(address, value, ttl, maxIdle),
        );
        let existing = yield* putIfAbsent;
        if (existing !== null && liveMeta(existing, at) === undefined) {
          // Past its TTL but not yet removed by the member: expire it now (an `expired`
          // event, like the member's own), then take the address.
          existing = yield* withKeyLock(
            address,
            "get",
            (m) => m.get(address),
            (current, timeLeft) =>
              Effect.gen(function* () {
                if (current !== null && liveMeta(current, yield* now) !== undefined) return current;
                if (current !== null) {
                  yield* onMeta("evict", (m) => m.evict(address), yield* timeLeft);
                  const expiredKey = parse<StoredMeta>(current)._data;
                  if (expiredKey !== undefined) {
                    yield* bestEffort(
                      "deleting the bytes of an expired entry",
                      Effect.flatMap(timeLeft, (timeout) =>
                        onData("delete", (m) => m.delete(expiredKey), timeout),
                      ),
                    );
                  }
                }
                return yield* Effect.flatMap(timeLeft, (timeout) =>
                  onMeta(
                    "putIfAbsent",
                    (m) => m.putIfAbsent(address, value, ttl, maxIdle),
                    timeout,
                  ),
                );
              }),
          );
        }
        return existing === null;
      }),
    );

  /** Writes `next` over `stored` (read under the key lock at `at`); gives the record written. */
  const writeChange = (
    address: string,
    stored: StoredMeta,
    { record, data }: EntryChange,
    at: number,
    timeLeft: TimeLeft,
  ): Effect.Effect<WriteOutcome, StoreUnavailable> => {
    if (record.address !== address) {
      return Effect.dieMessage(`a change of ${address} must keep its address`);
    }
    // The TTL still counts from allocation: only what remains of it.
    const ttl = memberMillis(record.expireTime - at);
    const maxIdle = memberMaxIdle(record.maxIdleMs);
    const oldKey = stored._data;
    const storage: Effect.Effect<Storage, StoreUnavailable> =
      data !== undefined
        ? Effect.flatMap(timeLeft, (timeout) => storageOf(record, data, at, timeout))
        : oldKey === undefined
          ? Effect.succeed({ _inline: stored._inline ?? "" })
          : // The bytes stay; restart their max idle with the record's.
            Effect.flatMap(timeLeft, (timeout) =>
              onData("containsKey", (m) => m.containsKey(oldKey), timeout),
            ).pipe(Effect.as({ _data: oldKey }));
    return Effect.flatMap(storage, (storage) => {
      const value = json({ ...record, ...storage } satisfies StoredMeta);
      return Effect.flatMap(timeLeft, (timeout) =>
        onMeta("set", (m) => m.set(address, value, ttl, maxIdle), timeout),
      ).pipe(
        Effect.as(
          oldKey === undefined || storage._data === oldKey
            ? { record }
            : { record, replaced: oldKey },
        ),
      );
    });
  };

  /**
   * The entry's next version, as `decide` makes it from the live one
   * (undefined: left as it is), under the key lock; gives the record
   * written. The replaced bytes go with the unlock: the record no longer
   * points at them.
   */
  const change = <E>(
    address: string,
    decide: (current: StoredEntry) => Effect.Effect<EntryChange | undefined, E>,
  ) =>
    serialized(address)(
      withKeyLock(
        address,
        "getEntryView",
        // Not touching: a change decided against is no access (a write touches anyway).
        (m) => m.getEntryView(address),
        (view, timeLeft) =>
          Effect.clockWith(
            (clock): Effect.Effect<WriteOutcome | undefined, E | StoreUnavailable> => {
              const at = clock.unsafeCurrentTimeMillis();
              const stored = liveMeta(view?.value ?? null, at);
              if (view === null || stored === undefined) return Effect.succeed(undefined);
              return Effect.flatMap(decide(untouchedEntry(view, stored, at)), (next) =>
                next === undefined
                  ? Effect.succeed(undefined)
                  : writeChange(address, stored, next, at, timeLeft),
              );
            },
          ),
        (outcome) => outcome?.replaced,
      ),
    ).pipe(Effect.map((outcome) => outcome?.record));

  const modify = <E>(
    address: string,
    f: (current: StoredEntry) => Effect.Effect<EntryChange, E>,
  ): Effect.Effect<Option.Option<StoredEntry>, E | StoreUnavailable> =>
    Effect.flatMap(change(address, f), (record) =>
      record === undefined
        ? Effect.succeed(Option.none())
        : Effect.clockWith((clock) =>
            Effect.succeed(
              Option.some({ record, lastAccessTime: clock.unsafeCurrentTimeMillis() }),
            ),
          ),
    );

  const update = (
    address: string,
    expectedRevision: number,
    record: MemoryRecord,
    data?: Uint8Array,
  ) =>
    record.address !== address
      ? Effect.dieMessage(`update of ${address} must not change its address`)
      : change(address, (current) =>
          Effect.succeed(
            current.record.revision === expectedRevision ? { record, data } : undefined,
          ),
        ).pipe(Effect.map((written) => written !== undefined));

  const remove = (address: string) =>
    serialized(address)(
      Effect.gen(function* () {
        const old = yield* onMeta("remove", (m) => m.remove(address));
        if (old === null || typeof old === "boolean") return false;
        const stored = parse<StoredMeta>(old);
        const dataKey = stored._data;
        if (dataKey !== undefined) {
          yield* bestEffort(
            "deleting removed bytes",
            onData("delete", (m) => m.delete(dataKey)),
          );
        }
        // Past its TTL it was not there any more for callers.
        return (yield* now) < stored.expireTime;
      }),
    );

  const query = (filter: MemoryFilter) =>
    Effect.gen(function* () {
      const predicate = predicateOf(filter);
      const values = yield* onMeta("valuesWithPredicate", (m) =>
        m.valuesWithPredicate(predicate).then((list) => list.toArray()),
      );
      const at = yield* now;
      const live = values.flatMap((v) => {
        const stored = liveMeta(v, at);
        return stored === undefined ? [] : [stored];
      });
      if (live.length > QUERY_ACCESS_TIMES_LIMIT) {
        // Too many for one call each: the last write, a lower bound of the last access.
        return live.map(
          (s): StoredEntry => ({ record: recordOf(s), lastAccessTime: s.lastWriteTime }),
        );
      }
      const found = yield* Effect.forEach(live, (s) => getUntouched(s.address), {
        concurrency: PARALLEL,
      });
      return found.flatMap(Option.toArray);
    });

  return {
    create,
    get: (address, touch) => (touch ? getTouched(address) : getUntouched(address)),
    read,
    readMany,
    modify,
    update,
    remove,
    query,
  };
};
