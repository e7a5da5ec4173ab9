/**
 * gRPC server reflection, `grpc.reflection.v1` and `v1alpha`, so grpcurl and
 * `buf curl` work with no local protos. Answers from the descriptors compiled
 * into `gen/`: a file is sent together with everything it imports.
 */
import {
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { ErrorDetailSchema } from "../../gen/floworchestrator/common/v1/error_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflectionRequestSchema as AlphaRequestSchema,
  ServerReflectionResponseSchema as AlphaResponseSchema,
  ServerReflection as ServerReflectionAlpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { type ServedService, served } from "./served.js";

/** gRPC status codes used inside reflection's own error responses. */
const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;

interface Index {
  readonly services: ReadonlyArray<string>;
  readonly files: ReadonlyMap<string, DescFile>;
  /** Fully qualified symbol (message, enum, service, method, extension) → its file. */
  readonly symbols: ReadonlyMap<string, DescFile>;
  /** Extendee type name → extensions of it. */
  readonly extensions: ReadonlyMap<string, ReadonlyArray<{ number: number; file: DescFile }>>;
}

const buildIndex = (
  services: ReadonlyArray<DescService>,
  extraFiles: ReadonlyArray<DescFile>,
): Index => {
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const extensions = new Map<string, Array<{ number: number; file: DescFile }>>();
  const addMessage = (m: DescMessage, file: DescFile) => {
    symbols.set(m.typeName, file);
    for (const n of m.nestedMessages) addMessage(n, file);
    for (const e of m.nestedEnums) symbols.set(e.typeName, file);
  };
  const addFile = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const m of file.messages) addMessage(m, file);
    for (const e of file.enums) symbols.set(e.typeName, file);
    for (const s of file.services) {
      symbols.set(s.typeName, file);
      for (const m of s.methods) symbols.set(`${s.typeName}.${m.name}`, file);
    }
    for (const x of file.extensions) {
      symbols.set(x.typeName, file);
      const list = extensions.get(x.extendee.typeName) ?? [];
      list.push({ number: x.number, file });
      extensions.set(x.extendee.typeName, list);
    }
    for (const dep of file.dependencies) addFile(dep);
  };
  for (const s of services) addFile(s.file);
  for (const f of extraFiles) addFile(f);
  return { services: services.map((s) => s.typeName), files, symbols, extensions };
};

/** The file and, transitively, every file it imports, each once, dependencies first. */
const withDependencies = (file: DescFile): Uint8Array[] => {
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.add(f.proto.name);
    for (const d of f.dependencies) visit(d);
    out.push(toBinary(FileDescriptorProtoSchema, f.proto));
  };
  visit(file);
  return out;
};

type Answer = ServerReflectionResponse["messageResponse"];

const notFound = (what: string): Answer => ({
  case: "errorResponse",
  value: {
    $typeName: "grpc.reflection.v1.ErrorResponse",
    errorCode: NOT_FOUND,
    errorMessage: `${what} not found`,
  },
});

const files = (file: DescFile | undefined, what: string): Answer =>
  file
    ? {
        case: "fileDescriptorResponse",
        value: {
          $typeName: "grpc.reflection.v1.FileDescriptorResponse",
          fileDescriptorProto: withDependencies(file),
        },
      }
    : notFound(what);

const answer = (index: Index, req: ServerReflectionRequest): Answer => {
  const r = req.messageRequest;
  switch (r.case) {
    case "fileByFilename":
      return files(index.files.get(r.value), `file "${r.value}"`);
    case "fileContainingSymbol":
      return files(index.symbols.get(r.value.replace(/^\./, "")), `symbol "${r.value}"`);
    case "fileContainingExtension": {
      const ext = index.extensions
        .get(r.value.containingType)
        ?.find((x) => x.number === r.value.extensionNumber);
      return files(ext?.file, `extension ${r.value.containingType}(${r.value.extensionNumber})`);
    }
    case "allExtensionNumbersOfType":
      if (!index.symbols.has(r.value)) return notFound(`type "${r.value}"`);
      return {
        case: "allExtensionNumbersResponse",
        value: {
          $typeName: "grpc.reflection.v1.ExtensionNumberResponse",
          baseTypeName: r.value,
          extensionNumber: (index.extensions.get(r.value) ?? []).map((x) => x.number),
        },
      };
    case "listServices":
      return {
        case: "listServicesResponse",
        value: {
          $typeName: "grpc.reflection.v1.ListServiceResponse",
          service: index.services.map((name) => ({
            $typeName: "grpc.reflection.v1.ServiceResponse",
            name,
          })),
        },
      };
    default:
      return {
        case: "errorResponse",
        value: {
          $typeName: "grpc.reflection.v1.ErrorResponse",
          errorCode: INVALID_ARGUMENT,
          errorMessage: "empty reflection request",
        },
      };
  }
};

const respond = (index: Index, req: ServerReflectionRequest): ServerReflectionResponse => ({
  $typeName: "grpc.reflection.v1.ServerReflectionResponse",
  validHost: req.host,
  originalRequest: req,
  messageResponse: answer(index, req),
});

/**
 * Registers both reflection services. `services` are those the server serves
 * (the reflection services themselves are added).
 */
export const reflectionServices = (
  services: ReadonlyArray<DescService>,
): ReadonlyArray<ServedService> => {
  // Error details are in no RPC's signature, but clients decode them by name through reflection.
  const index = buildIndex(
    [...services, ServerReflection, ServerReflectionAlpha],
    [ErrorDetailSchema.file, BadRequestSchema.file],
  );
  const v1: ServiceImpl<typeof ServerReflection> = {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield respond(index, req);
    },
  };
  // v1alpha is wire-identical to v1: translate through the binary form.
  const alpha: ServiceImpl<typeof ServerReflectionAlpha> = {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const v1 = fromBinary(ServerReflectionRequestSchema, toBinary(AlphaRequestSchema, req));
        yield fromBinary(
          AlphaResponseSchema,
          toBinary(ServerReflectionResponseSchema, respond(index, v1)),
        );
      }
    },
  };
  return [served(ServerReflection, v1), served(ServerReflectionAlpha, alpha)];
};
