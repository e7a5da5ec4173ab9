/**
 * Input checks shared by every DataStore operation. Each check returns the
 * violations it finds; `check` fails with one InvalidArgument naming them all
 * (a google.rpc.BadRequest detail on the wire).
 */
import { Effect } from "effect";
import semver from "semver";
import { type FieldViolation, InvalidArgument } from "./errors.js";
import type { Json } from "./json.js";

export type Violations = ReadonlyArray<FieldViolation>;

const v = (field: string, description: string): Violations => [{ field, description }];

/** The failure naming every violation found (at least one). */
export const invalidArgument = (violations: Violations): InvalidArgument => {
  const first = violations[0];
  const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : "";
  return new InvalidArgument({
    message: `invalid ${first?.field}: ${first?.description}${more}`,
    violations,
  });
};

/** Fails with every violation found, or succeeds. */
export const check = (
  ...groups: ReadonlyArray<Violations>
): Effect.Effect<void, InvalidArgument> => {
  const violations = groups.flat();
  return violations.length === 0 ? Effect.void : Effect.fail(invalidArgument(violations));
};

export const MAX_ID_LENGTH = 256;

/** Opaque identifiers (entity, service, execution, flow ids): no `:` (address separator), no NUL. */
export const identifier = (field: string, value: string): Violations => {
  if (value.length === 0) return v(field, "must not be empty");
  if (value.length > MAX_ID_LENGTH) return v(field, `must be at most ${MAX_ID_LENGTH} characters`);
  if (value.includes(":")) return v(field, "must not contain ':'");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(value)) return v(field, "must not contain control characters");
  return [];
};

const TYPE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

/** Kinds and type names (`flow_run`, `importer`). */
export const typeName = (field: string, value: string): Violations =>
  TYPE_NAME.test(value)
    ? []
    : v(field, "must be 1-63 lowercase letters, digits, '_' or '-', starting with a letter");

/** A strict semver 2.0.0 version (no `v` prefix, no surrounding spaces). */
export const semverVersion = (field: string, value: string): Violations =>
  semver.valid(value) === value
    ? []
    : v(field, `"${value}" is not a semantic version (e.g. 1.2.3)`);

/** An npm-style semver range (`>=1.0.0 <2.0.0`, `^1.4`). */
export const semverRange = (field: string, value: string): Violations =>
  value.length <= 1024 && semver.validRange(value) !== null
    ? []
    : v(field, `"${value.slice(0, 64)}" is not a semver range`);

export const maxLength = (field: string, value: string, max: number): Violations =>
  value.length > max ? v(field, `must be at most ${max} characters`) : [];

export const maxItems = (field: string, items: ReadonlyArray<unknown>, max: number): Violations =>
  items.length > max ? v(field, `at most ${max} items`) : [];

const LABEL_KEY = /^[A-Za-z0-9._/-]{1,63}$/;
export const MAX_LABELS = 64;

export const labels = (field: string, map: Readonly<Record<string, string>>): Violations => {
  const entries = Object.entries(map);
  if (entries.length > MAX_LABELS) return v(field, `at most ${MAX_LABELS} labels`);
  return entries.flatMap(([key, value]) => [
    ...(LABEL_KEY.test(key)
      ? []
      : v(
          `${field}[${JSON.stringify(key)}]`,
          "key must be 1-63 letters, digits, '.', '_', '-', '/'",
        )),
    ...maxLength(`${field}[${JSON.stringify(key)}]`, value, 256),
    ...(value.includes("\u0000")
      ? v(`${field}[${JSON.stringify(key)}]`, "must not contain NUL")
      : []),
  ]);
};

export const MAX_DEPTH = 64;

/**
 * A JSON document that is safe to store and query: bounded size and depth,
 * and no key a database would read as an operator or a path (`$…`, `a.b`).
 */
export const document = (field: string, doc: Json, maxBytes: number): Violations => {
  const problems: FieldViolation[] = [];
  const walk = (value: Json, path: string, depth: number): void => {
    if (problems.length >= 10) return;
    if (depth > MAX_DEPTH) {
      problems.push({ field: path, description: `nested deeper than ${MAX_DEPTH} levels` });
      return;
    }
    if (Array.isArray(value)) {
      for (const [i, item] of value.entries()) walk(item, `${path}[${i}]`, depth + 1);
    } else if (value !== null && typeof value === "object") {
      for (const [key, item] of Object.entries(value)) {
        const at = `${path}.${key}`;
        if (key.length === 0) problems.push({ field: path, description: "empty key" });
        else if (key.startsWith("$"))
          problems.push({ field: at, description: "key must not start with '$'" });
        else if (key.includes("."))
          problems.push({ field: at, description: "key must not contain '.'" });
        else if (key.includes("\u0000"))
          problems.push({ field: path, description: "key must not contain NUL" });
        walk(item, at, depth + 1);
      }
    }
  };
  walk(doc, field, 0);
  if (problems.length > 0) return problems;
  const bytes = Buffer.byteLength(JSON.stringify(doc));
  return bytes > maxBytes ? v(field, `is ${bytes} bytes, more than the limit of ${maxBytes}`) : [];
};

/** One field path segment of a document (filters, order_by, update masks). */
const PATH = /^[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_-]{1,128}){0,31}$/;
export const fieldPath = (field: string, path: string): Violations =>
  PATH.test(path)
    ? []
    : v(field, "must be a dotted path of 1-128 letters, digits, '_' or '-' per segment");

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** Page size per the API guide: 0 means the default, above the maximum is capped. */
export const pageSize = (size: number): Effect.Effect<number, InvalidArgument> =>
  size < 0
    ? check(v("page_size", "must not be negative")).pipe(Effect.as(0))
    : Effect.succeed(size === 0 ? DEFAULT_PAGE_SIZE : Math.min(size, MAX_PAGE_SIZE));

/** A message field the caller must set. */
export const required = <A>(
  field: string,
  value: A | undefined,
): Effect.Effect<A, InvalidArgument> =>
  value === undefined
    ? Effect.fail(
        new InvalidArgument({
          message: `invalid ${field}: is required`,
          violations: [{ field, description: "is required" }],
        }),
      )
    : Effect.succeed(value);

/** Fails with one violation. */
export const invalid = (
  field: string,
  description: string,
): Effect.Effect<never, InvalidArgument> =>
  Effect.fail(
    new InvalidArgument({
      message: `invalid ${field}: ${description}`,
      violations: [{ field, description }],
    }),
  );

/** Free text a person chose (owners, holders, names): bounded, no control characters. */
export const label = (field: string, value: string, max: number, required = true): Violations => {
  if (value === "") return required ? v(field, "is required") : [];
  if (value.length > max) return v(field, `must be at most ${max} characters`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  return /[\u0000-\u001f\u007f]/.test(value) ? v(field, "must not contain control characters") : [];
};
