/**
 * What the user picked (execution, event types) lives in the URL fragment,
 * so a reload or a shared link shows the same view.
 */
const params = () => new URLSearchParams(location.hash.slice(1));

export const getParam = (name: string): string | undefined => params().get(name) ?? undefined;

export const setParam = (name: string, value: string) => {
  const p = params();
  if (value === "") p.delete(name);
  else p.set(name, value);
  const hash = p.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
};
