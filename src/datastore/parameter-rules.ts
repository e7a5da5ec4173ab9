/**
 * Parameter definitions: what a value must look like, and the checks that
 * yield FlowOrchestrator's CONFIGURATION_ERROR codes. Pure functions.
 */
import { ParameterDataType } from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import type { Violations } from "../common/validate.js";
import type { Json } from "./store.js";

const KEY = /^[A-Za-z0-9._-]{1,256}$/;

/** A parameter key: 1-256 letters, digits, `.`, `_` or `-`. */
export const keyCheck = (field: string, key: string): Violations =>
  KEY.test(key) ? [] : [{ field, description: "must be 1-256 letters, digits, '.', '_' or '-'" }];

export type DataTypeName = "STRING" | "INTEGER" | "NUMBER" | "BOOLEAN" | "OBJECT" | "LIST";

/** A definition as stored. */
export interface StoredDefinition {
  readonly key: string;
  readonly dataType: DataTypeName;
  readonly required: boolean;
  readonly defaultValue: Json | null;
  readonly hasDefault: boolean;
  readonly pattern: string;
  readonly minimum: number | null;
  readonly maximum: number | null;
  readonly allowedValues: Json[];
  readonly dependsOn: string[];
}

export const dataTypeName = (t: ParameterDataType) => ParameterDataType[t] as DataTypeName;

export type ConfigurationCode =
  | "CONFIGURATION_ERROR.MISSING_PARAMETER"
  | "CONFIGURATION_ERROR.INVALID_PARAMETER_TYPE"
  | "CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE"
  | "CONFIGURATION_ERROR.MISSING_DEPENDENT_PARAMETER";

export interface Problem {
  readonly key: string;
  readonly code: ConfigurationCode;
  readonly description: string;
}

const isType: Record<DataTypeName, (v: Json) => boolean> = {
  STRING: (v) => typeof v === "string",
  INTEGER: (v) => typeof v === "number" && Number.isInteger(v),
  NUMBER: (v) => typeof v === "number",
  BOOLEAN: (v) => typeof v === "boolean",
  OBJECT: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  LIST: (v) => Array.isArray(v),
};

/** Compiles a definition's pattern: anchored, Unicode-aware. */
export const compilePattern = (pattern: string): RegExp => new RegExp(`^(?:${pattern})$`, "u");

const same = (a: Json, b: Json) => JSON.stringify(a) === JSON.stringify(b);

/** Why `value` is not acceptable under `def`, or undefined when it is. */
export const checkValue = (def: StoredDefinition, value: Json): Problem | undefined => {
  const problem = (code: ConfigurationCode, description: string): Problem => ({
    key: def.key,
    code,
    description,
  });
  if (!isType[def.dataType](value)) {
    return problem("CONFIGURATION_ERROR.INVALID_PARAMETER_TYPE", `must be of type ${def.dataType}`);
  }
  if (def.pattern !== "" && typeof value === "string" && !compilePattern(def.pattern).test(value)) {
    return problem("CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE", `must match /${def.pattern}/`);
  }
  if (typeof value === "number") {
    if (def.minimum !== null && value < def.minimum) {
      return problem(
        "CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE",
        `must be at least ${def.minimum}`,
      );
    }
    if (def.maximum !== null && value > def.maximum) {
      return problem(
        "CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE",
        `must be at most ${def.maximum}`,
      );
    }
  }
  if (def.allowedValues.length > 0 && !def.allowedValues.some((a) => same(a, value))) {
    return problem(
      "CONFIGURATION_ERROR.INVALID_PARAMETER_VALUE",
      `must be one of ${def.allowedValues.map((a) => JSON.stringify(a)).join(", ")}`,
    );
  }
  return undefined;
};
