/**
 * The Kafka record of an envelope carries the headers the `cloudevents`
 * package's Kafka binary binding gives for the same event (envelope.ts
 * writes them out instead of building a CloudEvent per message), and reads
 * back as the envelope it came from.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "@effect/vitest";
import { CloudEvent, Kafka } from "cloudevents";
import {
  type Envelope,
  EnvelopeSchema,
  MessageKind,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { fromRecord, toRecord } from "../../src/messaging/envelope.js";

/** The headers as the binding gives them: every attribute and extension, `ce_`-prefixed. */
const viaCloudEvents = (env: Envelope): Record<string, string> => {
  const extensions: Record<string, string> = {};
  const put = (key: string, value: string) => {
    if (value !== "") extensions[key] = value;
  };
  put("correlationid", env.correlationId);
  put("causationid", env.causationId);
  put("conversationid", env.conversationId);
  put("destination", env.destination);
  put("partitionkey", env.partitionKey);
  put("replyto", env.replyTo);
  put("inreplyto", env.inReplyTo);
  put(
    "messagekind",
    { [MessageKind.COMMAND]: "command", [MessageKind.EVENT]: "event" }[env.kind as 1 | 2] ?? "",
  );
  if (env.expireTime) put("expirationtime", timestampDate(env.expireTime).toISOString());
  const event = new CloudEvent(
    {
      id: env.messageId,
      type: env.messageType,
      source: env.source,
      time: env.time ? timestampDate(env.time).toISOString() : undefined,
      datacontenttype: env.contentType,
      ...extensions,
    },
    false,
  );
  const headers: Record<string, string> = { ...env.headers };
  for (const [key, value] of Object.entries(Kafka.binary(event).headers)) {
    // The binding carries datacontenttype in `content-type` only.
    if (typeof value === "string" && key !== "ce_datacontenttype") headers[key] = value;
  }
  return headers;
};

const envelopes: Array<[string, Envelope]> = [
  [
    "an event with the fields the mesh fills in",
    create(EnvelopeSchema, {
      messageId: "m-1",
      messageType: "orders.Placed",
      kind: MessageKind.EVENT,
      source: "floworchestrator-mesh",
      time: timestampFromMs(1_700_000_000_123),
      contentType: "application/json",
      payload: new TextEncoder().encode("{}"),
    }),
  ],
  [
    "a command with every field and headers of its own",
    create(EnvelopeSchema, {
      messageId: "m-2",
      messageType: "orders.Ship",
      kind: MessageKind.COMMAND,
      correlationId: "c-1",
      causationId: "c-0",
      conversationId: "conv",
      source: "importer-7",
      destination: "shipping",
      time: timestampFromMs(1_700_000_000_000),
      expireTime: timestampFromMs(1_800_000_000_000),
      headers: { tenant: "acme", "x.trace": "abc" },
      contentType: "application/octet-stream",
      payload: new Uint8Array([1, 2, 3]),
      partitionKey: "order-9",
      replyTo: "fo.replies",
      inReplyTo: "r-1",
    }),
  ],
];

describe("envelope: CloudEvents Kafka binary mode", () => {
  for (const [what, env] of envelopes) {
    it(`${what}: the headers the cloudevents binding gives`, () => {
      const record = toRecord(env, "fo.evt.orders");
      expect(record.headers).toEqual(viaCloudEvents(env));
      expect(record.key).toBe(env.partitionKey === "" ? undefined : env.partitionKey);
      expect(record.value).toBe(env.payload);
    });

    it(`${what}: reads back as the same envelope`, () => {
      const record = toRecord(env, "fo.evt.orders");
      const back = fromRecord({ ...record, partition: 0, offset: 7, timestamp: 0 });
      expect(back).toEqual(env);
    });
  }

  it("extra headers go last, over the others", () => {
    const [, env] = envelopes[0] as [string, Envelope];
    const record = toRecord(env, "t", { fo_attempt: "2" });
    expect(record.headers.fo_attempt).toBe("2");
    expect(Object.keys(record.headers).at(-1)).toBe("fo_attempt");
  });
});
