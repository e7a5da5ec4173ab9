/**
 * One consumer group's deliveries inside one mesh instance: the records its
 * log member reads are handed to the group's local subscriptions, tracked
 * until acknowledged, redelivered, retried, dead-lettered, and committed.
 *
 * - Every local subscription of the group (a Subscribe stream) is a
 *   *member*. Each partition is pinned to one member, so first deliveries of
 *   one partition (one key) reach one member in offset order. A member never
 *   has more than its `maxInFlight` deliveries unacknowledged.
 * - A delivery that is Nacked or misses its ack deadline is redelivered, to
 *   another member when there is one with room, after the retry policy's
 *   wait; after `maxRetries` redeliveries it is dead-lettered instead. A
 *   member that leaves hands its in-flight deliveries to the others at once.
 * - The group's offset of a partition only moves past a record once it and
 *   every record before it are done (acknowledged, dead-lettered or
 *   expired): at least once, nothing skipped. Commits are batched every
 *   COMMIT_INTERVAL_MS.
 * - When the log reassigns partitions (another instance joined or left),
 *   everything not committed is dropped here and comes again from the log;
 *   attempt counts survive that, and acks of the dropped deliveries are
 *   accepted as no-ops.
 *
 * The state is plain data changed synchronously (Node runs one callback at a
 * time), so no step ever sees another half-done. Effects run on the given
 * runtime.
 */
import { randomBytes } from "node:crypto";
import { Effect } from "effect";
import type { Envelope } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { fromRecord, isExpired } from "./envelope.js";
import type { LogRecord, StoreUnavailable, TopicPartition } from "./log.js";

export const COMMIT_INTERVAL_MS = 50;
/** How long a dead-letter write that failed waits before it is tried again. */
const DEAD_LETTER_RETRY_MS = 1000;
/** Acks of deliveries dropped by a reassignment (or past their deadline) are remembered this many at most. */
const SUPERSEDED_MAX = 10_000;
/**
 * Ack deadlines are checked in ticks of this length (a delivery expires up to
 * one tick after its deadline): one timer per tick for every delivery due
 * in it, instead of a timer set and cleared per delivery, which cost more
 * than the rest of a delivery's bookkeeping at tens of thousands a second.
 */
const DEADLINE_TICK_MS = 100;

export interface RetrySettings {
  readonly maxRetries: number;
  readonly intervalMs: number;
  readonly exponential: boolean;
  readonly maxIntervalMs: number;
}

/** Wait before redelivery number `retry` (1-based). */
export const retryDelay = (policy: RetrySettings, retry: number): number =>
  policy.exponential
    ? Math.min(policy.maxIntervalMs, policy.intervalMs * 2 ** Math.max(0, retry - 1))
    : policy.intervalMs;

export interface DeliveryOut {
  readonly deliveryId: string;
  readonly attempt: number;
  readonly message: Envelope;
  readonly record: LogRecord;
}

export interface MemberSettings {
  readonly id: string;
  readonly maxInFlight: number;
  readonly ackDeadlineMs: number;
  readonly retry: RetrySettings;
  /**
   * Hands deliveries to the subscription's stream: everything one step of
   * the dispatcher made ready for the member at once, in delivery order.
   */
  readonly deliver: (deliveries: ReadonlyArray<DeliveryOut>) => void;
}

interface Member extends MemberSettings {
  inFlight: number;
  /**
   * Delivery ids are this random prefix and a counter: unique in the
   * instance, unguessable from outside the subscription, and much cheaper
   * than a random id per delivery. 96 random bits in base64url keep an id
   * near 18 characters (a UUID prefix made it 40): every id crosses the
   * wire twice and is decoded on both ends, once per message.
   */
  readonly idPrefix: string;
  sent: number;
  /** Deliveries of the current step, handed over when it ends. */
  outbox: DeliveryOut[];
}

interface Tracked {
  readonly record: LogRecord;
  readonly message: Envelope;
  readonly partition: PartitionState;
  attempt: number;
  state: "new" | "ready" | "in-flight" | "waiting" | "done";
  deliveryId?: string;
  member?: Member;
  lastMemberId?: string;
  /** Pending retry wait, or dead-letter attempt. */
  timer?: ReturnType<typeof setTimeout>;
  /** The deadline tick it expires in while in flight. */
  due?: Set<Tracked>;
}

interface PartitionState {
  readonly key: string;
  readonly topic: string;
  readonly partition: number;
  owner?: Member;
  /** Every record read and not yet committed, in offset order. */
  readonly pending: Tracked[];
  /** Records not delivered yet, in offset order. */
  readonly backlog: Tracked[];
  /** onRecord calls waiting for room in the backlog. */
  readonly waiters: Array<() => void>;
}

interface DeadlineTick {
  readonly at: number;
  readonly due: Set<Tracked>;
  readonly timer: ReturnType<typeof setTimeout>;
}

export interface DispatcherHooks {
  /** Commits next offsets; failures are logged and retried by the next commit. */
  readonly commit: (
    commits: ReadonlyArray<TopicPartition & { readonly offset: number }>,
  ) => Effect.Effect<void, StoreUnavailable>;
  /** Writes the dead letter and publishes the Fault event. */
  readonly deadLetter: (
    delivery: DeliveryOut,
    reason: string,
  ) => Effect.Effect<void, StoreUnavailable>;
  /** Runs an effect in the background. */
  readonly run: (effect: Effect.Effect<void>) => void;
  readonly now: () => number;
}

/**
 * What became of a settled delivery id: `superseded` (dropped by a
 * reassignment: the ack is a no-op), `late` (its ack deadline passed and the
 * message went back to be redelivered), `unknown` (never handed out here, or
 * settled already).
 */
export type SettleResult = "settled" | "superseded" | "late" | "unknown";

const tpKey = (topic: string, partition: number) => `${partition}@${topic}`;
const offsetKey = (record: LogRecord) =>
  `${tpKey(record.topic, record.partition)}#${record.offset}`;

export class Dispatcher {
  private readonly members = new Map<string, Member>();
  private readonly partitions = new Map<string, PartitionState>();
  private readonly inFlight = new Map<string, Tracked>();
  /** Redeliveries whose wait is over, oldest first. */
  private readonly ready: Tracked[] = [];
  /** Attempts of records dropped by a reassignment, by coordinates. */
  private readonly attempts = new Map<string, number>();
  private readonly superseded = new Set<string>();
  private readonly late = new Set<string>();
  /** In-flight deliveries by the deadline tick they expire at. */
  private readonly deadlines = new Map<number, DeadlineTick>();
  /** The tick the last delivery went into: the next ones mostly go there too. */
  private lastTick: DeadlineTick | undefined;
  private readonly dirty = new Map<string, TopicPartition & { offset: number }>();
  private commitTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  /** While above 0, pumping waits for `release` (settling a batch of acks pumps once). */
  private held = 0;
  private pumpWanted = false;

  constructor(
    readonly group: string,
    private readonly hooks: DispatcherHooks,
  ) {}

  get size(): number {
    return this.members.size;
  }

  /** Deliveries awaiting an ack, and records read but not yet finished (in flight included). */
  get load(): { readonly inFlight: number; readonly unfinished: number } {
    let unfinished = 0;
    for (const p of this.partitions.values()) {
      for (const t of p.pending) if (t.state !== "done") unfinished += 1;
    }
    return { inFlight: this.inFlight.size, unfinished };
  }

  join(settings: MemberSettings): void {
    this.members.set(settings.id, {
      ...settings,
      inFlight: 0,
      idPrefix: `${randomBytes(12).toString("base64url")}.`,
      sent: 0,
      outbox: [],
    });
    this.pump();
  }

  /**
   * Defers handing out until the matching `release`: a batch of acks then
   * frees its room and fills it with one step (one batch per member)
   * instead of one delivery per ack.
   */
  hold(): void {
    this.held += 1;
  }

  release(): void {
    this.held -= 1;
    if (this.held === 0 && this.pumpWanted) this.pump();
  }

  /** The member's in-flight deliveries go to the others (or back to the log when none is left). */
  leave(memberId: string): void {
    const member = this.members.get(memberId);
    if (!member) return;
    this.members.delete(memberId);
    for (const partition of this.partitions.values()) {
      if (partition.owner === member) partition.owner = undefined;
    }
    const orphans = [...this.inFlight.values()].filter((t) => t.member === member);
    for (const t of orphans) {
      if (t.deliveryId) this.remember(this.late, t.deliveryId);
      this.stopTracking(t);
      t.lastMemberId = member.id;
      t.state = "ready";
    }
    this.ready.unshift(...orphans.sort((a, b) => a.record.offset - b.record.offset));
    this.pump();
  }

  /** The log's onRecord: queues the record and waits for room in its partition's backlog. */
  offer(record: LogRecord): Promise<void> {
    return this.offerAll([record]);
  }

  /**
   * The log's onRecords: queues consecutive records of one partition and
   * waits for room in its backlog (which a batch may overfill by its size:
   * the log's fetch size bounds it).
   */
  offerAll(records: ReadonlyArray<LogRecord>): Promise<void> {
    if (this.closed) return Promise.resolve();
    let partition: PartitionState | undefined;
    for (const record of records) {
      if (
        partition === undefined ||
        partition.partition !== record.partition ||
        partition.topic !== record.topic
      )
        partition = this.partitionOf(record);
      const tracked: Tracked = {
        record,
        message: fromRecord(record),
        partition,
        attempt: this.attempts.size === 0 ? 0 : (this.attempts.get(offsetKey(record)) ?? 0),
        state: "new",
      };
      partition.pending.push(tracked);
      partition.backlog.push(tracked);
    }
    this.pump();
    if (partition === undefined || partition.backlog.length < this.backlogLimit())
      return Promise.resolve();
    const waiting = partition;
    return new Promise((resolve) => waiting.waiters.push(resolve));
  }

  /** The log's onAssigned: what is not committed comes again from the log. */
  reassigned(assignment: ReadonlyArray<TopicPartition>): void {
    const keep = new Set(assignment.map((tp) => tpKey(tp.topic, tp.partition)));
    for (const [key, partition] of this.partitions) {
      for (const t of partition.pending) {
        if (t.attempt > 0 && keep.has(key)) this.attempts.set(offsetKey(t.record), t.attempt);
        if (t.state === "in-flight" && t.deliveryId) this.remember(this.superseded, t.deliveryId);
        this.stopTracking(t);
        t.state = "done";
      }
      for (const wake of partition.waiters) wake();
      this.dirty.delete(key);
    }
    for (const key of this.attempts.keys()) {
      if (!keep.has(key.slice(0, key.lastIndexOf("#")))) this.attempts.delete(key);
    }
    this.partitions.clear();
    this.ready.length = 0;
  }

  ack(deliveryId: string): SettleResult {
    const t = this.inFlight.get(deliveryId);
    if (!t) return this.forgotten(deliveryId);
    this.stopTracking(t);
    this.done(t);
    return "settled";
  }

  /**
   * Refuses a delivery: redelivered after `delayMs` or the retry policy's
   * wait, whichever is longer, or dead-lettered when retries are spent.
   */
  nack(
    deliveryId: string,
    reason: string,
    delayMs: number,
  ): { readonly result: SettleResult; readonly deadLettered?: Promise<void> } {
    const t = this.inFlight.get(deliveryId);
    if (!t) return { result: this.forgotten(deliveryId) };
    return { result: "settled", deadLettered: this.fail(t, reason, delayMs) };
  }

  /** Commits what is done and stops every timer; the caller then leaves the log's group. */
  close(): Effect.Effect<void> {
    const flushed = this.flushCommits(); // takes the pending commits before they are dropped
    this.closed = true;
    this.reassigned([]);
    for (const member of this.members.values()) member.inFlight = 0;
    this.members.clear();
    clearTimeout(this.commitTimer);
    for (const { timer } of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
    this.lastTick = undefined;
    return flushed;
  }

  private forgotten(deliveryId: string): SettleResult {
    return this.superseded.has(deliveryId)
      ? "superseded"
      : this.late.has(deliveryId)
        ? "late"
        : "unknown";
  }

  private fail(t: Tracked, reason: string, delayMs: number): Promise<void> | undefined {
    const member = t.member;
    this.stopTracking(t);
    t.lastMemberId = member?.id;
    const policy = member?.retry;
    const retry = t.attempt; // redelivery number this would be
    if (!policy || retry > policy.maxRetries) return this.sendToDeadLetters(t, reason);
    t.state = "waiting";
    t.timer = setTimeout(
      () => {
        t.timer = undefined;
        if (t.state !== "waiting") return;
        t.state = "ready";
        this.ready.push(t);
        this.pump();
      },
      Math.max(delayMs, retryDelay(policy, retry)),
    );
    return undefined;
  }

  private sendToDeadLetters(t: Tracked, reason: string): Promise<void> {
    t.state = "waiting";
    const delivery = this.deliveryOf(t, t.deliveryId ?? "");
    return new Promise((resolve) => {
      const attempt = () =>
        this.hooks.run(
          this.hooks.deadLetter(delivery, reason).pipe(
            Effect.matchEffect({
              onSuccess: () =>
                Effect.sync(() => {
                  if (t.state === "waiting") this.done(t);
                  resolve();
                }),
              onFailure: (e) =>
                Effect.logWarning("dead-lettering failed; trying again", e.cause).pipe(
                  Effect.zipRight(
                    Effect.sync(() => {
                      if (t.state === "waiting" && !this.closed)
                        t.timer = setTimeout(attempt, DEAD_LETTER_RETRY_MS);
                      resolve();
                    }),
                  ),
                ),
            }),
          ),
        );
      attempt();
    });
  }

  private deliveryOf(t: Tracked, deliveryId: string): DeliveryOut {
    return { deliveryId, attempt: t.attempt, message: t.message, record: t.record };
  }

  /**
   * The record's partition. The first record read from a partition after an
   * assignment pins the group's position there (a group new to a partition
   * that starts at the end would otherwise start at a later end after the
   * next rebalance, skipping what it had read but not finished).
   */
  private partitionOf(record: LogRecord): PartitionState {
    const { topic, partition } = record;
    const key = tpKey(topic, partition);
    let state = this.partitions.get(key);
    if (!state) {
      state = { key, topic, partition, pending: [], backlog: [], waiters: [] };
      this.partitions.set(key, state);
      this.markCommit(state, record.offset);
    }
    return state;
  }

  private markCommit(p: PartitionState, offset: number): void {
    // Every ack moves the offset: the entry waiting for the next flush is updated in place.
    const waiting = this.dirty.get(p.key);
    if (waiting !== undefined) waiting.offset = offset;
    else this.dirty.set(p.key, { topic: p.topic, partition: p.partition, offset });
    this.commitTimer ??= setTimeout(() => {
      this.commitTimer = undefined;
      this.hooks.run(this.flushCommits());
    }, COMMIT_INTERVAL_MS);
  }

  private backlogLimit(): number {
    let most = 16;
    for (const m of this.members.values()) most = Math.max(most, m.maxInFlight);
    return most;
  }

  private hasRoom = (m: Member) => m.inFlight < m.maxInFlight;

  /** The partition's member: kept while it is here, else the one pinned to fewest partitions. */
  private ownerOf(partition: PartitionState): Member | undefined {
    if (partition.owner && this.members.has(partition.owner.id)) return partition.owner;
    const load = new Map<Member, number>([...this.members.values()].map((m) => [m, 0]));
    for (const p of this.partitions.values()) {
      if (p.owner && load.has(p.owner)) load.set(p.owner, (load.get(p.owner) ?? 0) + 1);
    }
    let best: Member | undefined;
    for (const [m, n] of load) if (!best || n < (load.get(best) ?? 0)) best = m;
    partition.owner = best;
    return best;
  }

  /** A member with room, preferring one other than `avoid`, then the least busy. */
  private pickMember(avoid: string | undefined): Member | undefined {
    let best: Member | undefined;
    for (const m of this.members.values()) {
      if (!this.hasRoom(m)) continue;
      if (
        !best ||
        (best.id === avoid && m.id !== avoid) ||
        ((m.id !== avoid) === (best.id !== avoid) && m.inFlight < best.inFlight)
      )
        best = m;
    }
    return best;
  }

  /**
   * Hands out whatever can go now: redeliveries first, then each
   * partition's backlog; each member gets what it was given as one batch.
   */
  private pump(): void {
    if (this.closed) return;
    if (this.held > 0) {
      this.pumpWanted = true;
      return;
    }
    this.pumpWanted = false;
    const now = this.hooks.now();
    while (this.ready.length > 0) {
      const t = this.ready[0] as Tracked;
      if (t.state !== "ready") {
        this.ready.shift();
        continue;
      }
      const member = this.pickMember(t.lastMemberId);
      if (!member) break;
      this.ready.shift();
      this.deliver(t, member, now);
    }
    for (const partition of this.partitions.values()) {
      while (partition.backlog.length > 0) {
        const member = this.ownerOf(partition);
        if (!member || !this.hasRoom(member)) break;
        this.deliver(partition.backlog.shift() as Tracked, member, now);
      }
      if (partition.backlog.length < this.backlogLimit() && partition.waiters.length > 0) {
        for (const wake of partition.waiters.splice(0)) wake();
      }
    }
    for (const member of this.members.values()) {
      if (member.outbox.length === 0) continue;
      const batch = member.outbox;
      member.outbox = [];
      member.deliver(batch);
    }
  }

  private deliver(t: Tracked, member: Member, now: number): void {
    if (isExpired(t.message, now)) {
      this.finish(t); // not delivered; the caller's loop goes on with the next
      return;
    }
    t.attempt += 1;
    const deliveryId = member.idPrefix + (member.sent++).toString(36);
    t.deliveryId = deliveryId;
    t.member = member;
    t.state = "in-flight";
    member.inFlight += 1;
    this.inFlight.set(deliveryId, t);
    this.expireAt(t, now + member.ackDeadlineMs);
    member.outbox.push(this.deliveryOf(t, deliveryId));
  }

  /** Puts an in-flight delivery in the first deadline tick at or after `due`. */
  private expireAt(t: Tracked, due: number): void {
    const at = Math.ceil(due / DEADLINE_TICK_MS) * DEADLINE_TICK_MS;
    let tick = this.lastTick?.at === at ? this.lastTick : this.deadlines.get(at);
    if (tick === undefined) {
      const created: DeadlineTick = {
        at,
        due: new Set<Tracked>(),
        timer: setTimeout(() => this.expire(at), Math.max(0, at - this.hooks.now())),
      };
      this.deadlines.set(at, created);
      tick = created;
    }
    this.lastTick = tick;
    tick.due.add(t);
    t.due = tick.due;
  }

  /** The tick's deliveries missed their deadline: each goes back per the retry policy. */
  private expire(at: number): void {
    const tick = this.deadlines.get(at);
    this.deadlines.delete(at);
    if (this.lastTick === tick) this.lastTick = undefined;
    if (tick === undefined) return;
    for (const t of tick.due) {
      t.due = undefined;
      if (t.deliveryId === undefined || this.inFlight.get(t.deliveryId) !== t) continue;
      this.remember(this.late, t.deliveryId);
      void this.fail(t, "ack deadline exceeded", 0);
    }
  }

  /** Forgets the delivery (and frees the member's slot) without deciding the record's fate. */
  private stopTracking(t: Tracked): void {
    if (t.timer) clearTimeout(t.timer);
    t.timer = undefined;
    t.due?.delete(t);
    t.due = undefined;
    if (t.deliveryId && this.inFlight.get(t.deliveryId) === t) {
      this.inFlight.delete(t.deliveryId);
      if (t.member) t.member.inFlight -= 1;
    }
    t.member = undefined;
  }

  private remember(ids: Set<string>, deliveryId: string): void {
    ids.add(deliveryId);
    if (ids.size > SUPERSEDED_MAX) {
      const oldest = ids.values().next().value;
      if (oldest !== undefined) ids.delete(oldest);
    }
  }

  /** The record is finished; whatever waited for room may go now. */
  private done(t: Tracked): void {
    this.finish(t);
    this.pump();
  }

  /** Marks the record done and moves its partition's offset past every finished prefix. */
  private finish(t: Tracked): void {
    t.state = "done";
    const p = t.partition;
    if (this.partitions.get(p.key) !== p) return; // dropped by a reassignment
    let last: Tracked | undefined;
    while (p.pending[0]?.state === "done") {
      last = p.pending.shift() as Tracked;
      if (this.attempts.size > 0) this.attempts.delete(offsetKey(last.record));
    }
    if (last) this.markCommit(p, last.record.offset + 1);
  }

  private flushCommits(): Effect.Effect<void> {
    const commits = [...this.dirty.values()];
    this.dirty.clear();
    if (commits.length === 0) return Effect.void;
    return this.hooks.commit(commits).pipe(
      Effect.catchAll((e) =>
        Effect.logWarning("committing offsets failed; the next commit carries them", e.cause).pipe(
          Effect.zipRight(
            Effect.sync(() => {
              for (const c of commits) {
                const key = tpKey(c.topic, c.partition);
                if (this.partitions.has(key) && !this.dirty.has(key)) this.dirty.set(key, c);
              }
            }),
          ),
        ),
      ),
    );
  }
}
