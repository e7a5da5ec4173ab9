/** Pieces every MemoryManager area uses. */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type MemoryEntry,
  MemoryEntrySchema,
  StepType,
} from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import { unavailableAs } from "../common/store-error.js";
import type { StoredEntry } from "./store.js";

export const unavailable = unavailableAs("memory");

export const toEntry = ({ record: r, lastAccessTime }: StoredEntry, now: number): MemoryEntry =>
  create(MemoryEntrySchema, {
    address: r.address,
    parts: {
      executionId: r.executionId,
      flowId: r.flowId,
      stepType: StepType[r.stepType as keyof typeof StepType],
      branchPath: r.branchPath,
      stepId: r.stepId,
      dataType: r.dataType,
      additionalInfo: r.additionalInfo,
    },
    owner: r.owner,
    contentType: r.contentType,
    sizeBytes: BigInt(r.sizeBytes),
    sizeLimitBytes: BigInt(r.sizeLimitBytes),
    version: BigInt(r.version),
    allocateTime: timestampFromMs(r.allocateTime),
    lastAccessTime: timestampFromMs(lastAccessTime),
    ttl: durationFromMs(r.ttlMs),
    maxIdle: durationFromMs(r.maxIdleMs),
    remainingTtl: durationFromMs(Math.max(0, r.expireTime - now)),
  });
