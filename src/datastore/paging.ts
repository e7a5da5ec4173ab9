/** Keyset pagination over a storage collection (tokens: `common/page-token.ts`). */
import { Effect } from "effect";
import type { InvalidArgument } from "../common/errors.js";
import { decodePageToken, encodePageToken } from "../common/page-token.js";
import { getPath } from "./query.js";
import type { Collection, Doc, FindQuery, StoreUnavailable } from "./store.js";

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
    const sortPath = query.sort?.path ?? "_id";
    let after = yield* decodePageToken(pageToken, identity);
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
    return {
      docs,
      nextPageToken: encodePageToken(
        { value: getPath(last, sortPath) ?? null, id: last._id },
        identity,
      ),
    };
  });
