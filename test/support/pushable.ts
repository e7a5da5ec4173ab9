/**
 * An async iterable fed as a test or bench goes: `push` adds an item, `end`
 * ends it once what was pushed has been read (for a request stream, the
 * half-close).
 */
export const pushable = <T>() => {
  const queued: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  const poke = () => {
    wake?.();
    wake = undefined;
  };
  const iterable: AsyncIterable<T> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queued.length > 0) yield queued.shift() as T;
        else if (ended) return;
        else
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
      }
    },
  };
  return {
    iterable,
    push: (item: T) => {
      queued.push(item);
      poke();
    },
    end: () => {
      ended = true;
      poke();
    },
  };
};
