/** Clients for every protocol the mesh speaks, as real callers would build them. */
import type { DescService } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

/**
 * The native gRPC server (grpc-js) of each mesh a test started, by the mesh's
 * one-port URL: the "gRPC, native port" protocol calls it instead.
 */
export const nativeGrpcUrls = new Map<string, string>();

const nativeUrl = (baseUrl: string) => {
  const url = nativeGrpcUrls.get(baseUrl);
  if (url === undefined) throw new Error(`no native gRPC port is known for ${baseUrl}`);
  return url;
};

export const protocols = {
  "Connect over HTTP/1.1": (baseUrl: string) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "Connect over HTTP/2": (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "2" }),
  "gRPC (h2c)": (baseUrl: string) => createGrpcTransport({ baseUrl }),
  "gRPC, native port (grpc-js)": (baseUrl: string) =>
    createGrpcTransport({ baseUrl: nativeUrl(baseUrl) }),
  "gRPC-Web over HTTP/1.1": (baseUrl: string) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  "gRPC-Web over HTTP/2": (baseUrl: string) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
} as const;

export type ProtocolName = keyof typeof protocols;
export const protocolNames = Object.keys(protocols) as ProtocolName[];

export const clientFor = <S extends DescService>(
  service: S,
  protocol: ProtocolName,
  baseUrl: string,
): Client<S> => createClient(service, protocols[protocol](baseUrl));

/** The ConnectError a call failed with; fails the test if it succeeded. */
export const failureOf = async (call: Promise<unknown>): Promise<ConnectError> => {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
};
