/**
 * The embedded DocStore: the default backend when no MongoDB URI is
 * configured. Every collection lives in memory and in an append-only log
 * under `dir`:
 *
 * - `<name>.jsonl`: one `{"put":doc}` or `{"del":id}` per line, replayed at
 *   start; `counters.seq`: the same format for `nextSequence` counters;
 * - `LOCK`: the pid of the process that has the store open.
 *
 * A write is appended (synchronously, in the same step that checks and
 * applies it, so concurrent fibers never interleave) before its effect
 * succeeds: a crash or restart keeps every acknowledged write. Appends are
 * not fsynced one by one, so a power loss may drop the last writes; a
 * compaction (temp file, fsync, rename) is. A torn last line, left by a
 * crash mid-append, is cut off at load.
 *
 * Single process only: two processes sharing a directory would each replay
 * a stale log and overwrite the other's writes, so the LOCK file makes the
 * second one fail at start.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Effect, Layer, Option } from "effect";
import { findIn, matches } from "./query.js";
import {
  type Collection,
  type Condition,
  type Doc,
  DocStore,
  type DocStoreShape,
  StoreUnavailable,
} from "./store.js";

/** A log is compacted once it has this many lines and more than twice its live documents. */
const COMPACT_MIN_LINES = 1000;

const COLLECTION_NAME = /^[a-z_]+$/;
const COUNTERS_FILE = "counters.seq";
const LOCK_FILE = "LOCK";

const writeAll = (fd: number, data: Buffer) => {
  for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off);
};

/** Renames are durable only once the directory itself is synced (not possible everywhere). */
const syncDir = (dir: string) => {
  try {
    const fd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // e.g. Windows cannot open a directory: the rename is still atomic.
  }
};

/** One collection (or the counters): its live documents and its log file. */
class Log {
  readonly docs = new Map<string, Doc>();
  private fd: number | undefined;
  /** Bytes and lines of the file that are known good. */
  private size = 0;
  private lines = 0;
  private compactAt = COMPACT_MIN_LINES;
  /** A failed append could not be cut off (a compaction or the next start will). */
  private torn = false;

  constructor(readonly file: string) {}

  load(): void {
    if (!fs.existsSync(this.file)) return;
    const data = fs.readFileSync(this.file);
    // Whatever follows the last newline is a torn append (never acknowledged).
    const end = data.lastIndexOf(0x0a) + 1;
    const text = data.toString("utf8", 0, end).split("\n");
    text.forEach((line, i) => {
      if (line === "") return;
      try {
        this.replay(JSON.parse(line));
      } catch (cause) {
        throw new Error(`${this.file}:${i + 1}: unreadable log entry`, { cause });
      }
      this.lines++;
    });
    this.size = end;
    if (end < data.length) fs.truncateSync(this.file, end);
  }

  private replay(entry: { put?: Doc; del?: string }): void {
    if (typeof entry.put?._id === "string") this.docs.set(entry.put._id, entry.put);
    else if (typeof entry.del === "string") this.docs.delete(entry.del);
    else throw new Error("neither put nor del");
  }

  /** Stores a document (a copy: later changes to the caller's object do not leak in). */
  put(doc: Doc): Doc {
    const json = JSON.stringify(doc);
    this.append([`{"put":${json}}`]);
    const stored = JSON.parse(json) as Doc;
    this.docs.set(stored._id, stored);
    return stored;
  }

  delete(ids: ReadonlyArray<string>): void {
    if (ids.length === 0) return;
    this.append(ids.map((id) => JSON.stringify({ del: id })));
    for (const id of ids) this.docs.delete(id);
  }

  private append(lines: ReadonlyArray<string>): void {
    const data = Buffer.from(lines.map((l) => `${l}\n`).join(""));
    if (this.torn) throw new Error(`${this.file} ends in a partial entry: restart the mesh`);
    this.fd ??= fs.openSync(this.file, "a");
    try {
      writeAll(this.fd, data);
    } catch (error) {
      // Cut off a partial append so that the next one starts on a fresh line;
      // if even that fails, stop writing rather than corrupt the next entry.
      try {
        fs.ftruncateSync(this.fd, this.size);
      } catch {
        this.torn = true;
      }
      throw error;
    }
    this.size += data.length;
    this.lines += lines.length;
  }

  get bloated(): boolean {
    return this.lines > this.compactAt && this.lines > 2 * this.docs.size;
  }

  /** Rewrites the log as one `put` per live document. */
  compact(): void {
    // Retry a failed compaction only after another batch of writes, not on each one.
    this.compactAt = this.lines + COMPACT_MIN_LINES;
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, "w");
    let size = 0;
    try {
      let chunk: string[] = [];
      const flush = () => {
        const data = Buffer.from(chunk.join(""));
        writeAll(fd, data);
        size += data.length;
        chunk = [];
      };
      for (const doc of this.docs.values()) {
        chunk.push(`{"put":${JSON.stringify(doc)}}\n`);
        if (chunk.length >= 1000) flush();
      }
      flush();
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    syncDir(path.dirname(this.file));
    this.close(); // the next append reopens the new file
    this.size = size;
    this.lines = this.docs.size;
    this.compactAt = COMPACT_MIN_LINES;
    this.torn = false; // the rewritten file holds whole entries only
  }

  /** Compacts if the log holds any dead entry, then closes the file. */
  release(): void {
    try {
      if (this.lines > this.docs.size) this.compact();
    } finally {
      this.close();
    }
  }

  private close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Directories locked by this process: a pid check cannot tell two stores of one process apart. */
const lockedHere = new Set<string>();

const isAlive = (pid: number): boolean => {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
};

const lock = (dir: string): void => {
  const file = path.join(dir, LOCK_FILE);
  if (lockedHere.has(dir)) throw new Error(`embedded store ${dir} is already open in this process`);
  try {
    fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const owner = Number.parseInt(fs.readFileSync(file, "utf8"), 10);
    // Our own pid is a leftover of a previous run (containers reuse pid 1).
    if (owner !== process.pid && isAlive(owner)) {
      throw new Error(
        `embedded store ${dir} is in use by process ${owner}: two processes must not share it ` +
          `(if ${owner} is not a mesh, delete ${file})`,
      );
    }
    fs.writeFileSync(file, `${process.pid}\n`); // its owner died without releasing it
  }
  lockedHere.add(dir);
};

const unlock = (dir: string): void => {
  lockedHere.delete(dir);
  fs.rmSync(path.join(dir, LOCK_FILE), { force: true });
};

interface State {
  readonly dir: string;
  readonly logs: Map<string, Log>;
  readonly counters: Log;
  closed: boolean;
}

const open = (dir: string): State => {
  const logs = new Map<string, Log>();
  for (const entry of fs.readdirSync(dir)) {
    // A compaction interrupted before its rename: the log it was replacing is intact.
    if (entry.endsWith(".tmp")) fs.rmSync(path.join(dir, entry), { force: true });
    const name = entry.endsWith(".jsonl") ? entry.slice(0, -".jsonl".length) : "";
    if (!COLLECTION_NAME.test(name)) continue;
    const log = new Log(path.join(dir, entry));
    log.load();
    logs.set(name, log);
  }
  const counters = new Log(path.join(dir, COUNTERS_FILE));
  counters.load();
  return { dir, logs, counters, closed: false };
};

const close = (state: State): Effect.Effect<void> =>
  Effect.suspend(() => {
    state.closed = true; // first: a late write must not reopen a file once the lock is gone
    return Effect.forEach([...state.logs.values(), state.counters], (log) =>
      Effect.try(() => log.release()).pipe(
        Effect.catchAll((error) => Effect.logWarning(`closing ${log.file} failed`, error.cause)),
      ),
    );
  });

const clone = (doc: Doc): Doc => structuredClone(doc);

const make = (state: State): DocStoreShape => {
  /** One synchronous step: checks, the log append and the in-memory change never interleave. */
  const step = <A>(f: () => A): Effect.Effect<A, StoreUnavailable> =>
    Effect.try({
      try: () => {
        if (state.closed) throw new Error(`embedded store ${state.dir} is closed`);
        return f();
      },
      catch: (cause) => new StoreUnavailable({ cause }),
    });

  /** A write, then a compaction if due (its failure leaves the write in place). */
  const write = <A>(log: Log, f: () => A): Effect.Effect<A, StoreUnavailable> =>
    step(f).pipe(
      Effect.tap(() =>
        log.bloated
          ? Effect.try(() => log.compact()).pipe(
              Effect.catchAll((error) =>
                Effect.logWarning(`compacting ${log.file} failed`, error.cause),
              ),
            )
          : Effect.void,
      ),
    );

  const holds = (doc: Doc, condition: Condition | undefined): boolean =>
    condition === undefined || matches(doc, [{ ...condition, op: "eq" }]);

  const logOf = (name: string): Log => {
    if (!COLLECTION_NAME.test(name)) throw new Error(`invalid collection name: ${name}`);
    let log = state.logs.get(name);
    if (log === undefined) {
      log = new Log(path.join(state.dir, `${name}.jsonl`));
      state.logs.set(name, log);
    }
    return log;
  };

  const collection = (name: string): Collection => {
    const log = logOf(name);
    const { docs } = log;
    return {
      get: (id) => step(() => Option.fromNullable(docs.get(id)).pipe(Option.map(clone))),
      getMany: (ids) =>
        step(() => [...new Set(ids)].flatMap((id) => docs.get(id) ?? []).map(clone)),
      insert: (doc) =>
        write(log, () => {
          if (docs.has(doc._id)) return false;
          log.put(doc);
          return true;
        }),
      update: (id, set, condition) =>
        "_id" in set && set._id !== id
          ? Effect.dieMessage(`update of ${id} must not change its _id`)
          : write(log, () => {
              const current = docs.get(id);
              if (current === undefined || !holds(current, condition)) return Option.none();
              return Option.some(clone(log.put({ ...current, ...set, _id: id })));
            }),
      remove: (id, condition) =>
        write(log, () => {
          const current = docs.get(id);
          if (current === undefined || !holds(current, condition)) return false;
          log.delete([id]);
          return true;
        }),
      removeWhere: (where) =>
        write(log, () => {
          const ids = [...docs.values()].filter((d) => matches(d, where)).map((d) => d._id);
          log.delete(ids);
          return ids.length;
        }),
      find: (query) => step(() => findIn(docs.values(), query).map(clone)),
    };
  };

  return {
    collection,
    nextSequence: (name) =>
      write(state.counters, () => {
        const current = state.counters.docs.get(name)?.value;
        const value = (typeof current === "number" ? current : 0) + 1;
        state.counters.put({ _id: name, value });
        return value;
      }),
    ping: step(() => fs.accessSync(state.dir, fs.constants.W_OK)),
    backend: "embedded",
  };
};

const attempt = <A>(f: () => A) =>
  Effect.try({ try: f, catch: (cause) => new StoreUnavailable({ cause }) });

export const EmbeddedStore = {
  /** The store in `options.dir` (created if needed), open for the layer's lifetime. */
  layer: (options: { readonly dir: string }): Layer.Layer<DocStore, StoreUnavailable> =>
    Layer.scoped(
      DocStore,
      Effect.gen(function* () {
        const dir = yield* attempt(() => {
          fs.mkdirSync(options.dir, { recursive: true });
          return fs.realpathSync(options.dir); // one lock per directory, however it is named
        });
        yield* Effect.acquireRelease(
          attempt(() => lock(dir)),
          () => Effect.sync(() => unlock(dir)),
        );
        const state = yield* Effect.acquireRelease(
          attempt(() => open(dir)),
          close,
        );
        return make(state);
      }),
    ),
};
