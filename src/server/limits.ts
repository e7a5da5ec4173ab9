/**
 * Fair shares: one client cannot starve the others. A client is its
 * authenticated principal, or its connection when there is no
 * authentication. Each may have `maxStreams` server streams open at once and
 * make `rate` calls per second (a token bucket holding one second's worth,
 * so short bursts pass); beyond either, RESOURCE_EXHAUSTED. Health and
 * reflection are not counted: probes must always get through. (Per
 * connection, HTTP/2 itself caps concurrent streams.)
 */
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ResourceExhausted } from "../common/errors.js";
import { meshErrorToConnect } from "./errors.js";

export interface LimitOptions {
  /** Calls per second per client; 0: unlimited. */
  readonly rate: number;
  readonly maxStreams: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets untouched this long are forgotten (their client is gone or idle, so full anyway). */
const IDLE_MS = 60_000;

const exempt = (service: string) =>
  service === Health.typeName || service.startsWith("grpc.reflection.");

export interface Limits {
  /**
   * Admits one call of `client`, or throws RESOURCE_EXHAUSTED. A server
   * stream holds one of the client's stream places: the returned function
   * gives it back, once the stream is over.
   */
  readonly admit: (service: string, streaming: boolean, client: string) => (() => void) | undefined;
}

export const makeLimits = ({ rate, maxStreams }: LimitOptions): Limits => {
  const buckets = new Map<string, Bucket>();
  const streams = new Map<string, number>();
  let sweptAt = Date.now();

  const take = (client: string): boolean => {
    const now = Date.now();
    if (now - sweptAt > IDLE_MS) {
      for (const [k, b] of buckets) if (now - b.at > IDLE_MS) buckets.delete(k);
      sweptAt = now;
    }
    const bucket = buckets.get(client) ?? { tokens: rate, at: now };
    bucket.tokens = Math.min(rate, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    buckets.set(client, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  };

  const exhausted = (what: string) =>
    meshErrorToConnect(
      new ResourceExhausted({
        message: `too many ${what} for this client; slow down`,
        code: "RESOURCE_ERROR.RATE_LIMITED",
        metadata: { limit: what },
      }),
    );

  const admit = (service: string, streaming: boolean, client: string) => {
    if (exempt(service)) return undefined;
    if (rate > 0 && !take(client)) throw exhausted("requests per second");
    if (!streaming) return undefined;
    const open = streams.get(client) ?? 0;
    if (open >= maxStreams) throw exhausted("open streams");
    streams.set(client, open + 1);
    return () => {
      const n = (streams.get(client) ?? 1) - 1;
      if (n <= 0) streams.delete(client);
      else streams.set(client, n);
    };
  };

  return { admit };
};
