/** A service with its implementation, as every request path registers it. */
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";

export interface ServedService {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
}

/** Pairs a service with its implementation, checked against the service's type. */
export const served = <S extends DescService>(
  service: S,
  impl: Partial<ServiceImpl<S>>,
): ServedService => ({ service, impl: impl as Partial<ServiceImpl<DescService>> });
