/**
 * The typed errors every port may fail with. Each names a class of failure
 * that callers handle differently; the one table in `server/errors.ts` turns
 * them into gRPC status codes. No transport or backend types here.
 */
import { Data } from "effect";

/** Severity of a FlowOrchestrator error (DOMAIN.md). */
export type Severity = "CRITICAL" | "MAJOR" | "MINOR" | "WARNING" | "INFO";

/** One bad input field, reported in a `google.rpc.BadRequest` detail. */
export interface FieldViolation {
  /** Path of the field in the request, e.g. `address.branch_path`. */
  readonly field: string;
  /** What is wrong with it, for a person. */
  readonly description: string;
}

interface ErrorFields {
  /** Safe for the caller to read: no backend addresses, no driver messages. */
  readonly message: string;
  /** FlowOrchestrator code (`CATEGORY.SPECIFIC`); the table supplies a default. */
  readonly code?: string;
  readonly severity?: Severity;
  /** Extra caller-safe context, e.g. the id that was not found. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Internal detail for the log only; never sent to the caller. */
  readonly cause?: unknown;
}

export class InvalidArgument extends Data.TaggedError("InvalidArgument")<
  ErrorFields & { readonly violations: ReadonlyArray<FieldViolation> }
> {}
export class NotFound extends Data.TaggedError("NotFound")<ErrorFields> {}
export class AlreadyExists extends Data.TaggedError("AlreadyExists")<ErrorFields> {}
/** Expected version or etag did not match: the caller lost a race. */
export class Aborted extends Data.TaggedError("Aborted")<ErrorFields> {}
/** The resource is in a state that does not allow this (e.g. ARCHIVED → ACTIVE). */
export class FailedPrecondition extends Data.TaggedError("FailedPrecondition")<ErrorFields> {}
export class PermissionDenied extends Data.TaggedError("PermissionDenied")<ErrorFields> {}
export class Unauthenticated extends Data.TaggedError("Unauthenticated")<ErrorFields> {}
/** A size, quota or rate limit was hit. */
export class ResourceExhausted extends Data.TaggedError("ResourceExhausted")<ErrorFields> {}
/** A backend is down or unreachable; retrying later may help. */
export class Unavailable extends Data.TaggedError("Unavailable")<ErrorFields> {}
export class DeadlineExceeded extends Data.TaggedError("DeadlineExceeded")<ErrorFields> {}
/**
 * Another mesh node failed the call with a bug of its own (INTERNAL, UNKNOWN,
 * DATA_LOSS): its error id ties it to that node's log.
 */
export class Internal extends Data.TaggedError("Internal")<
  ErrorFields & { readonly errorId?: string }
> {}
/** The node called does not implement the method (nodes of different versions). */
export class Unimplemented extends Data.TaggedError("Unimplemented")<ErrorFields> {}

/** Every error a port may fail with. Anything else is a defect (a bug). */
export type MeshError =
  | InvalidArgument
  | NotFound
  | AlreadyExists
  | Aborted
  | FailedPrecondition
  | PermissionDenied
  | Unauthenticated
  | ResourceExhausted
  | Unavailable
  | DeadlineExceeded
  | Internal
  | Unimplemented;
