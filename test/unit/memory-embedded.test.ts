// The MemoryManager conformance suite on the embedded store: each layer the
// suite builds gets a fresh, empty store of its own.
import { EmbeddedMemoryStore } from "../../src/memory/embedded.js";
import { memoryManagerConformance } from "../conformance/memory.suite.js";

memoryManagerConformance("MemoryManager on the embedded store", () => EmbeddedMemoryStore.layer());
