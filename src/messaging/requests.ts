/**
 * Request and Reply. Every mesh instance reads the shared replies topic in
 * a consumer group of its own (from the end, started with its first
 * Request), so a reply reaches the instance whose caller waits for it
 * whichever instance the replier used. A Request sends its command with
 * `reply_to` set and waits for the reply whose `in_reply_to` is the
 * command's id, up to its timeout and the call's deadline; a command with
 * no expiration time expires with the timeout (nobody acts on a request its
 * caller gave up on). A reply nobody waits for (too late, or for an unknown
 * request) is dropped.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Clock, Deferred, Effect, Scope } from "effect";
import type {
  ReplyRequest,
  RequestRequest,
} from "../../gen/floworchestrator/messaging/v1/message_bus_service_pb.js";
import {
  type Envelope,
  EnvelopeSchema,
} from "../../gen/floworchestrator/messaging/v1/message_pb.js";
import { DeadlineExceeded } from "../common/errors.js";
import * as V from "../common/validate.js";
import { durationField, unavailable } from "./common.js";
import { type EnvelopeLimits, fromRecord, prepare } from "./envelope.js";
import type { MessageLogShape } from "./log.js";
import type { Publisher } from "./publisher.js";
import type { Topics } from "./topics.js";

export const makeRequests = (
  log: MessageLogShape,
  topics: Topics,
  publisher: Publisher,
  limits: EnvelopeLimits,
  /** This instance's own consumer group on the replies topic. */
  repliesGroup: string,
) =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope;
    const pending = new Map<string, Deferred.Deferred<Envelope>>();
    const lock = yield* Effect.makeSemaphore(1);
    let listening = false;

    const listen = lock.withPermits(1)(
      Effect.suspend(() =>
        listening
          ? Effect.void
          : log.ensureTopics([topics.replies]).pipe(
              Effect.zipRight(
                log.consume(
                  { group: repliesGroup, topics: [topics.replies], fromBeginning: false },
                  {
                    onRecord: (record) =>
                      Effect.suspend(() => {
                        const reply = fromRecord(record);
                        const waiting = pending.get(reply.inReplyTo);
                        return waiting ? Deferred.succeed(waiting, reply) : Effect.void;
                      }),
                    onAssigned: () => Effect.void,
                  },
                ),
              ),
              Scope.extend(scope),
              Effect.tap(() => {
                listening = true;
              }),
              unavailable,
            ),
      ),
    );

    const request = (req: RequestRequest) =>
      Effect.gen(function* () {
        const timeout = durationField("timeout", req.timeout, {
          fallback: 30_000,
          min: 1,
          max: 600_000,
        });
        yield* V.check(timeout.violations);
        const prepared = yield* prepare("command", req.command, "command", limits);
        const now = yield* Clock.currentTimeMillis;
        // Like MassTransit's request timeout: nobody should act on a request its caller gave up on.
        const command = create(EnvelopeSchema, {
          ...prepared,
          replyTo: topics.replies,
          expireTime: prepared.expireTime ?? timestampFromMs(now + timeout.ms),
        });
        yield* listen;
        const reply = yield* Deferred.make<Envelope>();
        pending.set(command.messageId, reply);
        return yield* publisher
          .append([{ message: command, topic: publisher.topicOf(command) }])
          .pipe(
            Effect.zipRight(
              Deferred.await(reply).pipe(
                Effect.timeoutFail({
                  duration: timeout.ms,
                  onTimeout: () =>
                    new DeadlineExceeded({
                      message: `no reply to ${command.messageId} within ${timeout.ms} ms`,
                      code: "CONNECTION_ERROR.TIMEOUT",
                      metadata: { message_id: command.messageId },
                    }),
                }),
              ),
            ),
            Effect.map((envelope) => ({ reply: envelope })),
            Effect.ensuring(Effect.sync(() => pending.delete(command.messageId))),
          );
      });

    const reply = (req: ReplyRequest) =>
      Effect.gen(function* () {
        yield* V.check(
          V.label("in_reply_to", req.inReplyTo, V.MAX_ID_LENGTH),
          req.replyTo === topics.replies
            ? []
            : [
                {
                  field: "reply_to",
                  description: "is not a reply address of this mesh (copy the request's reply_to)",
                },
              ],
        );
        const prepared = yield* prepare("reply", req.reply, "reply", limits);
        const message = create(EnvelopeSchema, {
          ...prepared,
          inReplyTo: req.inReplyTo,
          correlationId: prepared.correlationId === "" ? req.inReplyTo : prepared.correlationId,
          partitionKey: prepared.partitionKey === "" ? req.inReplyTo : prepared.partitionKey,
        });
        const [receipt] = yield* publisher.append([{ message, topic: topics.replies }]);
        return { receipt };
      });

    return { request, reply };
  });
