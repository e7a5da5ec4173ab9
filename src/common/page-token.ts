/**
 * Opaque page tokens: where the last page ended plus a hash of the query it
 * belongs to. Not an offset; every page re-applies the query's filters, so a
 * crafted token reaches nothing the query itself would not return.
 */
import { createHash } from "node:crypto";
import { Effect } from "effect";
import type { InvalidArgument } from "./errors.js";
import type { Json } from "./json.js";
import { invalid } from "./validate.js";

export interface Position {
  readonly value: Json;
  readonly id: string;
}

const hash = (identity: unknown): string =>
  createHash("sha256").update(JSON.stringify(identity)).digest("base64url").slice(0, 16);

/** A token for the page after `position` of the query `identity`. */
export const encodePageToken = (position: Position, identity: unknown): string =>
  Buffer.from(JSON.stringify({ v: position.value, i: position.id, h: hash(identity) })).toString(
    "base64url",
  );

/** The position a token names; undefined for the first page; INVALID_ARGUMENT for a foreign token. */
export const decodePageToken = (
  token: string,
  identity: unknown,
): Effect.Effect<Position | undefined, InvalidArgument> => {
  if (token === "") return Effect.succeed(undefined);
  let parsed: { v?: Json; i?: unknown; h?: unknown } | undefined;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  if (parsed?.h !== hash(identity) || typeof parsed.i !== "string" || parsed.v === undefined) {
    return invalid(
      "page_token",
      "is not a token of this query (filters and order must not change between pages)",
    );
  }
  return Effect.succeed({ value: parsed.v, id: parsed.i });
};
