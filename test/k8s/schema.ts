/* eslint-disable @typescript-eslint/no-explicit-any -- validates arbitrary JSON against arbitrary OpenAPI schemas */
// Structural OpenAPI v3 schema handling for custom resources: defaulting, pruning of unknown fields and
// validation with the real server's field-named messages. x-kubernetes-validations rules are evaluated
// with the CEL subset in cel.ts (rules using oldSelf, or beyond that subset, are skipped).
import type { StatusCause } from './api.js';
import { CelError, evalCel, parseCel, usesOldSelf } from './cel.js';

export type Schema = Record<string, any>;

const isObj = (v: unknown): v is Record<string, any> => v !== null && typeof v === 'object' && !Array.isArray(v);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v)));

/** Applies `default`s and removes unknown fields in place; returns the (possibly replaced) value. */
export function defaultAndPrune(
  value: any,
  schema: Schema | undefined,
  root = false,
  path = '',
  pruned: string[] = [],
): any {
  if (!schema) return value;
  if (isObj(value)) {
    const props: Record<string, Schema> | undefined = schema.properties;
    if (props) {
      for (const [k, s] of Object.entries(props)) {
        if (value[k] === undefined && s && s.default !== undefined) value[k] = structuredClone(s.default);
      }
    }
    for (const k of Object.keys(value)) {
      if (root && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
      const child = path ? `${path}.${k}` : k;
      if (props && k in props) value[k] = defaultAndPrune(value[k], props[k], false, child, pruned);
      else if (isObj(schema.additionalProperties))
        value[k] = defaultAndPrune(value[k], schema.additionalProperties, false, child, pruned);
      else if (schema['x-kubernetes-preserve-unknown-fields'] || schema.additionalProperties === true) continue;
      else if (props || schema.type === 'object') {
        delete value[k];
        pruned.push(child);
      }
    }
  } else if (Array.isArray(value) && schema.items) {
    return value.map((v, i) => defaultAndPrune(v, schema.items, false, `${path}[${i}]`, pruned));
  }
  return value;
}

/** Validates a value; returns causes with the real server's field paths and messages. */
export function validate(
  value: unknown,
  schema: Schema | undefined,
  path: string,
  out: StatusCause[] = [],
): StatusCause[] {
  if (!schema) return out;
  const inv = (message: string): void => {
    out.push({ reason: 'FieldValueInvalid', field: path, message: `Invalid value: ${show(value)}: ${message}` });
  };
  // Like the real server, a type error shows the type name, not the value.
  const typeErr = (t: string, message: string): void => {
    out.push({ reason: 'FieldValueTypeInvalid', field: path, message: `Invalid value: "${t}": ${message}` });
  };
  if (value === null) {
    if (!schema.nullable && schema.type) typeErr('null', `${path} in body must be of type ${schema.type}: "null"`);
    return out;
  }
  const t = typeOf(value);
  if (schema['x-kubernetes-int-or-string']) {
    if (t !== 'integer' && t !== 'string') typeErr(t, `${path} in body must be of type integer-or-string: "${t}"`);
  } else if (schema.type && schema.type !== t && !(schema.type === 'number' && t === 'integer')) {
    typeErr(t, `${path} in body must be of type ${schema.type}: "${t}"`);
    return out;
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((e: unknown) => JSON.stringify(e) === JSON.stringify(value))) {
    out.push({
      reason: 'FieldValueNotSupported',
      field: path,
      message: `Unsupported value: ${show(value)}: supported values: ${schema.enum.map(show).join(', ')}`,
    });
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined) {
      if (schema.exclusiveMinimum === true ? value <= schema.minimum : value < schema.minimum)
        inv(
          `${path} in body should be greater than ${schema.exclusiveMinimum === true ? '' : 'or equal to '}${schema.minimum}`,
        );
    }
    if (schema.maximum !== undefined) {
      if (schema.exclusiveMaximum === true ? value >= schema.maximum : value > schema.maximum)
        inv(
          `${path} in body should be less than ${schema.exclusiveMaximum === true ? '' : 'or equal to '}${schema.maximum}`,
        );
    }
    if (schema.multipleOf !== undefined && value % schema.multipleOf !== 0)
      inv(`${path} in body should be a multiple of ${schema.multipleOf}`);
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength)
      inv(`${path} in body should be at least ${schema.minLength} chars long`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength)
      out.push({
        reason: 'FieldValueTooLong',
        field: path,
        message: `Too long: may not be more than ${schema.maxLength} bytes`,
      });
    if (schema.pattern !== undefined && !new RegExp(schema.pattern).test(value))
      inv(`${path} in body should match '${schema.pattern}'`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems)
      inv(`${path} in body should have at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems)
      out.push({
        reason: 'FieldValueTooMany',
        field: path,
        message: `Too many: ${value.length}: must have at most ${schema.maxItems} items`,
      });
    if (schema.items) value.forEach((v, i) => validate(v, schema.items, `${path}[${i}]`, out));
  }
  if (isObj(value)) {
    for (const r of schema.required ?? []) {
      if (value[r] === undefined)
        out.push({ reason: 'FieldValueRequired', field: path ? `${path}.${r}` : r, message: 'Required value' });
    }
    const props: Record<string, Schema> = schema.properties ?? {};
    for (const [k, v] of Object.entries(value)) {
      const child = path ? `${path}.${k}` : k;
      if (props[k]) validate(v, props[k], child, out);
      else if (isObj(schema.additionalProperties)) validate(v, schema.additionalProperties, child, out);
    }
    if (schema.minProperties !== undefined && Object.keys(value).length < schema.minProperties)
      inv(`${path} in body should have at least ${schema.minProperties} properties`);
    if (schema.maxProperties !== undefined && Object.keys(value).length > schema.maxProperties)
      inv(`${path} in body should have at most ${schema.maxProperties} properties`);
  }
  checkRules(value, schema, path, out);
  return out;
}

const parsedRules = new Map<string, ReturnType<typeof parseCel> | null>();

function checkRules(value: unknown, schema: Schema, path: string, out: StatusCause[]): void {
  const rules = schema['x-kubernetes-validations'];
  if (!Array.isArray(rules)) return;
  for (const r of rules as Array<Record<string, any>>) {
    if (typeof r?.rule !== 'string') continue;
    if (!parsedRules.has(r.rule)) {
      try {
        parsedRules.set(r.rule, parseCel(r.rule));
      } catch {
        parsedRules.set(r.rule, null);
      }
    }
    const ast = parsedRules.get(r.rule);
    if (!ast || usesOldSelf(ast)) continue;
    let ok: unknown;
    let why: string | undefined;
    try {
      ok = evalCel(ast, { self: value });
    } catch (err) {
      if (!(err instanceof CelError)) throw err;
      why = `${err.message} evaluating rule: ${r.rule}`;
    }
    if (ok === true) continue;
    const rel = typeof r.fieldPath === 'string' ? r.fieldPath : '';
    const field = rel ? (path ? path + rel : rel.replace(/^\./, '')) : path;
    const msg = why ?? (typeof r.message === 'string' ? r.message : `failed rule: ${r.rule}`);
    out.push({
      reason: typeof r.reason === 'string' ? r.reason : 'FieldValueInvalid',
      field,
      message: `Invalid value: "${typeOf(value)}": ${msg}`,
    });
  }
}

/** Validates a whole custom resource (apiVersion/kind/metadata are checked by the server). */
export function validateObject(obj: Record<string, any>, schema: Schema | undefined): StatusCause[] {
  if (!schema) return [];
  const out: StatusCause[] = [];
  for (const r of schema.required ?? []) {
    if (obj[r] === undefined) out.push({ reason: 'FieldValueRequired', field: r, message: 'Required value' });
  }
  for (const [k, s] of Object.entries<Schema>(schema.properties ?? {})) {
    if (k === 'metadata' || k === 'apiVersion' || k === 'kind') continue;
    if (obj[k] !== undefined) validate(obj[k], s, k, out);
  }
  checkRules(obj, schema, '', out);
  return out;
}
