/** Small pieces every DataStore area uses. */
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampFromMs, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Clock, Effect } from "effect";
import { Unavailable } from "../common/errors.js";
import { type Json, StoreUnavailable } from "./store.js";

/** A backend failure as the caller sees it: UNAVAILABLE, details only in the log. */
export const unavailable = <A, E, R>(
  effect: Effect.Effect<A, E | StoreUnavailable, R>,
): Effect.Effect<A, Exclude<E, StoreUnavailable> | Unavailable, R> =>
  Effect.catchIf(
    effect,
    (e): e is StoreUnavailable => e instanceof StoreUnavailable,
    (e) =>
      Effect.logWarning("datastore backend unavailable", e.cause).pipe(
        Effect.zipRight(
          Effect.fail(
            new Unavailable({
              message: "the datastore backend is unavailable; retry later",
              cause: e.cause,
            }),
          ),
        ),
      ),
  ) as Effect.Effect<A, Exclude<E, StoreUnavailable> | Unavailable, R>;

export const now = Clock.currentTimeMillis;

export const timestamp = (ms: number) => timestampFromMs(ms);

/** Fixed-width decimal so string order is numeric order (revisions, sequences). */
export const pad = (n: number): string => n.toString().padStart(15, "0");

/** A protobuf Value as plain JSON; undefined when absent or when no kind is set. */
export const jsonOf = (value: Value | undefined): Json | undefined =>
  value === undefined || value.kind.case === undefined
    ? undefined
    : (toJson(ValueSchema, value) as Json);

/** Plain JSON as a protobuf Value. */
export const toValue = (json: Json): Value => fromJson(ValueSchema, json as JsonValue);
