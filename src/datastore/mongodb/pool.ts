/**
 * The MongoDB driver's connection pools as numbers for the DataStore's
 * gauges, counted from the driver's connection-pool (CMAP) events, which
 * every MongoClient emits: the pools themselves are internal to the driver.
 *
 * Connections are tracked by id per server address, not as running totals:
 * a connection the driver gives up on while it is being established (the
 * pool was cleared or closed meanwhile) gets a `connectionClosed` or nothing
 * at all, and counting ids that became ready (and leaving those that close)
 * stays right in both cases, where created-minus-closed would drift.
 */
import { Context } from "effect";
import type {
  ConnectionCheckedInEvent,
  ConnectionCheckedOutEvent,
  ConnectionClosedEvent,
  ConnectionPoolClosedEvent,
  ConnectionReadyEvent,
  MongoClient,
} from "mongodb";

export interface PoolSnapshot {
  /** Connections checked out by an operation, over every server's pool. */
  readonly inUse: number;
  /** Established connections waiting in the pools. */
  readonly idle: number;
}

/**
 * The pools of the DataStore's MongoDB client, offered next to the DocStore
 * by the MongoDB backend only (the embedded store has no pool), so the
 * DataStore service registers the pool gauges when both it and Telemetry
 * are there.
 */
export class MongoPoolStats extends Context.Tag("fo/datastore/MongoPoolStats")<
  MongoPoolStats,
  { readonly snapshot: () => PoolSnapshot }
>() {}

/** The driver's id of a connection within its pool (`<monitor>` is never a pool connection). */
type ConnectionId = ConnectionReadyEvent["connectionId"];

interface ServerPool {
  /** Established (ready) connection ids. */
  readonly open: Set<ConnectionId>;
  /** Of those, the ids checked out now. */
  readonly checkedOut: Set<ConnectionId>;
}

/** Starts counting `client`'s pools (attach before the first operation); `stop` detaches. */
export const trackPools = (client: MongoClient) => {
  const pools = new Map<string, ServerPool>();
  const poolOf = (address: string): ServerPool => {
    let pool = pools.get(address);
    if (pool === undefined) {
      pool = { open: new Set(), checkedOut: new Set() };
      pools.set(address, pool);
    }
    return pool;
  };
  const onReady = (e: ConnectionReadyEvent) => poolOf(e.address).open.add(e.connectionId);
  const onCheckedOut = (e: ConnectionCheckedOutEvent) =>
    poolOf(e.address).checkedOut.add(e.connectionId);
  const onCheckedIn = (e: ConnectionCheckedInEvent) =>
    poolOf(e.address).checkedOut.delete(e.connectionId);
  const onClosed = (e: ConnectionClosedEvent) => {
    const pool = poolOf(e.address);
    pool.open.delete(e.connectionId);
    pool.checkedOut.delete(e.connectionId);
  };
  // A closed pool's connections are gone, whether or not each got its own event.
  const onPoolClosed = (e: ConnectionPoolClosedEvent) => pools.delete(e.address);

  client.on("connectionReady", onReady);
  client.on("connectionCheckedOut", onCheckedOut);
  client.on("connectionCheckedIn", onCheckedIn);
  client.on("connectionClosed", onClosed);
  client.on("connectionPoolClosed", onPoolClosed);

  return {
    snapshot: (): PoolSnapshot => {
      let inUse = 0;
      let idle = 0;
      for (const pool of pools.values()) {
        // Only open connections count: in_use + idle is then exactly the pool's size.
        let busy = 0;
        for (const id of pool.checkedOut) if (pool.open.has(id)) busy++;
        inUse += busy;
        idle += pool.open.size - busy;
      }
      return { inUse, idle };
    },
    stop: () => {
      client.off("connectionReady", onReady);
      client.off("connectionCheckedOut", onCheckedOut);
      client.off("connectionCheckedIn", onCheckedIn);
      client.off("connectionClosed", onClosed);
      client.off("connectionPoolClosed", onPoolClosed);
    },
  };
};
