/**
 * Which node takes a call. Nodes come from the service registry: each mesh
 * node registers itself (service type `mesh-node`, its URL as endpoint, the
 * services it hosts as capabilities), and the router keeps a live view of
 * those records through one WatchServices stream, not a lookup per call.
 * A service's calls go round-robin over the READY nodes hosting it whose
 * lease has not lapsed; a node that failed a call with UNAVAILABLE sits out
 * a cooldown, then gets traffic again. Seeds (static URLs) take the calls
 * the registry cannot place yet (at start-up, or when it is unreachable).
 */
import { Duration, Effect, Schedule, type Scope, Stream } from "effect";
import type { WatchServicesResponse } from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  ServiceEvent_Type as EventType,
  ServiceHealth,
  type ServiceRecord,
  ServiceStatus,
} from "../../gen/floworchestrator/datastore/v1/service_registry_pb.js";
import { type MeshError, Unavailable } from "../common/errors.js";
import { type Channel, type ChannelKind, type ChannelTls, openChannel } from "./channel.js";
import type { Router } from "./service-client.js";

/** Service type under which mesh nodes register themselves. */
export const MESH_NODE_TYPE = "mesh-node";

/** Error code of a call no node could be found for: nothing was sent, so any call may retry. */
export const NO_ENDPOINT = "CONNECTION_ERROR.NO_ENDPOINT";

export type RegistryWatch = Stream.Stream<WatchServicesResponse, MeshError>;

/** Reconnecting the registry watch after it failed (the registry's node went away). */
export const rewatchSchedule = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
);

interface Node {
  readonly url: string;
  readonly services: ReadonlySet<string>;
  readonly live: boolean;
}

const toNode = (record: ServiceRecord, expired: boolean): Node | undefined => {
  const url = record.endpoints[0];
  if (url === undefined) return undefined;
  return {
    url: url.replace(/\/$/, ""),
    services: new Set(record.capabilities),
    live:
      !expired &&
      record.health !== ServiceHealth.EXPIRED &&
      (record.status === ServiceStatus.READY || record.status === ServiceStatus.PROCESSING),
  };
};

export interface RouterOptions {
  readonly kind: ChannelKind;
  readonly seeds: ReadonlyArray<string>;
  /** This node's own URL: never a target (it does not host what it forwards). */
  readonly self?: string;
  /** How long a node that answered UNAVAILABLE is left out. */
  readonly cooldown: Duration.Duration;
  readonly tls?: ChannelTls;
}

export interface RegistryRouter extends Router {
  /** The URL of the node the next call for `service` goes to (round-robin); none known: undefined. */
  readonly next: (service: string) => string | undefined;
  /** Leaves a node that failed a call out for the cooldown. */
  readonly down: (url: string) => void;
  /** Applies one registry event (the watch feeds it; exposed for tests). */
  readonly apply: (event: WatchServicesResponse) => void;
  /** Nodes currently hosting `service` and live, by URL. */
  readonly live: (service: string) => ReadonlyArray<string>;
  /** Follows the registry until the scope closes, reconnecting on failure. */
  readonly follow: (watch: RegistryWatch) => Effect.Effect<void, never, Scope.Scope>;
  readonly close: () => void;
}

export const makeRouter = (options: RouterOptions): RegistryRouter => {
  const channels = new Map<string, Channel>();
  const nodes = new Map<string, Node>();
  const downUntil = new Map<string, number>();
  const turn = new Map<string, number>();
  /** Ids seen in the snapshot of the current watch; nodes not in it are gone. */
  let snapshot: Set<string> | undefined;
  const seeds = options.seeds.map((s) => s.replace(/\/$/, ""));

  const channel = (url: string) => {
    let c = channels.get(url);
    if (c === undefined) {
      c = openChannel(options.kind, url, options.tls);
      channels.set(url, c);
    }
    return c;
  };
  const isUp = (url: string) => (downUntil.get(url) ?? 0) <= Date.now();

  const live = (service: string) =>
    [...nodes.values()]
      .filter((n) => n.live && n.services.has(service) && n.url !== options.self)
      .map((n) => n.url);

  const candidates = (service: string) => {
    const hosts = live(service);
    const up = hosts.filter(isUp);
    if (up.length > 0) return up;
    const upSeeds = seeds.filter((s) => s !== options.self && isUp(s));
    if (upSeeds.length > 0) return upSeeds;
    // Everything failed recently: trying one again beats failing without a try.
    return hosts.length > 0 ? hosts : seeds.filter((s) => s !== options.self);
  };

  const apply = (response: WatchServicesResponse) => {
    const event = response.event;
    if (event?.type === EventType.SNAPSHOT_COMPLETE && snapshot !== undefined) {
      for (const id of nodes.keys()) if (!snapshot.has(id)) nodes.delete(id);
      snapshot = undefined;
      return;
    }
    const record = event?.service;
    if (event === undefined || record === undefined || record.serviceType !== MESH_NODE_TYPE)
      return;
    const id = `${record.serviceId}:${record.version}`;
    if (event.type === EventType.SNAPSHOT) snapshot?.add(id);
    if (event.type === EventType.DEREGISTERED) {
      nodes.delete(id);
      return;
    }
    const node = toNode(record, event.type === EventType.EXPIRED);
    if (node === undefined) nodes.delete(id);
    else {
      nodes.set(id, node);
      // A renewed or re-registered node is back: no need to wait out its cooldown.
      if (node.live && event.type !== EventType.HEARTBEAT) downUntil.delete(node.url);
    }
  };

  const next = (service: string) => {
    const urls = candidates(service);
    if (urls.length === 0) return undefined;
    const n = turn.get(service) ?? 0;
    turn.set(service, n + 1);
    return urls[n % urls.length];
  };
  const down = (url: string) =>
    downUntil.set(url, Date.now() + Duration.toMillis(options.cooldown));

  return {
    next,
    down,
    pick: (service) =>
      Effect.suspend(() => {
        const url = next(service);
        return url === undefined
          ? Effect.fail(
              new Unavailable({
                message: `no live mesh node hosts ${service}`,
                code: NO_ENDPOINT,
                metadata: { service },
              }),
            )
          : Effect.succeed(channel(url));
      }),
    failed: (c) => Effect.sync(() => down(c.url)),
    apply,
    live,
    follow: (watch) =>
      Stream.unwrap(
        Effect.sync(() => {
          snapshot = new Set();
          return watch;
        }),
      ).pipe(
        Stream.runForEach((event) => Effect.sync(() => apply(event))),
        // A watch that ended or failed starts over with a fresh snapshot.
        Effect.zipRight(Effect.fail(new Unavailable({ message: "registry watch ended" }))),
        Effect.retry(rewatchSchedule),
        Effect.forkScoped,
        Effect.asVoid,
      ),
    close: () => {
      for (const c of channels.values()) c.close();
      channels.clear();
    },
  };
};
