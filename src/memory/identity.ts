/**
 * With authentication on, who owns memory and holds locks is the
 * authenticated principal, never a field the caller fills in: an empty
 * `owner` / `holder` becomes the principal, and naming someone else is
 * PERMISSION_DENIED. (`new_owner` of TransferOwnership stays free: handing
 * memory on to another principal is the point of it.) Without
 * authentication the fields are taken as given.
 */
import { Effect, FiberRef } from "effect";
import { CurrentPrincipal } from "../common/caller.js";
import { PermissionDenied } from "../common/errors.js";
import type { MemoryManagerShape } from "./MemoryManager.js";

const as = <R extends Record<F, string>, F extends "owner" | "holder">(req: R, field: F) =>
  Effect.flatMap(FiberRef.get(CurrentPrincipal), (principal) => {
    if (principal === undefined || req[field] === principal) return Effect.succeed(req);
    if (req[field] === "") return Effect.succeed({ ...req, [field]: principal });
    return Effect.fail(
      new PermissionDenied({
        message: `${field} must be the authenticated principal (${principal})`,
        metadata: { field },
      }),
    );
  });

export const ownedByPrincipal = (port: MemoryManagerShape): MemoryManagerShape => ({
  ...port,
  allocate: (req) => Effect.flatMap(as(req, "owner"), port.allocate),
  write: (req) => Effect.flatMap(as(req, "owner"), port.write),
  release: (req) => Effect.flatMap(as(req, "owner"), port.release),
  transferOwnership: (req) => Effect.flatMap(as(req, "owner"), port.transferOwnership),
  mergeBranches: (req) => Effect.flatMap(as(req, "owner"), port.mergeBranches),
  tryLock: (req) => Effect.flatMap(as(req, "holder"), port.tryLock),
  unlock: (req) => Effect.flatMap(as(req, "holder"), port.unlock),
});
