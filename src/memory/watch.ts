/**
 * WatchMemory: the backend's events (from every mesh instance sharing it),
 * filtered and sent as they happen, with a heartbeat so idle streams stay open.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Effect, Queue, Schedule, Stream } from "effect";
import type { WatchMemoryResponseSchema } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import {
  WatchMemoryResponse_Type as Type,
  type WatchMemoryRequest,
} from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import type { InvalidArgument, Unavailable } from "../common/errors.js";
import * as V from "../common/validate.js";
import { branchPathViolations, isWithin } from "./address.js";
import { toEntry, unavailable } from "./common.js";
import type { MemoryStoreShape, StoreEvent } from "./store.js";

const HEARTBEAT = "25 seconds";

const types: Record<StoreEvent["type"], Type> = {
  created: Type.ALLOCATED,
  updated: Type.WRITTEN,
  removed: Type.RELEASED,
  expired: Type.EXPIRED,
};

type Item = MessageInitShape<typeof WatchMemoryResponseSchema>;

export const makeWatch = (store: MemoryStoreShape) => {
  const watchMemory = (
    req: WatchMemoryRequest,
  ): Stream.Stream<Item, InvalidArgument | Unavailable> => {
    const checks = V.check(
      req.executionId === "" ? [] : V.identifier("execution_id", req.executionId),
      req.branchPathPrefix === ""
        ? []
        : branchPathViolations("branch_path_prefix", req.branchPathPrefix),
      req.branchPathPrefix !== "" && req.executionId === ""
        ? [{ field: "branch_path_prefix", description: "needs execution_id" }]
        : [],
      V.maxLength("address_prefix", req.addressPrefix, 2048),
    );
    // The address text carries execution and branch, so events without a record still filter.
    const matches = (e: StoreEvent) => {
      const [executionId = "", , , branchPath = ""] = e.address.split(":");
      return (
        (req.executionId === "" || executionId === req.executionId) &&
        (req.branchPathPrefix === "" || isWithin(branchPath, req.branchPathPrefix)) &&
        e.address.startsWith(req.addressPrefix)
      );
    };
    const toItem = (e: StoreEvent): Item => ({
      type: types[e.type],
      address: e.address,
      ...(e.record && (e.type === "created" || e.type === "updated")
        ? { entry: toEntry({ record: e.record, lastAccessTime: e.time }, e.time) }
        : {}),
      time: timestampFromMs(e.time),
    });
    const heartbeats = Stream.fromSchedule(Schedule.spaced(HEARTBEAT)).pipe(
      Stream.map((): Item => ({ type: Type.HEARTBEAT })),
    );
    // Subscribed before STARTED goes out: every change made after the caller
    // sees STARTED is in the stream.
    return Stream.unwrapScoped(
      Effect.gen(function* () {
        yield* checks;
        const queue = yield* unavailable(store.subscribe);
        const events = Stream.repeatEffect(Queue.take(queue)).pipe(
          Stream.filter(matches),
          Stream.map(toItem),
        );
        return Stream.concat(
          Stream.succeed<Item>({ type: Type.STARTED }),
          Stream.merge(events, heartbeats),
        );
      }),
    );
  };
  return { watchMemory };
};
