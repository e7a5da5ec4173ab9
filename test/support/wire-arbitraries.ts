/** Field values for the wire-encoder property tests: random and boundary, any UTF-16. */
import fc from "fast-check";

export const text = fc.oneof(
  fc.constant(""),
  fc.string(),
  fc.string16bits(),
  fc.fullUnicodeString(),
);

export const int32 = fc.oneof(
  fc.constantFrom(0, 1, -1, 127, 128, 2 ** 31 - 1, -(2 ** 31)),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
);

export const int64 = fc.oneof(
  fc.constantFrom(0n, 1n, -1n, 127n, 128n, 2n ** 53n, 2n ** 63n - 1n, -(2n ** 63n)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
);

/** A Timestamp or Duration, or none; `minNanos` below 0 for a Duration. */
export const secondsAndNanos = (minNanos: number) =>
  fc.option(
    fc.record({
      seconds: int64,
      nanos: fc.oneof(fc.constant(0), fc.integer({ min: minNanos, max: 999_999_999 })),
    }),
    { nil: undefined },
  );
