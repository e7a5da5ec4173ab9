/**
 * `whenClosed`: the RPC telemetry ends a call's span and records its
 * duration once the Node response has closed (sent or abandoned), never
 * before, and never loses the call when the response closed first (a client
 * that cancelled before the handler was done).
 */
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { whenClosed } from "../../src/telemetry/rpc.js";

describe("whenClosed", () => {
  it("runs the function when the response closes, not before", () => {
    const res = new EventEmitter();
    const sent = whenClosed(res);
    let ran = 0;
    sent(() => ran++);
    expect(ran).toBe(0);
    res.emit("close");
    expect(ran).toBe(1);
    res.emit("close");
    expect(ran).toBe(1);
  });

  it("runs a function given after the response closed at once", () => {
    const res = new EventEmitter();
    const sent = whenClosed(res);
    res.emit("close");
    let ran = 0;
    sent(() => ran++);
    expect(ran).toBe(1);
  });
});
