/** Pieces every MessageBus area uses. */

import type { Duration } from "@bufbuild/protobuf/wkt";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { unavailableAs } from "../common/store-error.js";
import type * as V from "../common/validate.js";

export const unavailable = unavailableAs("message bus");

/**
 * A duration field in milliseconds: `fallback` when unset, violations when
 * outside [min, max].
 */
export const durationField = (
  field: string,
  value: Duration | undefined,
  range: { readonly fallback: number; readonly min: number; readonly max: number },
): { readonly ms: number; readonly violations: V.Violations } => {
  if (value === undefined) return { ms: range.fallback, violations: [] };
  const ms = durationMs(value);
  return ms >= range.min && ms <= range.max
    ? { ms, violations: [] }
    : {
        ms,
        violations: [
          { field, description: `must be between ${range.min / 1000} s and ${range.max / 1000} s` },
        ],
      };
};
