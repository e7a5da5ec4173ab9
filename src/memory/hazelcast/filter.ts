/** A MemoryFilter as a predicate the members evaluate on the records in `meta`. */
import { type Predicate, Predicates } from "hazelcast-client";
import type { MemoryFilter } from "../store.js";

/**
 * `LIKE` pattern matching `literal` exactly. Hazelcast's LIKE knows only
 * `\%` and `\_` as escapes (a backslash before anything else, itself
 * included, is a plain character), so only the wildcards are escaped.
 */
const likeLiteral = (literal: string): string => literal.replace(/[%_]/g, "\\$&");

export const predicateOf = (filter: MemoryFilter): Predicate => {
  const parts: Predicate[] = [];
  const eq = (field: string, value: string | undefined) => {
    if (value !== undefined) parts.push(Predicates.equal(field, value));
  };
  eq("executionId", filter.executionId);
  eq("flowId", filter.flowId);
  eq("owner", filter.owner);
  eq("stepType", filter.stepType);
  const prefix = filter.branchPrefix;
  if (prefix !== undefined) {
    parts.push(
      Predicates.or(
        Predicates.equal("branchPath", prefix),
        Predicates.like("branchPath", `${likeLiteral(prefix)}.%`),
      ),
    );
  }
  const [only] = parts;
  if (parts.length === 0) return Predicates.alwaysTrue();
  if (parts.length === 1 && only !== undefined) return only;
  return Predicates.and(...parts);
};
