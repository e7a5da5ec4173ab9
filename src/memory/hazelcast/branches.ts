/**
 * Branch records in `branches`: `[executionId, branchPath]` (as JSON) → the
 * branch record; compare-and-set is `replaceIfSame` with the stored text
 * just read.
 */
import { Effect, Option } from "effect";
import { Predicates } from "hazelcast-client";
import type { BranchRecord, MemoryStoreShape } from "../store.js";
import { type Cluster, PARALLEL } from "./client.js";
import { json, parse } from "./stored.js";

const branchKey = (executionId: string, branchPath: string): string =>
  JSON.stringify([executionId, branchPath]);

export const makeBranchStore = ({ onBranches }: Cluster): MemoryStoreShape["branches"] => ({
  get: (executionId, branchPath) =>
    onBranches("get", (m) => m.get(branchKey(executionId, branchPath))).pipe(
      Effect.map((raw) => (raw === null ? Option.none() : Option.some(parse<BranchRecord>(raw)))),
    ),
  create: (record) =>
    onBranches("putIfAbsent", (m) =>
      m.putIfAbsent(branchKey(record.executionId, record.branchPath), json(record)),
    ).pipe(Effect.map((existing) => existing === null)),
  update: (expectedRevision, record) =>
    Effect.gen(function* () {
      const key = branchKey(record.executionId, record.branchPath);
      const current = yield* onBranches("get", (m) => m.get(key));
      if (current === null || parse<BranchRecord>(current).revision !== expectedRevision) {
        return false;
      }
      // Atomic on the member: compares the stored bytes with the text just read.
      return yield* onBranches("replaceIfSame", (m) => m.replaceIfSame(key, current, json(record)));
    }),
  list: (executionId) =>
    onBranches("valuesWithPredicate", (m) =>
      m
        .valuesWithPredicate(Predicates.equal("executionId", executionId))
        .then((list) => list.toArray()),
    ).pipe(
      Effect.map((values) =>
        values
          .map((v) => parse<BranchRecord>(v))
          .sort((a, b) => (a.branchPath < b.branchPath ? -1 : a.branchPath > b.branchPath ? 1 : 0)),
      ),
    ),
  removeExecution: (executionId) =>
    Effect.gen(function* () {
      const keys = yield* onBranches("keySetWithPredicate", (m) =>
        m.keySetWithPredicate(Predicates.equal("executionId", executionId)),
      );
      const removed = yield* Effect.forEach(
        keys,
        (key) => onBranches("remove", (m) => m.remove(key)),
        { concurrency: PARALLEL },
      );
      // Counted by what this call removed: a concurrent remover's share is not counted twice.
      return removed.filter((old) => old !== null && old !== false).length;
    }),
});
