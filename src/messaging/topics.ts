/**
 * Topic naming, one place (the README documents it). With the default
 * prefix `fo.`:
 * - `fo.cmd.<destination>`: commands sent to a destination;
 * - `fo.evt.<message type>`: events of one type (faults: `fo.evt.Fault.<type>`);
 * - `fo.retry.<group>`: dead letters replayed to one group;
 * - `fo.dlq.<group>`: a group's dead letters;
 * - `fo.replies`: replies to Request, read by every mesh instance.
 */
export interface Topics {
  readonly command: (destination: string) => string;
  readonly event: (messageType: string) => string;
  readonly retry: (group: string) => string;
  readonly deadLetter: (group: string) => string;
  readonly replies: string;
}

export const makeTopics = (prefix: string): Topics => ({
  command: (destination) => `${prefix}cmd.${destination}`,
  event: (messageType) => `${prefix}evt.${messageType}`,
  retry: (group) => `${prefix}retry.${group}`,
  deadLetter: (group) => `${prefix}dlq.${group}`,
  replies: `${prefix}replies`,
});

/** The event type of the Fault published when a message of `messageType` is dead-lettered. */
export const faultType = (messageType: string) => `Fault.${messageType}`.slice(0, 180);
