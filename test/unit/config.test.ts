import { ConfigProvider, Duration, Effect, Either, LogLevel } from "effect";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";

const load = (env: Record<string, string>) =>
  Effect.runSync(loadConfig(ConfigProvider.fromMap(new Map(Object.entries(env)))));

describe("configuration", () => {
  it("has the documented defaults", () => {
    const config = Either.getOrThrow(load({}));
    expect(config).toMatchObject({
      port: 8080,
      host: "127.0.0.1",
      maxRequestBytes: 4 * 1024 * 1024,
      corsOrigins: ["*"],
      logLevel: LogLevel.Info,
    });
    expect(Duration.toMillis(config.drainTimeout)).toBe(10_000);
  });

  it("reads FO_* variables", () => {
    const config = Either.getOrThrow(
      load({
        FO_PORT: "9090",
        FO_HOST: "0.0.0.0",
        FO_MAX_REQUEST_BYTES: "1024",
        FO_CORS_ORIGINS: "https://a.example, https://b.example",
        FO_DRAIN_TIMEOUT: "3 seconds",
        FO_LOG_LEVEL: "debug",
      }),
    );
    expect(config).toMatchObject({
      port: 9090,
      grpcPort: 10090,
      host: "0.0.0.0",
      maxRequestBytes: 1024,
      corsOrigins: ["https://a.example", "https://b.example"],
      logLevel: LogLevel.Debug,
    });
    expect(Duration.toMillis(config.drainTimeout)).toBe(3000);
  });

  it("serves native gRPC on FO_PORT + 1000, on a port of its own, or not at all", () => {
    const grpcPort = (env: Record<string, string>) => Either.getOrThrow(load(env)).grpcPort;
    expect(grpcPort({})).toBe(9080);
    expect(grpcPort({ FO_PORT: "65000" })).toBe(0);
    expect(grpcPort({ FO_PORT: "0" })).toBe(0);
    expect(grpcPort({ FO_GRPC_PORT: "50051" })).toBe(50051);
    expect(grpcPort({ FO_GRPC_PORT: "OFF" })).toBeUndefined();
  });

  it.each([
    [{ FO_PORT: "http" }, "FO_PORT"],
    [{ FO_PORT: "70000" }, "FO_PORT: must be a port number 0-65535"],
    [{ FO_GRPC_PORT: "grpc" }, "FO_GRPC_PORT: must be a port number 0-65535 or `off`"],
    [{ FO_GRPC_PORT: "65536" }, "FO_GRPC_PORT: must be a port number 0-65535 or `off`"],
    [{ FO_MAX_REQUEST_BYTES: "0" }, "FO_MAX_REQUEST_BYTES: must be a positive number of bytes"],
    [{ FO_LOG_LEVEL: "loud" }, "FO_LOG_LEVEL: must be one of"],
    [{ FO_DRAIN_TIMEOUT: "soon" }, "FO_DRAIN_TIMEOUT"],
  ])("rejects %o with one line naming the variable", (env, expected) => {
    const result = load(env);
    expect(Either.isLeft(result)).toBe(true);
    const message = Either.isLeft(result) ? result.left : "";
    expect(message).toContain(expected);
    expect(message).not.toContain("\n");
  });
});
