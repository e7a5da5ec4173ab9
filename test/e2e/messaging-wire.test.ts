/**
 * MessageBus over the wire: a @grpc/grpc-js subscriber acknowledging with
 * unary calls while a Connect client publishes, a Connect subscription (the
 * browser path) with Nack and redelivery, request/reply between two
 * clients, error codes with their details, and the per-client
 * subscription limit. Embedded backend.
 */
import { randomUUID } from "node:crypto";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MessageBusService,
  type SubscribeResponse,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import { MessageKind } from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { defaultConfig } from "../../src/config.js";
import { clientFor, failureOf } from "../support/clients.js";
import { grpcJsClient } from "../support/grpcjs.js";
import { startMesh, type TestMesh } from "../support/mesh.js";

let mesh: TestMesh;
let grpcJs: ReturnType<typeof grpcJsClient>;
const m = MessageBusService.method;
const connect = () => clientFor(MessageBusService, "Connect over HTTP/1.1", mesh.url);
const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  mesh = await startMesh({
    messaging: { ...defaultConfig().messaging, maxSubscriptionsPerClient: 2 },
  });
  grpcJs = grpcJsClient(mesh.port);
});
afterAll(async () => {
  grpcJs.close();
  await mesh.close();
});

/** Items of a Connect subscription, pulled one at a time. */
const connectSubscription = (request: Parameters<ReturnType<typeof connect>["subscribe"]>[0]) => {
  const abort = new AbortController();
  const iterator = connect().subscribe(request, { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    next: async (): Promise<SubscribeResponse> => {
      const item = await iterator.next();
      if (item.done) throw new Error("subscription ended");
      return item.value;
    },
    close: () => abort.abort(),
  };
};

describe("MessageBus over the wire", () => {
  it("a gRPC subscriber receives a command published over Connect and acks it", async () => {
    const destination = unique("importer");
    const call = grpcJs.serverStream(m.subscribe, { group: destination, destination });
    const items: SubscribeResponse[] = [];
    const arrived = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const check = () => items.length >= n && resolve();
        call.on("data", (item: SubscribeResponse) => {
          items.push(item);
          check();
        });
        call.on("error", (e: grpc.ServiceError) => e.code !== grpc.status.CANCELLED && reject(e));
        check();
      });
    try {
      await arrived(1);
      expect(items[0]?.event.case).toBe("subscribed");
      const sent = await connect().sendCommand({
        command: {
          messageType: "floworchestrator.ImportCommand",
          destination,
          correlationId: "corr-1",
          payload: json({ source: "s3://bucket/in.csv" }),
        },
      });
      await arrived(2);
      const delivery = items[1]?.event;
      if (delivery?.case !== "delivery") throw new Error("expected a delivery");
      expect(delivery.value.attempt).toBe(1);
      expect(delivery.value.message?.messageId).toBe(sent.receipt?.messageId);
      expect(delivery.value.message?.kind).toBe(MessageKind.COMMAND);
      expect(delivery.value.message?.correlationId).toBe("corr-1");
      await grpcJs.unary(m.ack, { deliveryId: delivery.value.deliveryId });
      // Settled: a second ack of the same delivery is NOT_FOUND.
      const again = (await grpcJs
        .unary(m.ack, { deliveryId: delivery.value.deliveryId })
        .catch((e: grpc.ServiceError) => e)) as grpc.ServiceError;
      expect(again.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      call.cancel();
    }
  });

  it("a Connect subscriber nacks and gets the event again as attempt 2", async () => {
    const type = unique("FlowExecutionStarted");
    const sub = connectSubscription({
      group: unique("monitor"),
      eventTypes: [type],
      retry: { interval: durationFromMs(50) },
    });
    try {
      expect((await sub.next()).event.case).toBe("subscribed");
      await connect().publishEvent({ event: { messageType: type, payload: json({ n: 1 }) } });
      const first = (await sub.next()).event;
      if (first.case !== "delivery") throw new Error("expected a delivery");
      const nacked = await connect().nack({ deliveryId: first.value.deliveryId, reason: "busy" });
      expect(nacked.deadLettered).toBe(false);
      const second = (await sub.next()).event;
      if (second.case !== "delivery") throw new Error("expected a redelivery");
      expect(second.value.attempt).toBe(2);
      expect(second.value.message?.messageId).toBe(first.value.message?.messageId);
      await connect().ack({ deliveryId: second.value.deliveryId });
    } finally {
      sub.close();
    }
  });

  it("Request waits for the reply sent by a subscriber", async () => {
    const destination = unique("calculator");
    const responder = connectSubscription({ group: destination, destination });
    try {
      expect((await responder.next()).event.case).toBe("subscribed");
      const answering = (async () => {
        const item = (await responder.next()).event;
        if (item.case !== "delivery") throw new Error("expected the request");
        const request = item.value.message;
        await connect().reply({
          inReplyTo: request?.messageId ?? "",
          replyTo: request?.replyTo ?? "",
          reply: { messageType: "SumResult", payload: json({ sum: 3 }) },
        });
        await connect().ack({ deliveryId: item.value.deliveryId });
      })();
      const answer = await grpcJs.unary(m.request, {
        command: { messageType: "SumCommand", destination, payload: json([1, 2]) },
        timeout: durationFromMs(10_000),
      });
      await answering;
      expect(JSON.parse(new TextDecoder().decode(answer.reply?.payload))).toEqual({ sum: 3 });
      expect(answer.reply?.inReplyTo).not.toBe("");
    } finally {
      responder.close();
    }
  });

  it("gauges on /metrics count open subscriptions and unacknowledged deliveries", async () => {
    const type = unique("Gauged");
    const sub = connectSubscription({ group: unique("gauged"), eventTypes: [type] });
    try {
      expect((await sub.next()).event.case).toBe("subscribed");
      await connect().publishEvent({ event: { messageType: type } });
      const delivery = (await sub.next()).event;
      if (delivery.case !== "delivery") throw new Error("expected a delivery");
      const gauge = async (name: string) => {
        const text = await (await fetch(`${mesh.url}/metrics`)).text();
        return Number(new RegExp(`^${name}\\{[^}]*\\} (\\d+)`, "m").exec(text)?.[1]);
      };
      expect(await gauge("messaging_subscriptions")).toBeGreaterThanOrEqual(1);
      expect(await gauge("messaging_deliveries_in_flight")).toBeGreaterThanOrEqual(1);
      expect(await gauge("messaging_backlog")).toBeGreaterThanOrEqual(1);
      await connect().ack({ deliveryId: delivery.value.deliveryId });
    } finally {
      sub.close();
    }
  });

  it("refuses bad input with the right codes and stays healthy", async () => {
    const missingType = await failureOf(connect().publishEvent({ event: { payload: json(1) } }));
    expect(missingType.code).toBe(Code.InvalidArgument);
    const badContent = await failureOf(
      connect().publishEvent({ event: { messageType: "T", contentType: "application/xml" } }),
    );
    expect(badContent.code).toBe(Code.InvalidArgument);
    const tooBig = await failureOf(
      connect().publishEvent({
        event: {
          messageType: "T",
          contentType: "application/octet-stream",
          payload: new Uint8Array(1024 * 1024 + 1),
        },
      }),
    );
    expect(tooBig.code).toBe(Code.ResourceExhausted);
    const unknown = await failureOf(connect().ack({ deliveryId: randomUUID() }));
    expect(unknown.code).toBe(Code.NotFound);
    const ok = await connect().publishEvent({ event: { messageType: unique("T") } });
    expect(ok.receipt?.messageId).not.toBe("");
  });

  it("limits the subscriptions one connection holds at once", async () => {
    const type = unique("Limited");
    // One gRPC channel is one connection: two subscriptions fit, the third is refused.
    const open = [0, 1].map(() => {
      const call = grpcJs.serverStream(m.subscribe, { group: unique("g"), eventTypes: [type] });
      call.on("error", () => {}); // CANCELLED when the test ends them
      return call;
    });
    try {
      await Promise.all(open.map((call) => new Promise((resolve) => call.once("data", resolve))));
      const third = grpcJs.serverStream(m.subscribe, { group: unique("g"), eventTypes: [type] });
      const refused = await new Promise<grpc.ServiceError>((resolve) => third.on("error", resolve));
      expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      // Another connection is another client.
      const other = connectSubscription({ group: unique("g"), eventTypes: [type] });
      expect((await other.next()).event.case).toBe("subscribed");
      other.close();
    } finally {
      for (const call of open) call.cancel();
    }
  });
});
