// Minimal decoder for the Kubernetes protobuf envelope ("k8s\0" + runtime.Unknown), for the few kinds that
// kubectl's typed clients send as protobuf request bodies (`kubectl create namespace|configmap|secret`,
// delete options, `kubectl drain` evictions). Responses are always JSON, which kubectl accepts.
import { badRequest } from './api.js';

type FieldType = 'string' | 'int' | 'bool' | 'bytes64' | 'strmap' | 'bytesmap64' | 'time' | `msg:${string}`;
interface Field {
  name: string;
  type: FieldType;
  repeated?: boolean;
}
type MsgSchema = Record<number, Field>;

const SCHEMAS: Record<string, MsgSchema> = {
  ObjectMeta: {
    1: { name: 'name', type: 'string' },
    2: { name: 'generateName', type: 'string' },
    3: { name: 'namespace', type: 'string' },
    5: { name: 'uid', type: 'string' },
    6: { name: 'resourceVersion', type: 'string' },
    7: { name: 'generation', type: 'int' },
    10: { name: 'deletionGracePeriodSeconds', type: 'int' },
    11: { name: 'labels', type: 'strmap' },
    12: { name: 'annotations', type: 'strmap' },
    13: { name: 'ownerReferences', type: 'msg:OwnerReference', repeated: true },
    14: { name: 'finalizers', type: 'string', repeated: true },
  },
  OwnerReference: {
    1: { name: 'kind', type: 'string' },
    3: { name: 'name', type: 'string' },
    4: { name: 'uid', type: 'string' },
    5: { name: 'apiVersion', type: 'string' },
    6: { name: 'controller', type: 'bool' },
    7: { name: 'blockOwnerDeletion', type: 'bool' },
  },
  Namespace: { 1: { name: 'metadata', type: 'msg:ObjectMeta' }, 2: { name: 'spec', type: 'msg:NamespaceSpec' } },
  NamespaceSpec: { 1: { name: 'finalizers', type: 'string', repeated: true } },
  ConfigMap: {
    1: { name: 'metadata', type: 'msg:ObjectMeta' },
    2: { name: 'data', type: 'strmap' },
    3: { name: 'binaryData', type: 'bytesmap64' },
    4: { name: 'immutable', type: 'bool' },
  },
  Secret: {
    1: { name: 'metadata', type: 'msg:ObjectMeta' },
    2: { name: 'data', type: 'bytesmap64' },
    3: { name: 'type', type: 'string' },
    4: { name: 'stringData', type: 'strmap' },
    5: { name: 'immutable', type: 'bool' },
  },
  Eviction: {
    1: { name: 'metadata', type: 'msg:ObjectMeta' },
    2: { name: 'deleteOptions', type: 'msg:DeleteOptions' },
  },
  DeleteOptions: {
    1: { name: 'gracePeriodSeconds', type: 'int' },
    2: { name: 'preconditions', type: 'msg:Preconditions' },
    4: { name: 'propagationPolicy', type: 'string' },
    5: { name: 'dryRun', type: 'string', repeated: true },
  },
  Preconditions: { 1: { name: 'uid', type: 'string' }, 2: { name: 'resourceVersion', type: 'string' } },
  Unknown: { 1: { name: 'typeMeta', type: 'msg:TypeMeta' }, 2: { name: 'raw', type: 'bytes64' } },
  TypeMeta: { 1: { name: 'apiVersion', type: 'string' }, 2: { name: 'kind', type: 'string' } },
  MapEntry: { 1: { name: 'key', type: 'string' }, 2: { name: 'value', type: 'bytes64' } },
};

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.buf.length) throw badRequest('protobuf body is truncated');
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
  }
  bytes(): Buffer {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw badRequest('protobuf body is truncated');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

function decode(buf: Buffer, schemaName: string): Record<string, unknown> {
  const schema = SCHEMAS[schemaName];
  const out: Record<string, unknown> = {};
  const r = new Reader(buf);
  while (r.pos < buf.length) {
    const tag = r.varint();
    const fieldNo = Math.floor(tag / 8);
    const wire = tag & 7;
    let raw: number | Buffer;
    if (wire === 0) raw = r.varint();
    else if (wire === 2) raw = r.bytes();
    else if (wire === 1) {
      raw = buf.subarray(r.pos, r.pos + 8);
      r.pos += 8;
    } else if (wire === 5) {
      raw = buf.subarray(r.pos, r.pos + 4);
      r.pos += 4;
    } else throw badRequest(`unsupported protobuf wire type ${wire}`);
    const f = schema[fieldNo];
    if (!f) continue;
    let v: unknown;
    if (f.type === 'string') v = (raw as Buffer).toString('utf8');
    else if (f.type === 'int') v = raw as number;
    else if (f.type === 'bool') v = raw === 1;
    else if (f.type === 'bytes64') v = (raw as Buffer).toString('base64');
    else if (f.type === 'strmap' || f.type === 'bytesmap64') {
      const e = decode(raw as Buffer, 'MapEntry');
      const val = Buffer.from(String(e.value ?? ''), 'base64');
      const m = (out[f.name] ?? {}) as Record<string, string>;
      m[String(e.key ?? '')] = f.type === 'strmap' ? val.toString('utf8') : val.toString('base64');
      out[f.name] = m;
      continue;
    } else if (f.type.startsWith('msg:')) v = decode(raw as Buffer, f.type.slice(4));
    if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(v);
    else out[f.name] = v;
  }
  return out;
}

export const PROTOBUF_MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

/** Decodes a protobuf-encoded request body into the JSON object it stands for; 415 for kinds it does not know. */
export function decodeK8sProtobuf(buf: Buffer): Record<string, unknown> {
  if (!buf.subarray(0, 4).equals(PROTOBUF_MAGIC)) throw badRequest('protobuf body lacks the k8s envelope');
  const unknown = decode(buf.subarray(4), 'Unknown');
  const tm = (unknown.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
  const kind = tm.kind ?? '';
  if (!SCHEMAS[kind] || ['Unknown', 'TypeMeta', 'MapEntry', 'ObjectMeta'].includes(kind))
    throw badRequest(`protobuf bodies of kind "${kind}" are not supported by the test API server; send JSON`);
  const obj = decode(Buffer.from(String(unknown.raw ?? ''), 'base64'), kind);
  return { apiVersion: tm.apiVersion, kind, ...obj };
}
