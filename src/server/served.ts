/** A service with its implementation, as every request path registers it. */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";

export interface ServedService {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
  /**
   * The wire bytes of an answer the service can write faster than
   * `toBinary`, or undefined to leave it to `toBinary`. Used where the
   * mesh encodes answers itself (native gRPC).
   */
  readonly encode?: (method: DescMethod, answer: unknown) => Uint8Array | undefined;
}

/** Pairs a service with its implementation, checked against the service's type. */
export const served = <S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
  encode?: ServedService["encode"],
): ServedService => ({
  service,
  impl: impl as Partial<ServiceImpl<DescService>>,
  ...(encode === undefined ? {} : { encode }),
});
