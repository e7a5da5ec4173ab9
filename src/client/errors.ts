/**
 * A status from another node → the same tagged error the node's port failed
 * with: the gRPC code picks the class, the FlowOrchestrator detail restores
 * the specific code, severity, metadata and (for INTERNAL) the error id; a
 * BadRequest detail restores the field violations. So a forwarded call fails
 * exactly as a local one would, and a client branches on `_tag`.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorDetailSchema, ErrorSeverity } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import * as E from "../common/errors.js";

const severities: Record<ErrorSeverity, E.Severity | undefined> = {
  [ErrorSeverity.UNSPECIFIED]: undefined,
  [ErrorSeverity.CRITICAL]: "CRITICAL",
  [ErrorSeverity.MAJOR]: "MAJOR",
  [ErrorSeverity.MINOR]: "MINOR",
  [ErrorSeverity.WARNING]: "WARNING",
  [ErrorSeverity.INFO]: "INFO",
};

export const connectToMeshError = (error: unknown): E.MeshError => {
  const err = ConnectError.from(error);
  const [detail] = err.findDetails(ErrorDetailSchema);
  const fields = {
    message: err.rawMessage,
    ...(detail === undefined
      ? {}
      : {
          code: detail.code,
          severity: severities[detail.severity],
          metadata: detail.metadata,
        }),
    cause: err,
  };
  switch (err.code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return new E.InvalidArgument({
        ...fields,
        violations: err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations),
      });
    case Code.NotFound:
      return new E.NotFound(fields);
    case Code.AlreadyExists:
      return new E.AlreadyExists(fields);
    case Code.Aborted:
      return new E.Aborted(fields);
    case Code.FailedPrecondition:
      return new E.FailedPrecondition(fields);
    case Code.PermissionDenied:
      return new E.PermissionDenied(fields);
    case Code.Unauthenticated:
      return new E.Unauthenticated(fields);
    case Code.ResourceExhausted:
      return new E.ResourceExhausted(fields);
    // A node shutting down cancels its calls: another node may take the retry.
    case Code.Unavailable:
    case Code.Canceled:
      return new E.Unavailable(fields);
    case Code.DeadlineExceeded:
      return new E.DeadlineExceeded(fields);
    case Code.Unimplemented:
      return new E.Unimplemented(fields);
    default:
      return new E.Internal({ ...fields, errorId: detail?.errorId || undefined });
  }
};
