/**
 * TLS for the one port: `FO_TLS_CERT` / `FO_TLS_KEY` (PEM files) serve
 * HTTPS with ALPN offering h2 and http/1.1, so gRPC clients and browsers
 * share the port as in cleartext. `FO_TLS_CLIENT_CA` requires a client
 * certificate signed by that CA (mTLS) and names the caller after its
 * subject CN.
 */
import { readFileSync } from "node:fs";
import type { SecureServerOptions } from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { Option } from "effect";
import type { ChannelTls } from "../client/channel.js";
import type { MeshConfigShape } from "../config.js";

const read = (name: string, file: string) => {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new Error(`${name}: cannot read ${file}: ${(e as Error).message}`);
  }
};

export const tlsOptions = (
  security: MeshConfigShape["security"],
): SecureServerOptions | undefined => {
  if (Option.isNone(security.tlsCert) || Option.isNone(security.tlsKey)) return undefined;
  const ca = Option.map(security.tlsClientCa, (f) => read("FO_TLS_CLIENT_CA", f));
  return {
    cert: read("FO_TLS_CERT", security.tlsCert.value),
    key: read("FO_TLS_KEY", security.tlsKey.value),
    ...(Option.isSome(ca) ? { ca: ca.value, requestCert: true, rejectUnauthorized: true } : {}),
  };
};

/**
 * How this node calls its peers over TLS: it trusts the mesh's CA
 * (FO_TLS_CLIENT_CA) and shows its own certificate.
 */
export const peerTls = (security: MeshConfigShape["security"]): ChannelTls | undefined => {
  const tls = tlsOptions(security);
  return tls && { ca: tls.ca as Buffer, cert: tls.cert as Buffer, key: tls.key as Buffer };
};

/** Subject CN of a verified client certificate, if the connection has one. */
export const clientCertificateName = (socket: Socket): string | undefined => {
  const tls = socket as Partial<TLSSocket>;
  if (tls.authorized !== true || typeof tls.getPeerCertificate !== "function") return undefined;
  const cn = tls.getPeerCertificate().subject?.CN;
  return typeof cn === "string" && cn !== "" ? cn : undefined;
};
