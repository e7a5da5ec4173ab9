/**
 * The one error table (API-GUIDE.md): typed port errors → gRPC status code and
 * FlowOrchestrator error detail. Defects become INTERNAL with a generic
 * message and an error id that is also logged; internal detail never reaches
 * the caller.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, ErrorSeverity } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { MeshError, Severity } from "../common/errors.js";

interface Row {
  readonly status: Code;
  /** FlowOrchestrator code used when the error does not name a more specific one. */
  readonly code: string;
}

/** Exhaustive by construction: adding a MeshError without a row does not compile. */
export const errorTable: { readonly [K in MeshError["_tag"]]: Row } = {
  InvalidArgument: { status: Code.InvalidArgument, code: "DATA_ERROR.INVALID_ARGUMENT" },
  NotFound: { status: Code.NotFound, code: "RESOURCE_ERROR.NOT_FOUND" },
  AlreadyExists: { status: Code.AlreadyExists, code: "RESOURCE_ERROR.ALREADY_EXISTS" },
  Aborted: { status: Code.Aborted, code: "RESOURCE_ERROR.CONFLICT" },
  FailedPrecondition: { status: Code.FailedPrecondition, code: "PROCESSING_ERROR.INVALID_STATE" },
  PermissionDenied: {
    status: Code.PermissionDenied,
    code: "AUTHENTICATION_ERROR.PERMISSION_DENIED",
  },
  Unauthenticated: {
    status: Code.Unauthenticated,
    code: "AUTHENTICATION_ERROR.INVALID_CREDENTIALS",
  },
  ResourceExhausted: { status: Code.ResourceExhausted, code: "RESOURCE_ERROR.QUOTA_EXCEEDED" },
  Unavailable: { status: Code.Unavailable, code: "RESOURCE_ERROR.UNAVAILABLE" },
  DeadlineExceeded: { status: Code.DeadlineExceeded, code: "CONNECTION_ERROR.TIMEOUT" },
  Internal: { status: Code.Internal, code: "SYSTEM_ERROR.INTERNAL" },
  Unimplemented: { status: Code.Unimplemented, code: "SYSTEM_ERROR.UNIMPLEMENTED" },
};

/** FlowOrchestrator codes for errors raised by the transport itself (limits, deadlines, bugs). */
const codeForStatus: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "DATA_ERROR.INVALID_ARGUMENT",
  [Code.ResourceExhausted]: "RESOURCE_ERROR.QUOTA_EXCEEDED",
  [Code.DeadlineExceeded]: "CONNECTION_ERROR.TIMEOUT",
  [Code.Canceled]: "CONNECTION_ERROR.CANCELLED",
  [Code.Unimplemented]: "SYSTEM_ERROR.UNIMPLEMENTED",
  [Code.Unavailable]: "RESOURCE_ERROR.UNAVAILABLE",
  [Code.Unauthenticated]: "AUTHENTICATION_ERROR.INVALID_CREDENTIALS",
  [Code.PermissionDenied]: "AUTHENTICATION_ERROR.PERMISSION_DENIED",
  [Code.NotFound]: "RESOURCE_ERROR.NOT_FOUND",
};

const severities: Record<Severity, ErrorSeverity> = {
  CRITICAL: ErrorSeverity.CRITICAL,
  MAJOR: ErrorSeverity.MAJOR,
  MINOR: ErrorSeverity.MINOR,
  WARNING: ErrorSeverity.WARNING,
  INFO: ErrorSeverity.INFO,
};

/** A typed port error as the caller sees it. */
export const meshErrorToConnect = (error: MeshError): ConnectError => {
  const row = errorTable[error._tag];
  const err = new ConnectError(error.message, row.status);
  err.details.push({
    desc: ErrorDetailSchema,
    value: {
      code: error.code ?? row.code,
      severity: severities[error.severity ?? "MAJOR"],
      metadata: { ...error.metadata },
      errorId: error._tag === "Internal" ? error.errorId : undefined,
    },
  });
  if (error._tag === "InvalidArgument") {
    err.details.push({
      desc: BadRequestSchema,
      value: { fieldViolations: error.violations.map((v) => ({ ...v })) },
    });
  }
  return err;
};

/** A bug: generic message for the caller, the id ties it to the log line. */
export const internalError = (errorId: string): ConnectError => {
  const err = new ConnectError(`internal error (error id ${errorId})`, Code.Internal);
  err.details.push({
    desc: ErrorDetailSchema,
    value: { code: "SYSTEM_ERROR.INTERNAL", severity: ErrorSeverity.CRITICAL, errorId },
  });
  return err;
};

/**
 * Adds the FlowOrchestrator detail to an error raised by the transport (a
 * deadline, a size limit, an unknown method) so every error has one.
 */
export const withErrorDetail = (err: ConnectError): ConnectError => {
  if (err.findDetails(ErrorDetailSchema).length > 0) return err;
  err.details.push({
    desc: ErrorDetailSchema,
    value: {
      code: codeForStatus[err.code] ?? "SYSTEM_ERROR.UNKNOWN",
      severity: ErrorSeverity.MAJOR,
    },
  });
  return err;
};
