/**
 * Parameter definitions: registering what values a key accepts, reading and
 * listing them. Enforcement lives in `parameter-rules.ts` and is applied by
 * `parameters.ts` on set and on resolve.
 */
import { create } from "@bufbuild/protobuf";
import { Effect, Option } from "effect";
import type {
  DefineParameterRequest,
  GetParameterDefinitionRequest,
  ListParameterDefinitionsRequest,
} from "../../gen/floworchestrator/datastore/v1/datastore_service_pb.js";
import {
  ParameterDataType,
  type ParameterDefinition,
  ParameterDefinitionSchema,
} from "../../gen/floworchestrator/datastore/v1/parameter_pb.js";
import { NotFound } from "../common/errors.js";
import * as V from "../common/validate.js";
import { jsonOf, now, timestamp, toValue, unavailable } from "./common.js";
import { findPage } from "./paging.js";
import {
  checkValue,
  compilePattern,
  dataTypeName,
  keyCheck,
  type StoredDefinition,
} from "./parameter-rules.js";
import type { Collection, Doc, Json, Predicate } from "./store.js";

const toDefinition = (d: Doc): ParameterDefinition =>
  create(ParameterDefinitionSchema, {
    key: d.key as string,
    dataType: ParameterDataType[d.dataType as keyof typeof ParameterDataType],
    required: d.required as boolean,
    ...(d.hasDefault ? { defaultValue: toValue(d.defaultValue as Json) } : {}),
    pattern: d.pattern as string,
    ...(d.minimum === null ? {} : { minimum: d.minimum as number }),
    ...(d.maximum === null ? {} : { maximum: d.maximum as number }),
    allowedValues: (d.allowedValues as Json[]).map(toValue),
    description: d.description as string,
    ...(d.example === null ? {} : { example: toValue(d.example as Json) }),
    minimumVersion: d.minimumVersion as string,
    deprecatedInVersion: d.deprecatedInVersion as string,
    removedInVersion: d.removedInVersion as string,
    dependsOn: d.dependsOn as string[],
    updateTime: timestamp(d.updateTime as number),
  });

export const makeParameterDefinitions = (definitions: Collection) => {
  const defineParameter = (req: DefineParameterRequest) =>
    unavailable(
      Effect.gen(function* () {
        const d = yield* V.required("definition", req.definition);
        const at = "definition.";
        let patternProblem: V.Violations = [];
        if (d.pattern !== "") {
          try {
            compilePattern(d.pattern);
          } catch {
            patternProblem = [
              { field: `${at}pattern`, description: "is not a valid regular expression" },
            ];
          }
        }
        const stored: StoredDefinition & Record<string, Json> = {
          key: d.key,
          dataType: dataTypeName(d.dataType),
          required: d.required,
          defaultValue: jsonOf(d.defaultValue) ?? null,
          hasDefault: jsonOf(d.defaultValue) !== undefined,
          pattern: d.pattern,
          minimum: d.minimum ?? null,
          maximum: d.maximum ?? null,
          allowedValues: d.allowedValues.map((v) => jsonOf(v) ?? null),
          dependsOn: d.dependsOn,
        };
        yield* V.check(
          keyCheck(`${at}key`, d.key),
          d.dataType === ParameterDataType.UNSPECIFIED
            ? [{ field: `${at}data_type`, description: "is required" }]
            : [],
          V.maxLength(`${at}pattern`, d.pattern, 1024),
          patternProblem,
          d.minimum !== undefined && d.maximum !== undefined && d.minimum > d.maximum
            ? [{ field: `${at}minimum`, description: "must not exceed maximum" }]
            : [],
          V.maxItems(`${at}allowed_values`, d.allowedValues, 1000),
          V.maxLength(`${at}description`, d.description, 4096),
          ...(["minimumVersion", "deprecatedInVersion", "removedInVersion"] as const).map((f) =>
            d[f] === ""
              ? []
              : V.semverVersion(`${at}${f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`, d[f]),
          ),
          V.maxItems(`${at}depends_on`, d.dependsOn, 64),
          d.dependsOn.flatMap((k, i) => [
            ...keyCheck(`${at}depends_on[${i}]`, k),
            ...(k === d.key
              ? [{ field: `${at}depends_on[${i}]`, description: "must not be the key itself" }]
              : []),
          ]),
        );
        if (patternProblem.length === 0 && d.dataType !== ParameterDataType.UNSPECIFIED) {
          // The definition must accept its own default and allowed values.
          const own = [
            ...(stored.hasDefault ? [["default_value", stored.defaultValue] as const] : []),
            ...stored.allowedValues.map((v, i) => [`allowed_values[${i}]`, v] as const),
          ];
          yield* V.check(
            own.flatMap(([field, v]) => {
              const p = checkValue(
                { ...stored, allowedValues: field === "default_value" ? stored.allowedValues : [] },
                v,
              );
              return p ? [{ field: `${at}${field}`, description: p.description }] : [];
            }),
          );
        }
        const doc: Doc = {
          _id: d.key,
          ...stored,
          description: d.description,
          example: jsonOf(d.example) ?? null,
          minimumVersion: d.minimumVersion,
          deprecatedInVersion: d.deprecatedInVersion,
          removedInVersion: d.removedInVersion,
          updateTime: yield* now,
        };
        const { _id, ...fields } = doc;
        const updated = yield* definitions.update(_id, fields);
        if (Option.isNone(updated) && !(yield* definitions.insert(doc))) {
          yield* definitions.update(_id, fields); // created concurrently: last write wins
        }
        return { definition: toDefinition(doc) };
      }),
    );

  const getParameterDefinition = (req: GetParameterDefinitionRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(keyCheck("key", req.key));
        const found = yield* definitions.get(req.key);
        if (Option.isNone(found)) {
          return yield* Effect.fail(
            new NotFound({
              message: `parameter "${req.key}" has no definition`,
              metadata: { key: req.key },
            }),
          );
        }
        return { definition: toDefinition(found.value) };
      }),
    );

  const listParameterDefinitions = (req: ListParameterDefinitionsRequest) =>
    unavailable(
      Effect.gen(function* () {
        yield* V.check(req.keyPrefix === "" ? [] : keyCheck("key_prefix", req.keyPrefix));
        const size = yield* V.pageSize(req.pageSize);
        const where: Predicate[] =
          req.keyPrefix === "" ? [] : [{ path: "key", op: "prefix", value: req.keyPrefix }];
        const page = yield* findPage(definitions, { where }, where, size, req.pageToken);
        return { definitions: page.docs.map(toDefinition), nextPageToken: page.nextPageToken };
      }),
    );

  return { defineParameter, getParameterDefinition, listParameterDefinitions };
};
