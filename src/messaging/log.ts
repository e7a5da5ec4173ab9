/**
 * The storage contract under the MessageBus: a partitioned, replicated log
 * with consumer groups, what Kafka is. The bus rules (envelopes, routing,
 * in-flight limits, acks, redelivery, retries, dead letters, request/reply)
 * are written once on top in `dispatcher.ts` and `bus.ts`; Kafka and the
 * embedded log implement only this, with the same semantics.
 *
 * Semantics both adapters keep:
 * - `append` returns only after the record is durably stored (Kafka: acks
 *   from all in-sync replicas, idempotent producer). Records with the same
 *   key go to the same partition, in append order.
 * - A group's members share the partitions of the topics they consume: each
 *   partition is assigned to one member at a time. A member reads a partition
 *   from the group's committed offset; with none, from the earliest retained
 *   record (`fromBeginning`) or from the end.
 * - Records reach `onRecord` (or `onRecords`, several at a time) in offset
 *   order per partition; the next record of that partition is not handed
 *   over before the previous handler effect completed (that is the
 *   back-pressure).
 * - After every (re)assignment `onAssigned` receives the member's whole
 *   assignment; reading then restarts at the committed offsets, so records
 *   handed over but not committed before come again. (A partition with no
 *   committed offset starts at the end as of that assignment: a caller
 *   that must not skip records commits its first position.)
 * - `append` is not atomic: when it fails, some records may be stored (and
 *   a timed-out append may still take effect later).
 */
import { Context, type Effect, type Scope } from "effect";
import { StoreUnavailable } from "../common/store-error.js";

export { StoreUnavailable };

/** A record to append. */
export interface OutRecord {
  readonly topic: string;
  /** Same key → same partition, order kept. Undefined: any partition. */
  readonly key?: string;
  readonly value: Uint8Array;
  /** Record headers (CloudEvents `ce_*` attributes and ours). */
  readonly headers: Readonly<Record<string, string>>;
}

/** Where an appended record was stored. */
export interface Position {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
}

/**
 * A record read from the log. Its value may be the log's own bytes (the
 * embedded log's stored copy, a view of a Kafka fetch response): readers
 * never modify it.
 */
export interface LogRecord extends Position {
  readonly key?: string;
  readonly value: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
  /** Append time, ms since epoch. */
  readonly timestamp: number;
}

export interface TopicPartition {
  readonly topic: string;
  readonly partition: number;
}

export interface ConsumeOptions {
  /** The consumer group. */
  readonly group: string;
  /** Topics to consume (created beforehand with `ensureTopics`). */
  readonly topics: ReadonlyArray<string>;
  /** Where a partition with no committed offset starts: earliest when true, else the end. */
  readonly fromBeginning: boolean;
}

export interface ConsumeHandlers {
  /** One record; the partition's next record waits until this completes. */
  readonly onRecord: (record: LogRecord) => Effect.Effect<void>;
  /**
   * When given, used instead of `onRecord`: consecutive records of one
   * partition (one or more, in offset order) at once, with the same
   * back-pressure (the partition's next records wait until this completes)
   * and the same redelivery (a batch interrupted or failed comes again from
   * the committed offset, or whole). Saves a handover per record.
   */
  readonly onRecords?: (records: ReadonlyArray<LogRecord>) => Effect.Effect<void>;
  /** The member's whole assignment, after every (re)assignment. */
  readonly onAssigned: (assignment: ReadonlyArray<TopicPartition>) => Effect.Effect<void>;
}

/** A member of a consumer group, alive until the scope of `consume` closes. */
export interface Consumer {
  /**
   * Commits `offset` (the next offset to read) for a partition. A commit
   * for a partition the member no longer owns may fail or be ignored: the
   * new owner re-reads from the last committed offset.
   */
  readonly commit: (
    commits: ReadonlyArray<TopicPartition & { readonly offset: number }>,
  ) => Effect.Effect<void, StoreUnavailable>;
}

/** One page of a topic read without a group (dead-letter browsing). */
export interface TopicPage {
  readonly records: ReadonlyArray<LogRecord>;
  /** Next offset per partition, to pass back as `from`; undefined at the end. */
  readonly next?: Readonly<Record<number, number>>;
}

/** How far a group's member is behind the end of a partition it owns. */
export interface PartitionLag extends TopicPartition {
  readonly group: string;
  /** Records in the partition after the last batch the member fetched. */
  readonly lag: number;
}

export interface MessageLogShape {
  /** `kafka` or `embedded`. */
  readonly backend: string;
  /** Consumer lag of this process's members, where the driver reports it (Kafka). */
  readonly lag?: () => ReadonlyArray<PartitionLag>;
  /** Cheap round trip to the backend, bounded in time. */
  readonly ping: Effect.Effect<void, StoreUnavailable>;
  /** Creates the topics that do not exist yet (configured partitions and retention). */
  readonly ensureTopics: (topics: ReadonlyArray<string>) => Effect.Effect<void, StoreUnavailable>;
  /** Appends records; succeeds only once every one is durably stored. Positions in input order. */
  readonly append: (
    records: ReadonlyArray<OutRecord>,
  ) => Effect.Effect<ReadonlyArray<Position>, StoreUnavailable>;
  /**
   * Joins `group` as a new member and consumes until the scope closes (then
   * leaves the group, so its partitions go to the other members). Succeeds
   * once the member has its first assignment (`onAssigned` has completed).
   */
  readonly consume: (
    options: ConsumeOptions,
    handlers: ConsumeHandlers,
  ) => Effect.Effect<Consumer, StoreUnavailable, Scope.Scope>;
  /**
   * Reads up to `limit` retained records of a topic without joining a group,
   * from `from` (next offset per partition; absent partitions from their
   * earliest retained record), oldest first per partition. A topic that does
   * not exist reads as empty.
   */
  readonly read: (
    topic: string,
    from: Readonly<Record<number, number>>,
    limit: number,
  ) => Effect.Effect<TopicPage, StoreUnavailable>;
}

export class MessageLog extends Context.Tag("fo/messaging/MessageLog")<
  MessageLog,
  MessageLogShape
>() {}
