// Preloaded into the mesh process by the fault tests (NODE_OPTIONS=--require):
// on SIGUSR2 it runs a full garbage collection, then writes
// process.memoryUsage() as one `[heap-probe] {json}` line to stderr, so a
// test compares live memory rather than how far V8 happened to let its heap
// grow. Test-only: the mesh itself knows nothing of it.
"use strict";
const v8 = require("node:v8");
const vm = require("node:vm");

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc");
process.on("SIGUSR2", () => {
  gc();
  process.stderr.write(`[heap-probe] ${JSON.stringify(process.memoryUsage())}\n`);
});
