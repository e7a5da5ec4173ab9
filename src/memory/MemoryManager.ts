/**
 * The MemoryManager port: FlowOrchestrator's distributed working memory, one
 * method per RPC of `floworchestrator.memory.v1.MemoryManagerService`.
 */
import { Context } from "effect";
import type { MemoryManagerService } from "../../gen/floworchestrator/memory/v1/memory_manager_service_pb.js";
import type { PortOf } from "../common/port.js";

export type MemoryManagerShape = PortOf<typeof MemoryManagerService>;

export class MemoryManager extends Context.Tag("fo/MemoryManager")<
  MemoryManager,
  MemoryManagerShape
>() {}
