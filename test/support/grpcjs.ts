/**
 * Calls any method of our services with a plain @grpc/grpc-js client, as a
 * Node service elsewhere in the mesh would, using the descriptors from gen/.
 */
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

const codec = <D extends DescMessage>(schema: D) => ({
  serialize: (m: MessageShape<D>) => Buffer.from(toBinary(schema, m)),
  deserialize: (b: Buffer) => fromBinary(schema, b),
});

const path = (method: { parent: { typeName: string }; name: string }) =>
  `/${method.parent.typeName}/${method.name}`;

export const grpcJsClient = (port: number) => {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    client,
    unary: <I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      request: MessageInitShape<I>,
    ) =>
      new Promise<MessageShape<O>>((resolve, reject) =>
        client.makeUnaryRequest(
          path(method),
          codec(method.input).serialize,
          codec(method.output).deserialize,
          create(method.input, request),
          (err, value) => (err || !value ? reject(err) : resolve(value)),
        ),
      ),
    serverStream: <I extends DescMessage, O extends DescMessage>(
      method: DescMethodServerStreaming<I, O>,
      request: MessageInitShape<I>,
    ) =>
      client.makeServerStreamRequest(
        path(method),
        codec(method.input).serialize,
        codec(method.output).deserialize,
        create(method.input, request),
      ),
    close: () => client.close(),
  };
};
