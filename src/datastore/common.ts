/** Small pieces every DataStore area uses. */
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampFromMs, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Clock } from "effect";
import { unavailableAs } from "../common/store-error.js";
import type { Json } from "./store.js";

export const unavailable = unavailableAs("datastore");

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
