/**
 * Keyset pagination. A page token records where the last page ended (its
 * sort value and id) and a hash of the query it belongs to; it is not an
 * offset, and every page re-applies the query's filters, so a crafted token
 * can reach nothing the query itself would not return.
 */
import { createHash } from "node:crypto";
import { Effect } from "effect";
import type { InvalidArgument } from "../common/errors.js";
import { getPath } from "./query.js";
import type { Collection, Doc, FindQuery, Json, StoreUnavailable } from "./store.js";
import { check } from "./validate.js";

interface Token {
  readonly v: Json;
  readonly i: string;
  readonly h: string;
}

const hash = (query: unknown): string =>
  createHash("sha256").update(JSON.stringify(query)).digest("base64url").slice(0, 16);

const encode = (token: Token): string => Buffer.from(JSON.stringify(token)).toString("base64url");

const decode = (pageToken: string, h: string) =>
  Effect.gen(function* () {
    if (pageToken === "") return undefined;
    let token: Partial<Token> | undefined;
    try {
      token = JSON.parse(Buffer.from(pageToken, "base64url").toString("utf8"));
    } catch {
      token = undefined;
    }
    if (token?.h !== h || typeof token.i !== "string" || token.v === undefined) {
      yield* check([
        {
          field: "page_token",
          description:
            "is not a token of this query (filters and order must not change between pages)",
        },
      ]);
      return undefined;
    }
    return { value: token.v, id: token.i };
  });

export interface Page {
  readonly docs: ReadonlyArray<Doc>;
  readonly nextPageToken: string;
}

/**
 * One page of `collection.find(query)`. `identity` is everything that defines
 * the query besides the position (filters, order, kind…): a token is only
 * valid for the same identity.
 */
export const findPage = (
  collection: Collection,
  query: Omit<FindQuery, "after" | "limit">,
  identity: unknown,
  size: number,
  pageToken: string,
  /** A filter the database cannot evaluate (e.g. semver ranges); pages are filled past rejects. */
  accept: (doc: Doc) => boolean = () => true,
): Effect.Effect<Page, InvalidArgument | StoreUnavailable> =>
  Effect.gen(function* () {
    const h = hash(identity);
    const sortPath = query.sort?.path ?? "_id";
    let after = yield* decode(pageToken, h);
    const page: Doc[] = [];
    // Read one more than a page so an empty next page is never promised.
    while (page.length <= size) {
      const batch = yield* collection.find({
        ...query,
        ...(after ? { after } : {}),
        limit: size + 1,
      });
      page.push(...batch.filter(accept));
      if (batch.length <= size) break;
      const last = batch[batch.length - 1] as Doc;
      after = { value: getPath(last, sortPath) ?? null, id: last._id };
    }
    if (page.length <= size) return { docs: page, nextPageToken: "" };
    const docs = page.slice(0, size);
    const last = docs[docs.length - 1] as Doc;
    return { docs, nextPageToken: encode({ v: getPath(last, sortPath) ?? null, i: last._id, h }) };
  });
