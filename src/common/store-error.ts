/** The failure every storage backend reports when it cannot be reached. */
import { Data, Effect } from "effect";
import { Unavailable } from "./errors.js";

/** The backend cannot be reached or failed; retrying later may help. */
export class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{
  readonly cause: unknown;
}> {}

/**
 * A backend failure as the caller sees it: UNAVAILABLE with a generic
 * message; the cause goes to the log only.
 */
export const unavailableAs =
  (backend: string) =>
  <A, E, R>(
    effect: Effect.Effect<A, E | StoreUnavailable, R>,
  ): Effect.Effect<A, Exclude<E, StoreUnavailable> | Unavailable, R> =>
    Effect.catchIf(
      effect,
      (e): e is StoreUnavailable => e instanceof StoreUnavailable,
      (e) =>
        Effect.logWarning(`${backend} backend unavailable`, e.cause).pipe(
          Effect.zipRight(
            Effect.fail(
              new Unavailable({
                message: `the ${backend} backend is unavailable; retry later`,
                cause: e.cause,
              }),
            ),
          ),
        ),
    ) as Effect.Effect<A, Exclude<E, StoreUnavailable> | Unavailable, R>;
