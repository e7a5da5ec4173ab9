/** Polls until `probe` yields a value (errors count as not yet), or fails after `ms`. */
export const poll = async <A>(what: string, probe: () => Promise<A | undefined>, ms = 30_000) => {
  const until = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`${what}: nothing within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
};
