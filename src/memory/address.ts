/**
 * Memory addresses (DOMAIN.md): the canonical text form
 * `{executionId}:{flowId}:{stepType}:{branchPath}:{stepId}:{dataType}[:{additionalInfo}]`,
 * the structured form, and branch-path relations. Pure functions.
 */
import { Effect } from "effect";
import type { AddressRef, MemoryAddress } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import { StepType } from "../../gen/floworchestrator/memory/v1/memory_pb.js";
import type { InvalidArgument } from "../common/errors.js";
import { check, invalid, type Violations } from "../common/validate.js";

export interface Address {
  readonly executionId: string;
  readonly flowId: string;
  readonly stepType: "IMPORT" | "PROCESS" | "EXPORT";
  readonly branchPath: string;
  readonly stepId: string;
  readonly dataType: string;
  readonly additionalInfo: string;
}

const STEP_TYPES = ["IMPORT", "PROCESS", "EXPORT"] as const;
const SEGMENTS = [
  "execution_id",
  "flow_id",
  "step_type",
  "branch_path",
  "step_id",
  "data_type",
  "additional_info",
];
const BRANCH_PART = /^[A-Za-z0-9_-]{1,64}$/;
export const MAX_BRANCH_DEPTH = 16;
const MAX_SEGMENT = 256;

const segment = (field: string, value: string, optional = false): Violations => {
  if (value.length === 0) return optional ? [] : [{ field, description: "must not be empty" }];
  if (value.length > MAX_SEGMENT)
    return [{ field, description: `must be at most ${MAX_SEGMENT} characters` }];
  if (value.includes(":"))
    return [{ field, description: "must not contain ':' (it separates address segments)" }];
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(value))
    return [{ field, description: "must not contain control characters" }];
  return [];
};

/** A branch path: `main`, `main.a`, `main.a.b`. */
export const branchPathViolations = (field: string, path: string): Violations => {
  const parts = path.split(".");
  if (path.length === 0) return [{ field, description: "must not be empty" }];
  if (parts[0] !== "main") return [{ field, description: "must start at the root branch 'main'" }];
  if (parts.length > MAX_BRANCH_DEPTH)
    return [{ field, description: `at most ${MAX_BRANCH_DEPTH} levels` }];
  if (!parts.every((p) => BRANCH_PART.test(p))) {
    return [
      {
        field,
        description: "each part must be 1-64 letters, digits, '_' or '-', separated by '.'",
      },
    ];
  }
  return [];
};

const partsViolations = (
  prefix: string,
  a: Address | MemoryAddress,
  stepTypeKnown: boolean,
): Violations => [
  ...segment(`${prefix}execution_id`, a.executionId),
  ...segment(`${prefix}flow_id`, a.flowId),
  ...(stepTypeKnown
    ? []
    : [{ field: `${prefix}step_type`, description: "must be IMPORT, PROCESS or EXPORT" }]),
  ...branchPathViolations(`${prefix}branch_path`, a.branchPath),
  ...segment(`${prefix}step_id`, a.stepId),
  ...segment(`${prefix}data_type`, a.dataType),
  ...segment(`${prefix}additional_info`, a.additionalInfo, true),
];

/** A segment of a text address, as `segment` accepts it. */
const SEGMENT_TEXT = "[^:\\u0000-\\u001f\\u007f]{1,256}";
/**
 * A text address every check of `parseText` accepts (segments as `segment`
 * wants them, a branch path as `branchPathViolations` wants it): one test
 * instead of the checks, which only run to name what is wrong.
 */
const VALID_TEXT = new RegExp(
  `^${SEGMENT_TEXT}:${SEGMENT_TEXT}:(?:IMPORT|PROCESS|EXPORT):main(?:\\.[A-Za-z0-9_-]{1,64}){0,${MAX_BRANCH_DEPTH - 1}}:${SEGMENT_TEXT}:${SEGMENT_TEXT}(?::${SEGMENT_TEXT})?$`,
);

/** Parses the canonical text form, naming every bad segment. */
export const parseText = (field: string, text: string): Effect.Effect<Address, InvalidArgument> => {
  const parts = text.split(":");
  const [executionId, flowId, stepType, branchPath, stepId, dataType, additionalInfo = ""] =
    parts as [string, string, string, string, string, string, string?];
  const address = {
    executionId,
    flowId,
    stepType,
    branchPath,
    stepId,
    dataType,
    additionalInfo,
  } as Address;
  if (VALID_TEXT.test(text)) return Effect.succeed(address);
  if (parts.length < 6 || parts.length > 7) {
    return invalid(
      field,
      `must have 6 or 7 ':'-separated segments (${SEGMENTS.join(":")}), found ${parts.length}`,
    );
  }
  const known = (STEP_TYPES as ReadonlyArray<string>).includes(stepType);
  const extra =
    parts.length === 7 && additionalInfo === ""
      ? [{ field: `${field}.additional_info`, description: "must not be empty when present" }]
      : [];
  return check(partsViolations(`${field}.`, address, known), extra).pipe(Effect.as(address));
};

/** Resolves either form of an address reference, validating it. */
export const resolveRef = (
  field: string,
  ref: AddressRef | undefined,
): Effect.Effect<Address, InvalidArgument> => {
  const kind = ref?.kind;
  if (kind?.case === "text") return parseText(field, kind.value);
  if (kind?.case === "parts") {
    const p = kind.value;
    const stepType = StepType[p.stepType] as string;
    const known = (STEP_TYPES as ReadonlyArray<string>).includes(stepType);
    const address = { ...p, stepType } as unknown as Address;
    return check(partsViolations(`${field}.parts.`, p, known)).pipe(Effect.as(address));
  }
  return invalid(field, "is required (text or parts)");
};

/**
 * The canonical text of the address `ref` resolved to (`a`): a valid text
 * address is its own canonical text (`formatAddress` would give it back).
 */
export const refText = (ref: AddressRef | undefined, a: Address): string =>
  ref?.kind.case === "text" ? ref.kind.value : formatAddress(a);

export const formatAddress = (a: Address): string =>
  [
    a.executionId,
    a.flowId,
    a.stepType,
    a.branchPath,
    a.stepId,
    a.dataType,
    ...(a.additionalInfo ? [a.additionalInfo] : []),
  ].join(":");

/** `main.a` is within `main.a` and `main`, never within `main.ab`. */
export const isWithin = (branch: string, ancestorOrSelf: string): boolean =>
  branch === ancestorOrSelf || branch.startsWith(`${ancestorOrSelf}.`);

export const parentOf = (branch: string): string => {
  const i = branch.lastIndexOf(".");
  return i < 0 ? "" : branch.slice(0, i);
};

/** The same address in another branch (merges promote outputs this way). */
export const inBranch = (a: Address, branchPath: string): Address => ({ ...a, branchPath });
