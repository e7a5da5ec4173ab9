import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorDetailSchema, ErrorSeverity } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import * as E from "../../src/common/errors.js";
import { internalError, meshErrorToConnect, withErrorDetail } from "../../src/server/errors.js";

const cases: Array<[E.MeshError, Code]> = [
  [new E.InvalidArgument({ message: "bad", violations: [] }), Code.InvalidArgument],
  [new E.NotFound({ message: "m" }), Code.NotFound],
  [new E.AlreadyExists({ message: "m" }), Code.AlreadyExists],
  [new E.Aborted({ message: "m" }), Code.Aborted],
  [new E.FailedPrecondition({ message: "m" }), Code.FailedPrecondition],
  [new E.PermissionDenied({ message: "m" }), Code.PermissionDenied],
  [new E.Unauthenticated({ message: "m" }), Code.Unauthenticated],
  [new E.ResourceExhausted({ message: "m" }), Code.ResourceExhausted],
  [new E.Unavailable({ message: "m" }), Code.Unavailable],
  [new E.DeadlineExceeded({ message: "m" }), Code.DeadlineExceeded],
];

describe("error table", () => {
  it.each(cases)("%s maps to its status code with a FlowOrchestrator detail", (error, code) => {
    const err = meshErrorToConnect(error);
    expect(err.code).toBe(code);
    const [detail] = err.findDetails(ErrorDetailSchema);
    expect(detail?.code).toMatch(/^[A-Z_]+\.[A-Z_]+$/);
    expect(detail?.severity).toBe(ErrorSeverity.MAJOR);
  });

  it("keeps a specific FlowOrchestrator code, severity and metadata", () => {
    const err = meshErrorToConnect(
      new E.FailedPrecondition({
        message: "version 1.2.0 is archived",
        code: "VERSION_ERROR.ARCHIVED_VERSION",
        severity: "MINOR",
        metadata: { version: "1.2.0" },
        cause: new Error("driver said something internal"),
      }),
    );
    expect(err.rawMessage).toBe("version 1.2.0 is archived");
    const [detail] = err.findDetails(ErrorDetailSchema);
    expect(detail?.code).toBe("VERSION_ERROR.ARCHIVED_VERSION");
    expect(detail?.severity).toBe(ErrorSeverity.MINOR);
    expect(detail?.metadata).toEqual({ version: "1.2.0" });
    expect(err.message).not.toContain("driver said");
    expect(JSON.stringify(err.findDetails(ErrorDetailSchema))).not.toContain("driver said");
  });

  it("names each bad field in a google.rpc.BadRequest detail", () => {
    const err = meshErrorToConnect(
      new E.InvalidArgument({
        message: "invalid address",
        violations: [
          { field: "address.step_type", description: "must be IMPORT, PROCESS or EXPORT" },
          { field: "address.branch_path", description: "empty segment" },
        ],
      }),
    );
    const [bad] = err.findDetails(BadRequestSchema);
    expect(bad?.fieldViolations.map((v) => v.field)).toEqual([
      "address.step_type",
      "address.branch_path",
    ]);
  });

  it("INTERNAL carries only a generic message and the error id", () => {
    const err = internalError("abc-123");
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error (error id abc-123)");
    expect(err.findDetails(ErrorDetailSchema)[0]?.errorId).toBe("abc-123");
  });

  it("adds a detail to transport errors once", () => {
    const err = withErrorDetail(new ConnectError("too big", Code.ResourceExhausted));
    withErrorDetail(err);
    const details = err.findDetails(ErrorDetailSchema);
    expect(details).toHaveLength(1);
    expect(details[0]?.code).toBe("RESOURCE_ERROR.QUOTA_EXCEEDED");
  });
});
