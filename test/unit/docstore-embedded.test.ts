import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "@effect/vitest";
import { Effect, Option } from "effect";
import { EmbeddedStore } from "../../src/datastore/embedded.js";
import { type Doc, DocStore, type DocStoreShape } from "../../src/datastore/store.js";
import { docStoreConformance } from "../conformance/docstore.suite.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "fo-docstore-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => path.join(root, `store${dirs++}`);

docStoreConformance("embedded", () => EmbeddedStore.layer({ dir: freshDir() }));

/** Runs `f` with the store in `dir` open, and closes it as a process exit would. */
const withStore = <A, E>(dir: string, f: (store: DocStoreShape) => Effect.Effect<A, E>) =>
  Effect.flatMap(DocStore, f).pipe(Effect.provide(EmbeddedStore.layer({ dir })));

const linesOf = (file: string): string[] =>
  fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line !== "");

/** The message of the failure a store start ended with. */
const startFailure = (dir: string) =>
  Effect.flip(withStore(dir, () => Effect.void)).pipe(
    Effect.map((e) => (e.cause instanceof Error ? e.cause.message : String(e.cause))),
  );

describe("embedded DocStore", () => {
  it.effect("keeps data, deletions and counters across a restart", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      const crashCopy = freshDir();
      yield* withStore(dir, (store) =>
        Effect.gen(function* () {
          const c = store.collection("things");
          for (const [id, v] of [
            ["a", 1],
            ["b", 2],
            ["c", 3],
          ] as const) {
            yield* c.insert({ _id: id, v });
          }
          yield* c.update("a", { v: 10 });
          yield* c.remove("b");
          yield* c.removeWhere([{ path: "v", op: "eq", value: 3 }]);
          yield* store.nextSequence("ids");
          yield* store.nextSequence("ids");
          // What a crash now would leave: every acknowledged write is already on disk.
          fs.cpSync(dir, crashCopy, { recursive: true });
        }),
      );
      for (const d of [dir, crashCopy]) {
        yield* withStore(d, (store) =>
          Effect.gen(function* () {
            expect(yield* store.collection("things").find({ where: [], limit: 10 })).toEqual([
              { _id: "a", v: 10 },
            ]);
            expect(yield* store.nextSequence("ids")).toBe(3);
            expect(yield* store.nextSequence("other")).toBe(1);
          }),
        );
      }
    }),
  );

  it.effect("compacts a log that outgrew its documents, and on close, keeping the data", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      const file = path.join(dir, "big.jsonl");
      yield* withStore(dir, (store) =>
        Effect.gen(function* () {
          const c = store.collection("big");
          for (let i = 0; i < 300; i++) yield* c.insert({ _id: `d${i}`, round: 0 });
          for (let round = 1; round <= 4; round++) {
            for (let i = 0; i < 300; i++) yield* c.update(`d${i}`, { round });
          }
          expect(linesOf(file).length).toBeLessThan(1000); // 1,500 lines without compaction
          for (let i = 0; i < 1100; i++) yield* store.nextSequence("seq");
          expect(linesOf(path.join(dir, "counters.seq")).length).toBeLessThan(1000);
        }),
      );
      expect(linesOf(file)).toHaveLength(300);
      yield* withStore(dir, (store) =>
        Effect.gen(function* () {
          const docs = yield* store.collection("big").find({ where: [], limit: 1000 });
          expect(docs).toHaveLength(300);
          expect(docs.every((d) => d.round === 4)).toBe(true);
          expect(yield* store.nextSequence("seq")).toBe(1101);
        }),
      );
      expect(fs.readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    }),
  );

  it.effect("ignores what a crash leaves: a torn last line, a half-written compaction", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      const file = path.join(dir, "things.jsonl");
      fs.mkdirSync(dir);
      fs.writeFileSync(
        file,
        '{"put":{"_id":"a","v":1}}\n{"put":{"_id":"b","v":2}}\n{"del":"a"}\n{"put":{"_id":"c","v"',
      );
      fs.writeFileSync(`${file}.tmp`, '{"put":{"_id":"x"}}\n{"put":');
      const all = (store: DocStoreShape) =>
        store.collection("things").find({ where: [], limit: 10 });
      yield* withStore(dir, (store) =>
        Effect.gen(function* () {
          expect(yield* all(store)).toEqual([{ _id: "b", v: 2 }]);
          yield* store.collection("things").insert({ _id: "d", v: 4 });
        }),
      );
      for (const line of linesOf(file)) expect(() => JSON.parse(line)).not.toThrow();
      expect(fs.existsSync(`${file}.tmp`)).toBe(false);
      expect(yield* withStore(dir, all)).toEqual([
        { _id: "b", v: 2 },
        { _id: "d", v: 4 },
      ]);
    }),
  );

  it.effect("fails to start on a corrupt line before the end, and releases the lock", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      fs.mkdirSync(dir);
      fs.writeFileSync(
        path.join(dir, "things.jsonl"),
        '{"put":{"_id":"a"}}\nnot json\n{"del":"a"}\n',
      );
      expect(yield* startFailure(dir)).toMatch(/things\.jsonl:2: unreadable log entry/);
      expect(fs.existsSync(path.join(dir, "LOCK"))).toBe(false);
    }),
  );

  it.effect("documents handed in and out do not alias the stored ones", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      yield* withStore(dir, (store) =>
        Effect.gen(function* () {
          const c = store.collection("things");
          const original = { _id: "a", list: [1], nested: { x: 1 } };
          yield* c.insert(original);
          original.list.push(2);
          original.nested.x = 2;
          const spoil = (doc: Doc | undefined) => {
            if (doc === undefined) throw new Error("document not found");
            (doc.list as number[]).push(99);
            (doc.nested as { x: number }).x = 99;
          };
          spoil(Option.getOrUndefined(yield* c.get("a")));
          spoil((yield* c.getMany(["a"]))[0]);
          spoil((yield* c.find({ where: [], limit: 1 }))[0]);
          spoil(Option.getOrUndefined(yield* c.update("a", { other: 1 })));
          expect(yield* c.get("a")).toEqual(
            Option.some({ _id: "a", list: [1], nested: { x: 1 }, other: 1 }),
          );
        }),
      );
    }),
  );

  it.effect("one store per directory: a second open in this process fails", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      const message = yield* withStore(dir, () => startFailure(dir));
      expect(message).toMatch(/already open in this process/);
      yield* withStore(dir, () => Effect.void); // released: opens again
    }),
  );

  it.effect("a LOCK of a live process fails the start; a dead process's is taken over", () =>
    Effect.gen(function* () {
      const dir = freshDir();
      fs.mkdirSync(dir);
      const lock = path.join(dir, "LOCK");
      fs.writeFileSync(lock, `${process.ppid}\n`);
      expect(yield* startFailure(dir)).toMatch(`in use by process ${process.ppid}`);
      expect(fs.readFileSync(lock, "utf8")).toBe(`${process.ppid}\n`); // not taken away
      const dead = spawnSync(process.execPath, ["-e", ""]).pid;
      fs.writeFileSync(lock, `${dead}\n`);
      yield* withStore(dir, () =>
        Effect.sync(() => expect(fs.readFileSync(lock, "utf8")).toBe(`${process.pid}\n`)),
      );
      expect(fs.existsSync(lock)).toBe(false);
    }),
  );

  it.effect("rejects collection names that could escape the directory", () =>
    withStore(freshDir(), (store) =>
      Effect.sync(() => {
        expect(() => store.collection("../etc")).toThrow(/invalid collection name/);
        expect(() => store.collection("Things1")).toThrow(/invalid collection name/);
      }),
    ),
  );

  it.effect("fails with StoreUnavailable once closed", () =>
    Effect.gen(function* () {
      const store = yield* withStore(freshDir(), Effect.succeed);
      const error = yield* Effect.flip(store.collection("things").insert({ _id: "a" }));
      expect(error._tag).toBe("StoreUnavailable");
    }),
  );
});
