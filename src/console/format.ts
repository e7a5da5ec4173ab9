/** How values of the protos read on screen. */
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

/** `SERVICE_STATUS_IN_PROGRESS`-style enum names as protobuf-es strips them: `IN PROGRESS`. */
export const enumLabel = (names: Record<number, string>, value: number): string =>
  (names[value] ?? `UNKNOWN (${value})`).replaceAll("_", " ");

const units = ["B", "KiB", "MiB", "GiB"];

export const bytes = (n: bigint | number): string => {
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
};

// A 24-hour clock in every locale: shorter in narrow columns, and how operators read logs.
const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});
const dated = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

/** Today's times as a clock, older ones with their date; `—` when unset. */
export const time = (value: Timestamp | Date | undefined): string => {
  if (value === undefined) return "—";
  const date = value instanceof Date ? value : timestampDate(value);
  const today = new Date().toDateString() === date.toDateString();
  return today ? clock.format(date) : dated.format(date);
};

/** `1 h 4 m`, `12 s`, `350 ms`; `—` when unset. */
export const duration = (value: Duration | undefined): string => {
  if (value === undefined) return "—";
  const ms = Number(value.seconds) * 1000 + Math.round(value.nanos / 1e6);
  if (ms < 1000) return `${ms} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} m ${s % 60} s` : `${m} m`;
  const hours = Math.floor(m / 60);
  return m % 60 ? `${hours} h ${m % 60} m` : `${hours} h`;
};

/** The last dotted segment: `floworchestrator.datastore.v1.DataStoreService` → `DataStoreService`. */
export const shortName = (name: string): string => name.slice(name.lastIndexOf(".") + 1);

/** A short, readable preview of a message payload. */
export const preview = (payload: Uint8Array, contentType: string, max = 160): string => {
  if (payload.length === 0) return "(empty)";
  if (contentType === "application/protobuf" || contentType === "application/octet-stream") {
    return `${bytes(payload.length)} of binary data`;
  }
  let text = new TextDecoder().decode(payload);
  if (contentType === "" || contentType === "application/json") {
    try {
      text = JSON.stringify(JSON.parse(text));
    } catch {
      // Not JSON after all: show it as text.
    }
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
};

/** The message of an error as a person should read it. */
export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
