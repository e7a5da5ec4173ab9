/**
 * The stored form of documents. Field names and path segments are escaped
 * (`%`, `.`, NUL and a leading `$` as `%XX`) because FerretDB rejects keys
 * with `.` or a leading `$` and MongoDB only half supports them; an array
 * directly inside an array (which FerretDB also rejects) is wrapped. So any
 * JSON document round-trips, and a path can never spell an operator.
 */
import { Option } from "effect";
import type { Document } from "mongodb";
import type { Doc, Json } from "../store.js";

/** What the driver sees: string `_id`s, everything else opaque until decoded. */
export type Stored = { _id: string; [field: string]: unknown };

/** A counter document `{ _id: name, seq }`. */
export type Counter = { _id: string; seq: number };

/** FerretDB: the stored document's version, a random token replaced on every write (never returned). */
export const REV = "%rev";

// Matches what a stored key may not contain (see the module comment).
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what must be escaped.
const UNSAFE_KEY = /[%.\x00]|^\$/g;

const encodeKey = (key: string): string =>
  key.replace(UNSAFE_KEY, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`);

const decodeKey = (key: string): string =>
  key.includes("%")
    ? key.replace(/%([0-9A-F]{2})/g, (_, hex: string) =>
        String.fromCharCode(Number.parseInt(hex, 16)),
      )
    : key;

/** A dotted path in stored form: each segment escaped like a key (numeric segments stay array indexes). */
export const fieldPath = (path: string): string => {
  const segments = path.split(".");
  if (segments.includes("")) throw new Error(`invalid field path ${JSON.stringify(path)}`);
  return segments.map(encodeKey).join(".");
};

/**
 * FerretDB rejects an array directly inside an array: such an inner array is
 * stored as `{ "%a": [...] }` (no escaped key can be `%a`). MongoDB queries
 * never look inside nested arrays anyway; only sorting on such a field and
 * paths indexing into them differ.
 */
const NESTED_ARRAY = "%a";

/** JSON as stored: keys escaped, nested arrays wrapped. (`fromEntries` keeps a `__proto__` key as data.) */
export const encode = (value: Json, inArray = false): Json => {
  if (Array.isArray(value)) {
    const items = value.map((v) => encode(v, true));
    return inArray ? { [NESTED_ARRAY]: items } : items;
  }
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [encodeKey(k), encode(v)]));
  }
  return value;
};

export const encodeFields = (fields: Readonly<Record<string, Json>>): Record<string, Json> =>
  encode(fields) as Record<string, Json>;

/**
 * A stored value back as plain JSON. Only JSON is ever written here; the BSON
 * types another writer might have left are converted where there is an
 * obvious JSON form, and anything else is a defect.
 */
export const toJson = (value: unknown): Json => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return value;
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object") {
    const bsonType = (value as { _bsontype?: unknown })._bsontype;
    if (bsonType === undefined) {
      const entries = Object.entries(value);
      const [only] = entries;
      if (entries.length === 1 && only?.[0] === NESTED_ARRAY && Array.isArray(only[1]))
        return toJson(only[1]);
      return Object.fromEntries(entries.map(([k, v]) => [decodeKey(k), toJson(v)]));
    }
    switch (bsonType) {
      case "ObjectId":
        return (value as { toHexString(): string }).toHexString();
      case "Long":
      case "Decimal128":
      case "Int32":
      case "Double":
        return Number(String(value));
    }
    throw new TypeError(`stored value of BSON type ${String(bsonType)} has no JSON form`);
  }
  throw new TypeError(`stored value of type ${typeof value} has no JSON form`);
};

export const decodeDoc = (raw: Document): Doc =>
  Object.fromEntries(
    Object.entries(raw)
      .filter(([k]) => k !== REV)
      .map(([k, v]) => [decodeKey(k), toJson(v)]),
  ) as Doc;

export const decodeFound = (raw: Document | null): Option.Option<Doc> =>
  raw === null ? Option.none() : Option.some(decodeDoc(raw));
