/**
 * Who is calling. With `FO_AUTH_TOKENS_FILE` every RPC but health and
 * reflection needs `authorization: Bearer <token>`: no or an unknown token is
 * UNAUTHENTICATED, a method the token's principal may not call is
 * PERMISSION_DENIED. With mTLS (`FO_TLS_CLIENT_CA`) the principal is the
 * client certificate's subject CN; the file, when set, gives its methods.
 *
 * The file is JSON, tokens stored as SHA-256 (they are long random secrets,
 * so a plain digest is enough, as for API tokens generally):
 *
 * ```json
 * { "tokens": [
 *   { "principal": "importer", "sha256": "<hex>", "allow": ["floworchestrator.memory.v1.MemoryManagerService/*"] },
 *   { "principal": "node-b", "allow": ["*"] }
 * ] }
 * ```
 *
 * A presented token is compared with every stored digest in constant time
 * (no early exit), and is never logged.
 *
 * A node that forwards a call passes its caller on: the caller's own
 * `authorization` header when it has one, else (mTLS) the caller's principal
 * in `fo-forwarded-principal`. That header is taken only from the principals
 * in `FO_TRUSTED_FORWARDERS` (the mesh's nodes); the call then acts, and is
 * allowed, as the principal it names. From anyone else it is
 * PERMISSION_DENIED.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createContextKey } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionAlpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { FORWARDED_PRINCIPAL } from "../common/caller.js";
import { PermissionDenied, Unauthenticated } from "../common/errors.js";
import { meshErrorToConnect } from "./errors.js";

/** The authenticated principal of a call (set by the interceptor), if any. */
export const principalKey = createContextKey<string | undefined>(undefined, {
  description: "the authenticated principal",
});

/** Subject CN of the client certificate, when the connection is mTLS. */
export const certificateKey = createContextKey<string | undefined>(undefined, {
  description: "the client certificate's subject CN",
});

interface Entry {
  readonly principal: string;
  readonly digest: Buffer | undefined;
  readonly allow: ReadonlyArray<string>;
}

/** Services anyone may call: probes and tools must work without credentials. */
const open = new Set([Health.typeName, ServerReflection.typeName, ServerReflectionAlpha.typeName]);

const METHOD_PATTERN = /^(\*|[A-Za-z_][\w.]*\/(\*|\w+))$/;

/** Reads and checks the tokens file; throws one line naming what is wrong. */
export const loadTokens = (file: string): ReadonlyArray<Entry> => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`FO_AUTH_TOKENS_FILE: cannot read ${file}: ${(e as Error).message}`);
  }
  const tokens = (parsed as { tokens?: unknown })?.tokens;
  if (!Array.isArray(tokens)) throw new Error('FO_AUTH_TOKENS_FILE: expected { "tokens": [...] }');
  return tokens.map((t: { principal?: unknown; sha256?: unknown; allow?: unknown }, i) => {
    const where = `FO_AUTH_TOKENS_FILE: tokens[${i}]`;
    if (typeof t?.principal !== "string" || t.principal === "")
      throw new Error(`${where}.principal must be a non-empty string`);
    if (
      t.sha256 !== undefined &&
      !(typeof t.sha256 === "string" && /^[0-9a-f]{64}$/i.test(t.sha256))
    )
      throw new Error(`${where}.sha256 must be 64 hex digits (the SHA-256 of the token)`);
    if (
      !Array.isArray(t.allow) ||
      !t.allow.every((a) => typeof a === "string" && METHOD_PATTERN.test(a))
    )
      throw new Error(`${where}.allow must list "*", "<service>/*" or "<service>/<Method>"`);
    return {
      principal: t.principal,
      digest: typeof t.sha256 === "string" ? Buffer.from(t.sha256, "hex") : undefined,
      allow: t.allow as string[],
    };
  });
};

const allows = (entry: Entry, service: string, method: string) =>
  entry.allow.some((a) => a === "*" || a === `${service}/*` || a === `${service}/${method}`);

/** The entry whose digest matches, comparing against every one so timing tells nothing. */
const byToken = (entries: ReadonlyArray<Entry>, token: string): Entry | undefined => {
  const digest = createHash("sha256").update(token).digest();
  let found: Entry | undefined;
  for (const entry of entries) {
    if (entry.digest !== undefined && timingSafeEqual(digest, entry.digest) && found === undefined)
      found = entry;
  }
  return found;
};

const denied = (error: Unauthenticated | PermissionDenied) => meshErrorToConnect(error);

export interface AuthOptions {
  /** Entries of the tokens file; undefined: no token authentication. */
  readonly tokens: ReadonlyArray<Entry> | undefined;
  /** Client certificates are required (mTLS): the principal comes from them. */
  readonly mtls: boolean;
  /** Principals that may pass on another principal in FORWARDED_PRINCIPAL. */
  readonly trustedForwarders: ReadonlyArray<string>;
}

/**
 * The principal a call acts as (undefined without authentication), or the
 * UNAUTHENTICATED / PERMISSION_DENIED ConnectError it is refused with.
 * `header` reads a request header; `certificate` is the client certificate's
 * subject CN, when the connection has one.
 */
export type Authenticate = (
  service: string,
  method: string,
  header: (name: string) => string | null,
  certificate: string | undefined,
) => string | undefined;

export const authenticator =
  ({ tokens, mtls, trustedForwarders }: AuthOptions): Authenticate =>
  (service, method, header, certificate) => {
    if (open.has(service)) return undefined;
    let entry: Entry | undefined;
    let principal: string | undefined;
    if (mtls) {
      principal = certificate;
      if (principal === undefined)
        throw denied(
          new Unauthenticated({ message: "a client certificate with a subject CN is required" }),
        );
      entry = tokens?.find((e) => e.principal === principal);
    } else if (tokens !== undefined) {
      const match = /^Bearer\s+(\S+)$/i.exec(header("authorization") ?? "");
      if (match?.[1] === undefined)
        throw denied(
          new Unauthenticated({ message: "an `authorization: Bearer <token>` header is required" }),
        );
      entry = byToken(tokens, match[1]);
      if (entry === undefined) throw denied(new Unauthenticated({ message: "unknown token" }));
      principal = entry.principal;
    }
    const forwarded = header(FORWARDED_PRINCIPAL);
    if (forwarded !== null) {
      if (principal === undefined || !trustedForwarders.includes(principal) || forwarded === "")
        throw denied(
          new PermissionDenied({
            message: `only the mesh's nodes may pass on a caller in ${FORWARDED_PRINCIPAL}`,
            metadata: { principal: principal ?? "" },
          }),
        );
      principal = forwarded;
      entry = tokens?.find((e) => e.principal === principal);
    }
    if (tokens !== undefined && (entry === undefined || !allows(entry, service, method))) {
      throw denied(
        new PermissionDenied({
          message: `${principal} may not call ${service}/${method}`,
          metadata: { principal: principal ?? "", method: `${service}/${method}` },
        }),
      );
    }
    return principal;
  };
