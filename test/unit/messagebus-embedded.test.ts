// The MessageBus conformance suite on the embedded log: each layer the suite
// builds gets a fresh, empty log of its own.
import { EmbeddedMessageLog } from "../../src/messaging/embedded.js";
import { messageBusConformance } from "../conformance/messagebus.suite.js";

messageBusConformance("MessageBus on the embedded log", () => EmbeddedMessageLog.layer());
