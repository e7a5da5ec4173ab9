/**
 * The tracer provider's id generator: random ids (the SDK's own generator),
 * except while `withIds` runs, when the span being started gets the ids a
 * client recorded it with. That is how RecordSpans keeps a client span's
 * trace id and span id: the OpenTelemetry JS SDK has no public API to import
 * a finished span into a tracer provider, but `idGenerator` is part of its
 * public configuration, and `Tracer.startSpan` asks it for the new span's id
 * (and, for a root span, the trace id) synchronously, before anything else
 * can start a span. Each pending id is used once; spans started by anything
 * else (a processor, the next call) get random ids.
 */
import { type IdGenerator, RandomIdGenerator } from "@opentelemetry/sdk-trace-base";

export interface ClientIds {
  /** The trace, used when the span has no parent (children inherit their parent's). */
  readonly traceId: string;
  readonly spanId: string;
}

export class ClientSpanIds implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  private pendingTraceId: string | undefined;
  private pendingSpanId: string | undefined;

  generateTraceId(): string {
    const id = this.pendingTraceId;
    this.pendingTraceId = undefined;
    return id ?? this.random.generateTraceId();
  }

  generateSpanId(): string {
    const id = this.pendingSpanId;
    this.pendingSpanId = undefined;
    return id ?? this.random.generateSpanId();
  }

  /** Runs `start` (which must start exactly one span, synchronously) with the client's ids. */
  withIds<A>(ids: ClientIds, start: () => A): A {
    this.pendingTraceId = ids.traceId;
    this.pendingSpanId = ids.spanId;
    try {
      return start();
    } finally {
      this.pendingTraceId = undefined;
      this.pendingSpanId = undefined;
    }
  }
}
