// In-memory cluster state with Kubernetes semantics: resourceVersion, generation, finalizers,
// graceful pod deletion, status/scale subresources, the watch cache, and the small controllers
// (garbage collector, namespace lifecycle, scheduler, node lifecycle) a real control plane runs.
import { randomUUID } from 'node:crypto';
import {
  alreadyExists,
  ApiError,
  badRequest,
  conflict,
  invalid,
  noopLogger,
  notFound,
  type KObject,
  type Logger,
  type StatusCause,
} from './api.js';
import { evalJsonPath, setDotted } from './jsonpath.js';
import { builtinResources, defFromCrd, resKey, type ResourceDef } from './resources.js';
import { defaultAndPrune, validateObject } from './schema.js';
import type { Matcher } from './selectors.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
export interface WatchEvent {
  type: EventType | 'BOOKMARK' | 'ERROR';
  object: KObject;
}

interface LogEntry {
  rv: number;
  key: string;
  type: EventType;
  obj: KObject;
  old?: KObject;
}

export interface WatchOptions {
  namespace?: string;
  labels?: Matcher;
  fields?: Matcher;
  /** Resume after this resourceVersion; undefined or "0" first sends ADDED for every current object. */
  resourceVersion?: string;
}

export interface Watcher {
  key: string;
  opts: WatchOptions;
  send: (ev: WatchEvent) => void;
}

export interface WriteOptions {
  dryRun?: boolean;
  /** "Strict" rejects unknown fields of custom resources with 400 instead of pruning them. */
  fieldValidation?: string;
}

export interface DeleteOptions extends WriteOptions {
  gracePeriodSeconds?: number;
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  preconditions?: { uid?: string; resourceVersion?: string };
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const TERMINAL = new Set(['Succeeded', 'Failed']);

const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const objKey = (ns: string | undefined, name: string): string => `${ns ?? ''}/${name}`;
const clone = <T>(v: T): T => structuredClone(v);
const randSuffix = (): string => {
  const chars = 'bcdfghjklmnpqrstvwxz2456789';
  let s = '';
  for (let i = 0; i < 5; i++) s += chars[Math.floor(Math.random() * chars.length)];
  return s;
};

function specOf(obj: KObject): string {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = obj;
  return JSON.stringify(rest);
}

export class ApiState {
  readonly defs = new Map<string, ResourceDef>();
  private readonly data = new Map<string, Map<string, KObject>>();
  private readonly uidIndex = new Map<string, { key: string; k: string }>();
  private rv = 0;
  private log: LogEntry[] = [];
  private droppedUpTo = 0;
  private readonly watchers = new Set<Watcher>();
  private clusterIpCounter = 10;
  private controllersPending = false;
  private gcDirty = true;
  private nsDirty = false;
  private schedDirty = true;
  private closed = false;
  /** Called after every committed change; the kubelets and the scheduler hang off this. */
  readonly listeners = new Set<(key: string, type: EventType, obj: KObject, old?: KObject) => void>();

  constructor(
    private readonly opts: {
      watchWindowEvents: number;
      strictNamespaces: boolean;
      scheduler: boolean;
      logger?: Logger;
    },
  ) {
    for (const d of builtinResources()) this.register(d);
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
      this.create(this.def('', 'namespaces'), undefined, { metadata: { name: ns } });
  }

  private get log_(): Logger {
    return this.opts.logger ?? noopLogger;
  }

  currentResourceVersion(): string {
    return String(this.rv);
  }

  register(def: ResourceDef): void {
    const key = resKey(def.group, def.plural);
    this.defs.set(key, def);
    if (!this.data.has(key)) this.data.set(key, new Map());
  }

  def(group: string, plural: string): ResourceDef {
    const d = this.defs.get(resKey(group, plural));
    if (!d) throw notFound(plural, '', group);
    return d;
  }

  /** Finds a resource by group, version and plural (as in a URL); undefined when not served. */
  lookup(group: string, version: string, plural: string): ResourceDef | undefined {
    const d = this.defs.get(resKey(group, plural));
    return d && d.versions.includes(version) ? d : undefined;
  }

  // ---- reads -------------------------------------------------------------------------------------

  get(def: ResourceDef, ns: string | undefined, name: string): KObject {
    const o = this.data.get(resKey(def.group, def.plural))!.get(objKey(def.namespaced ? ns : undefined, name));
    if (!o) throw notFound(def.plural, name, def.group);
    return clone(o);
  }

  tryGet(def: ResourceDef, ns: string | undefined, name: string): KObject | undefined {
    const o = this.data.get(resKey(def.group, def.plural))!.get(objKey(def.namespaced ? ns : undefined, name));
    return o ? clone(o) : undefined;
  }

  list(def: ResourceDef, ns?: string, labels?: Matcher, fields?: Matcher): KObject[] {
    const out: KObject[] = [];
    for (const o of this.data.get(resKey(def.group, def.plural))!.values()) {
      if (ns !== undefined && def.namespaced && o.metadata.namespace !== ns) continue;
      if (labels && !labels(o)) continue;
      if (fields && !fields(o)) continue;
      out.push(clone(o));
    }
    const key = (o: KObject): string => objKey(o.metadata.namespace, o.metadata.name!);
    return out.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  }

  // ---- watch -------------------------------------------------------------------------------------

  /** Registers a watcher; returns the unsubscribe function. Throws 410 via an ERROR event for expired versions. */
  watch(def: ResourceDef, opts: WatchOptions, send: (ev: WatchEvent) => void): () => void {
    const key = resKey(def.group, def.plural);
    const w: Watcher = { key, opts, send };
    const rvStr = opts.resourceVersion;
    if (rvStr === undefined || rvStr === '' || rvStr === '0') {
      for (const o of this.list(def, opts.namespace, opts.labels, opts.fields)) send({ type: 'ADDED', object: o });
    } else {
      const from = Number(rvStr);
      if (!Number.isInteger(from) || from < 0) throw badRequest(`invalid resource version "${rvStr}"`);
      if (from < this.droppedUpTo) {
        send({
          type: 'ERROR',
          object: new ApiError(
            410,
            'Expired',
            `too old resource version: ${from} (${this.droppedUpTo + 1})`,
          ).toStatus(),
        });
        return () => {};
      }
      for (const e of this.log) if (e.rv > from && e.key === key) this.deliver(w, e);
    }
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  private deliver(w: Watcher, e: LogEntry): void {
    const { namespace, labels, fields } = w.opts;
    const matches = (o: KObject | undefined): boolean =>
      o !== undefined &&
      (namespace === undefined || o.metadata.namespace === namespace) &&
      (!labels || labels(o)) &&
      (!fields || fields(o));
    const nowIn = matches(e.obj);
    if (e.type === 'DELETED') {
      if (nowIn) w.send({ type: 'DELETED', object: clone(e.obj) });
      return;
    }
    const wasIn = e.type === 'MODIFIED' && matches(e.old);
    if (nowIn && wasIn) w.send({ type: 'MODIFIED', object: clone(e.obj) });
    else if (nowIn) w.send({ type: 'ADDED', object: clone(e.obj) });
    else if (wasIn) w.send({ type: 'DELETED', object: clone(e.obj) });
  }

  private commit(def: ResourceDef, type: EventType, obj: KObject, old?: KObject): KObject {
    const key = resKey(def.group, def.plural);
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    const map = this.data.get(key)!;
    const k = objKey(def.namespaced ? obj.metadata.namespace : undefined, obj.metadata.name!);
    if (type === 'DELETED') {
      map.delete(k);
      this.uidIndex.delete(obj.metadata.uid!);
    } else {
      map.set(k, clone(obj));
      this.uidIndex.set(obj.metadata.uid!, { key, k });
    }
    const entry: LogEntry = { rv: this.rv, key, type, obj: clone(obj), old };
    this.log.push(entry);
    while (this.log.length > this.opts.watchWindowEvents) this.droppedUpTo = this.log.shift()!.rv;
    for (const w of this.watchers)
      if (w.key === key)
        try {
          this.deliver(w, entry);
        } catch (err) {
          this.log_.error({ err }, 'test-apiserver: watcher failed');
        }
    for (const l of this.listeners) {
      try {
        l(key, type, clone(obj), old);
      } catch (err) {
        this.log_.error({ err }, 'test-apiserver: listener failed');
      }
    }
    if (type === 'DELETED' && key === '/nodes') this.onNodeRemoved(obj.metadata.name!);
    if (type === 'DELETED' && key === 'apiextensions.k8s.io/customresourcedefinitions') this.onCrdRemoved(obj);
    // Mark which controllers have work, so that idle passes cost nothing at scale.
    if (
      type === 'DELETED' ||
      obj.metadata.deletionTimestamp ||
      (type === 'ADDED' && obj.metadata.ownerReferences?.length)
    )
      this.gcDirty = true;
    if (key === '/namespaces' && obj.metadata.deletionTimestamp) this.nsDirty = true;
    if (
      key === '/nodes' ||
      (key === '/pods' &&
        (type === 'DELETED' ||
          !(obj.spec as Record<string, unknown> | undefined)?.nodeName ||
          TERMINAL.has(String((obj.status as Record<string, unknown> | undefined)?.phase))))
    )
      this.schedDirty = true;
    this.scheduleControllers();
    return clone(obj);
  }

  // ---- writes ------------------------------------------------------------------------------------

  create(def: ResourceDef, ns: string | undefined, body: unknown, wo: WriteOptions = {}): KObject {
    const obj = this.checkBody(def, body);
    const md = obj.metadata;
    if (def.namespaced) {
      if (md.namespace && ns && md.namespace !== ns)
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      md.namespace = md.namespace || ns || 'default';
      this.checkNamespace(md.namespace);
    } else delete md.namespace;
    if (!md.name) {
      if (typeof md.generateName === 'string' && md.generateName) md.name = md.generateName + randSuffix();
      else
        throw invalid(def.kind, '', def.group, [
          {
            reason: 'FieldValueRequired',
            field: 'metadata.name',
            message: 'Required value: name or generateName is required',
          },
        ]);
    }
    this.checkName(def, md.name);
    if (md.resourceVersion !== undefined && md.resourceVersion !== '')
      throw badRequest(`resourceVersion should not be set on objects to be created (got "${md.resourceVersion}")`);
    if (this.tryGet(def, md.namespace, md.name)) throw alreadyExists(def.plural, md.name, def.group);
    md.uid = randomUUID();
    md.creationTimestamp = now();
    md.generation = 1;
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    delete md.resourceVersion;
    if (def.crd && def.statusSubresource) delete obj.status;
    this.prepareCreate(def, obj, wo);
    if (wo.dryRun) return obj;
    const out = this.commit(def, 'ADDED', obj);
    if (def.plural === 'customresourcedefinitions' && def.group === 'apiextensions.k8s.io') this.registerCrd(out);
    return out;
  }

  /**
   * Replaces an object (sub = '' | 'status'). A stale metadata.resourceVersion answers 409; an update
   * that changes nothing does not bump the resourceVersion.
   */
  update(
    def: ResourceDef,
    ns: string | undefined,
    name: string,
    body: unknown,
    sub = '',
    wo: WriteOptions = {},
  ): KObject {
    const incoming = this.checkBody(def, body);
    const old = this.get(def, ns, name);
    if (incoming.metadata.name && incoming.metadata.name !== name)
      throw badRequest(
        `the name of the object (${incoming.metadata.name}) does not match the name on the URL (${name})`,
      );
    const rv = incoming.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== old.metadata.resourceVersion)
      throw conflict(def.plural, name, def.group);
    let next: KObject;
    if (sub === 'status') {
      next = clone(old);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      next.metadata = {
        ...incoming.metadata,
        name,
        namespace: old.metadata.namespace,
        uid: old.metadata.uid,
        creationTimestamp: old.metadata.creationTimestamp,
        generation: old.metadata.generation,
      };
      if (old.metadata.deletionTimestamp) {
        next.metadata.deletionTimestamp = old.metadata.deletionTimestamp;
        next.metadata.deletionGracePeriodSeconds = old.metadata.deletionGracePeriodSeconds;
      } else {
        delete next.metadata.deletionTimestamp;
        delete next.metadata.deletionGracePeriodSeconds;
      }
      if (!def.namespaced) delete next.metadata.namespace;
      if (def.statusSubresource) {
        if (old.status === undefined) delete next.status;
        else next.status = old.status;
      }
    }
    next.apiVersion = old.apiVersion;
    next.kind = old.kind;
    if (def.crd) this.prepareCustom(def, next, wo);
    if (def.plural === 'pods' && def.group === '' && sub !== 'status') this.checkPodUpdate(old, next);
    if (specOf(next) !== specOf(old)) next.metadata.generation = (old.metadata.generation ?? 1) + 1;
    if (def.plural === 'customresourcedefinitions' && def.group === 'apiextensions.k8s.io') this.checkCrd(next);
    const { resourceVersion: _r1, ...a } = next.metadata;
    const { resourceVersion: _r2, ...b } = old.metadata;
    const unchanged = JSON.stringify({ ...next, metadata: a }) === JSON.stringify({ ...old, metadata: b });
    if (wo.dryRun) return next;
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0 && this.deletionDue(def, next))
      return this.commit(def, 'DELETED', next, old);
    if (unchanged) return old;
    const out = this.commit(def, 'MODIFIED', next, old);
    if (def.plural === 'customresourcedefinitions' && def.group === 'apiextensions.k8s.io') this.registerCrd(out);
    return out;
  }

  /** Deletes an object honouring finalizers, pod grace periods and the propagation policy. */
  delete(def: ResourceDef, ns: string | undefined, name: string, o: DeleteOptions = {}): KObject {
    const old = this.get(def, ns, name);
    const md = old.metadata;
    if (o.preconditions?.uid && o.preconditions.uid !== md.uid)
      throw new ApiError(
        409,
        'Conflict',
        `Precondition failed: UID in precondition: ${o.preconditions.uid}, UID in object meta: ${md.uid}`,
      );
    if (o.preconditions?.resourceVersion && o.preconditions.resourceVersion !== md.resourceVersion)
      throw new ApiError(
        409,
        'Conflict',
        `Precondition failed: ResourceVersion in precondition: ${o.preconditions.resourceVersion}, ResourceVersion in object meta: ${md.resourceVersion}`,
      );
    if (o.dryRun) return old;
    const next = clone(old);
    if (def.group === '' && def.plural === 'pods') {
      const spec = (next.spec ?? {}) as Record<string, unknown>;
      const status = (next.status ?? {}) as Record<string, unknown>;
      let grace = o.gracePeriodSeconds ?? (spec.terminationGracePeriodSeconds as number | undefined) ?? 30;
      if (!spec.nodeName || TERMINAL.has(String(status.phase))) grace = 0;
      if (grace > 0) {
        const prev = md.deletionGracePeriodSeconds;
        if (md.deletionTimestamp && prev !== undefined && prev <= grace) return old;
        next.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
        next.metadata.deletionGracePeriodSeconds = grace;
        return this.commit(def, 'MODIFIED', next, old);
      }
    }
    if (def.group === '' && def.plural === 'namespaces') {
      if (['default', 'kube-system', 'kube-public'].includes(name))
        throw new ApiError(403, 'Forbidden', `namespaces "${name}" is forbidden: this namespace may not be deleted`);
      if (md.deletionTimestamp) return old;
      next.metadata.deletionTimestamp = now();
      next.metadata.deletionGracePeriodSeconds = 0;
      next.status = { phase: 'Terminating' };
      return this.commit(def, 'MODIFIED', next, old);
    }
    const fins = new Set(next.metadata.finalizers ?? []);
    if (!md.deletionTimestamp) {
      if (o.propagationPolicy === 'Foreground' && this.dependentsOf(md.uid!).length > 0) fins.add('foregroundDeletion');
      if (o.propagationPolicy === 'Orphan') fins.add('orphan');
    }
    if (fins.size > 0) {
      next.metadata.finalizers = [...fins];
      if (!next.metadata.deletionTimestamp) {
        next.metadata.deletionTimestamp = now();
        next.metadata.deletionGracePeriodSeconds = 0;
      }
      if (JSON.stringify(next) === JSON.stringify(old)) return old;
      return this.commit(def, 'MODIFIED', next, old);
    }
    next.metadata.deletionTimestamp ??= now();
    next.metadata.deletionGracePeriodSeconds ??= 0;
    return this.commit(def, 'DELETED', next, old);
  }

  private deletionDue(def: ResourceDef, obj: KObject): boolean {
    if (def.group === '' && def.plural === 'namespaces') return false;
    if (def.group === '' && def.plural === 'pods') return obj.metadata.deletionGracePeriodSeconds === 0;
    return true;
  }

  // ---- subresources ------------------------------------------------------------------------------

  getScale(def: ResourceDef, ns: string | undefined, name: string): KObject {
    if (!def.scale) throw notFound(`${def.plural}/scale`, name, def.group);
    const o = this.get(def, ns, name);
    const num = (p: string): number => {
      const v = evalJsonPath(o, p)[0];
      return typeof v === 'number' ? v : 0;
    };
    const sel = def.scale.labelSelectorPath ? evalJsonPath(o, def.scale.labelSelectorPath)[0] : undefined;
    return {
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      metadata: {
        name,
        namespace: o.metadata.namespace,
        uid: o.metadata.uid,
        resourceVersion: o.metadata.resourceVersion,
        creationTimestamp: o.metadata.creationTimestamp,
      },
      spec: { replicas: num(def.scale.specReplicasPath) },
      status: { replicas: num(def.scale.statusReplicasPath), ...(typeof sel === 'string' ? { selector: sel } : {}) },
    };
  }

  updateScale(def: ResourceDef, ns: string | undefined, name: string, scale: unknown, wo: WriteOptions = {}): KObject {
    if (!def.scale) throw notFound(`${def.plural}/scale`, name, def.group);
    const s = scale as KObject;
    const replicas = (s?.spec as Record<string, unknown> | undefined)?.replicas;
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0)
      throw invalid('Scale', name, 'autoscaling', [
        {
          reason: 'FieldValueInvalid',
          field: 'spec.replicas',
          message: `Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0`,
        },
      ]);
    const o = this.get(def, ns, name);
    const rv = s.metadata?.resourceVersion;
    if (rv && rv !== o.metadata.resourceVersion) throw conflict(def.plural, name, def.group);
    setDotted(o, def.scale.specReplicasPath, replicas);
    delete o.metadata.resourceVersion;
    this.update(def, ns, name, o, '', wo);
    return this.getScale(def, ns, name);
  }

  // ---- validation and defaulting -----------------------------------------------------------------

  private checkBody(def: ResourceDef, body: unknown): KObject {
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw badRequest(`expected a ${def.kind} object, got ${Array.isArray(body) ? 'an array' : JSON.stringify(body)}`);
    const obj = clone(body) as KObject;
    if (obj.metadata === undefined) obj.metadata = {};
    if (obj.metadata === null || typeof obj.metadata !== 'object' || Array.isArray(obj.metadata))
      throw badRequest(`metadata of a ${def.kind} must be an object`);
    if (obj.kind !== undefined && obj.kind !== def.kind)
      throw badRequest(
        `the kind of the object (${String(obj.kind)}) does not match the resource ${def.plural} (${def.kind})`,
      );
    const gvs = def.versions.map((v) => (def.group ? `${def.group}/${v}` : v));
    if (obj.apiVersion !== undefined && !gvs.includes(String(obj.apiVersion)))
      throw badRequest(
        `the apiVersion of the object (${String(obj.apiVersion)}) is not served for ${def.plural} (${gvs.join(', ')})`,
      );
    obj.kind = def.kind;
    obj.apiVersion ??= gvs[0];
    for (const f of ['labels', 'annotations'] as const) {
      const m = obj.metadata[f];
      if (m === undefined || m === null) continue;
      if (typeof m !== 'object' || Array.isArray(m) || Object.values(m).some((v) => typeof v !== 'string'))
        throw invalid(def.kind, obj.metadata.name ?? '', def.group, [
          { reason: 'FieldValueInvalid', field: `metadata.${f}`, message: 'Invalid value: must be a map of strings' },
        ]);
    }
    return obj;
  }

  private checkName(def: ResourceDef, name: string): void {
    const re = def.plural === 'namespaces' || def.plural === 'services' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
    if (name.length > 253 || !re.test(name))
      throw invalid(def.kind, name, def.group, [
        {
          reason: 'FieldValueInvalid',
          field: 'metadata.name',
          message: `Invalid value: "${name}": a lowercase RFC 1123 ${re === DNS1123_LABEL ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
        },
      ]);
  }

  private checkNamespace(ns: string): void {
    if (!this.opts.strictNamespaces) return;
    const o = this.tryGet(this.def('', 'namespaces'), undefined, ns);
    if (!o) throw notFound('namespaces', ns);
    if (o.metadata.deletionTimestamp)
      throw new ApiError(
        403,
        'Forbidden',
        `unable to create new content in namespace ${ns} because it is being terminated`,
      );
  }

  private prepareCreate(def: ResourceDef, obj: KObject, wo: WriteOptions): void {
    if (def.crd) return this.prepareCustom(def, obj, wo);
    if (def.group === '' && def.plural === 'pods') return this.preparePod(obj);
    if (def.group === '' && def.plural === 'services') {
      const spec = (obj.spec ??= {}) as Record<string, unknown>;
      spec.type ??= 'ClusterIP';
      spec.sessionAffinity ??= 'None';
      if (spec.clusterIP === undefined && spec.type !== 'ExternalName') {
        const n = this.clusterIpCounter++;
        spec.clusterIP = `10.96.${Math.floor(n / 250)}.${(n % 250) + 1}`;
      }
      if (spec.clusterIP !== undefined) spec.clusterIPs ??= [spec.clusterIP];
      for (const p of (spec.ports ?? []) as Array<Record<string, unknown>>) {
        p.protocol ??= 'TCP';
        p.targetPort ??= p.port;
      }
      obj.status ??= { loadBalancer: {} };
      return;
    }
    if (def.group === '' && def.plural === 'namespaces') {
      obj.metadata.labels = { ...(obj.metadata.labels ?? {}), 'kubernetes.io/metadata.name': obj.metadata.name! };
      obj.spec = { finalizers: ['kubernetes'] };
      obj.status = { phase: 'Active' };
      return;
    }
    if (def.group === 'apiextensions.k8s.io' && def.plural === 'customresourcedefinitions') {
      this.checkCrd(obj);
      const spec = obj.spec as Record<string, unknown>;
      const storage = (spec.versions as Array<Record<string, unknown>>).find((v) => v.storage === true)!;
      obj.status = {
        acceptedNames: spec.names,
        conditions: [
          {
            type: 'NamesAccepted',
            status: 'True',
            reason: 'NoConflicts',
            message: 'no conflicts found',
            lastTransitionTime: now(),
          },
          {
            type: 'Established',
            status: 'True',
            reason: 'InitialNamesAccepted',
            message: 'the initial names have been accepted',
            lastTransitionTime: now(),
          },
        ],
        storedVersions: [storage.name],
      };
    }
  }

  private checkCrd(obj: KObject): void {
    const { def, problems } = defFromCrd(obj);
    if (problems.length > 0)
      throw invalid(
        'CustomResourceDefinition',
        obj.metadata.name ?? '',
        'apiextensions.k8s.io',
        problems.map((p) => ({ reason: 'FieldValueInvalid', ...p })),
      );
    const clash = this.defs.get(resKey(def!.group, def!.plural));
    if (clash && clash.crd !== obj.metadata.name)
      throw invalid('CustomResourceDefinition', obj.metadata.name ?? '', 'apiextensions.k8s.io', [
        {
          reason: 'FieldValueInvalid',
          field: 'spec.names.plural',
          message: `Invalid value: "${def!.plural}": already served`,
        },
      ]);
  }

  private registerCrd(crd: KObject): void {
    const { def } = defFromCrd(crd);
    if (def) this.register(def);
  }

  private prepareCustom(def: ResourceDef, obj: KObject, wo: WriteOptions): void {
    const version = String(obj.apiVersion).split('/')[1] ?? def.versions[0];
    const schema = def.schemas[version];
    if (!schema) return;
    const pruned: string[] = [];
    defaultAndPrune(obj, schema, true, '', pruned);
    if (pruned.length > 0 && wo.fieldValidation === 'Strict')
      throw badRequest(
        `${def.kind} in version "${version}" cannot be handled as a ${def.kind}: strict decoding error: ${pruned.map((p) => `unknown field "${p}"`).join(', ')}`,
      );
    const causes = validateObject(obj as Record<string, unknown>, schema);
    if (causes.length > 0) throw invalid(def.kind, obj.metadata.name ?? '', def.group, causes);
  }

  private preparePod(obj: KObject): void {
    const spec = obj.spec as Record<string, unknown> | undefined;
    const causes: StatusCause[] = [];
    const containers = spec?.containers;
    if (!Array.isArray(containers) || containers.length === 0)
      causes.push({ reason: 'FieldValueRequired', field: 'spec.containers', message: 'Required value' });
    else
      containers.forEach((c: Record<string, unknown>, i) => {
        if (!c || typeof c.name !== 'string' || !c.name)
          causes.push({ reason: 'FieldValueRequired', field: `spec.containers[${i}].name`, message: 'Required value' });
        if (!c || typeof c.image !== 'string' || !c.image)
          causes.push({
            reason: 'FieldValueRequired',
            field: `spec.containers[${i}].image`,
            message: 'Required value',
          });
      });
    const rp = spec?.restartPolicy;
    if (rp !== undefined && !['Always', 'OnFailure', 'Never'].includes(String(rp)))
      causes.push({
        reason: 'FieldValueNotSupported',
        field: 'spec.restartPolicy',
        message: `Unsupported value: ${JSON.stringify(rp)}: supported values: "Always", "OnFailure", "Never"`,
      });
    if (causes.length > 0) throw invalid('Pod', obj.metadata.name ?? '', '', causes);
    spec!.restartPolicy ??= 'Always';
    spec!.terminationGracePeriodSeconds ??= 30;
    spec!.schedulerName ??= 'default-scheduler';
    spec!.dnsPolicy ??= 'ClusterFirst';
    const conditions = spec!.nodeName ? [{ type: 'PodScheduled', status: 'True', lastTransitionTime: now() }] : [];
    obj.status = { phase: 'Pending', qosClass: 'BestEffort', conditions };
  }

  private checkPodUpdate(old: KObject, next: KObject): void {
    const a = old.spec as Record<string, unknown>;
    const b = (next.spec ?? {}) as Record<string, unknown>;
    const strip = (s: Record<string, unknown>): string => {
      const { activeDeadlineSeconds: _a, tolerations: _t, containers, ...rest } = s;
      const imgless = (containers as Array<Record<string, unknown>> | undefined)?.map(({ image: _i, ...c }) => c);
      return JSON.stringify({ ...rest, containers: imgless });
    };
    if (strip(a) !== strip(b))
      throw invalid('Pod', old.metadata.name!, '', [
        {
          reason: 'FieldValueForbidden',
          field: 'spec',
          message:
            'Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations`',
        },
      ]);
  }

  // ---- owners and controllers --------------------------------------------------------------------

  private dependentsOf(uid: string): Array<{ def: ResourceDef; obj: KObject }> {
    const out: Array<{ def: ResourceDef; obj: KObject }> = [];
    for (const [key, map] of this.data) {
      const def = this.defs.get(key);
      if (!def) continue;
      for (const o of map.values())
        if ((o.metadata.ownerReferences ?? []).some((r) => r.uid === uid)) out.push({ def, obj: o });
    }
    return out;
  }

  private scheduleControllers(): void {
    if (this.controllersPending || this.closed) return;
    this.controllersPending = true;
    setImmediate(() => {
      this.controllersPending = false;
      this.runControllers();
    });
  }

  /** One pass of garbage collection, namespace cleanup and scheduling. Safe to call any time. */
  runControllers(): void {
    if (this.closed) return;
    try {
      if (this.gcDirty) {
        this.gcDirty = false;
        this.gcPass();
      }
      if (this.nsDirty) {
        this.nsDirty = false;
        this.namespacePass();
      }
      if (this.opts.scheduler && this.schedDirty) {
        this.schedDirty = false;
        this.schedulePass();
      }
    } catch (err) {
      this.log_.error({ err }, 'test-apiserver: controller pass failed');
    }
  }

  private safe(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof ApiError && (err.httpStatus === 404 || err.httpStatus === 409))) throw err;
    }
  }

  private gcPass(): void {
    for (const [key, map] of this.data) {
      const def = this.defs.get(key);
      if (!def) continue;
      for (const k of [...map.keys()]) {
        // Re-read: earlier steps of this pass may have changed or removed it.
        const o = map.get(k);
        if (!o) continue;
        const md = o.metadata;
        const refs = md.ownerReferences ?? [];
        if (refs.length > 0 && !md.deletionTimestamp && refs.every((r) => !this.uidIndex.has(r.uid)))
          this.safe(() => this.delete(def, md.namespace, md.name!, { propagationPolicy: 'Background' }));
        if (!md.deletionTimestamp) continue;
        if (key === '/pods' && md.deletionGracePeriodSeconds !== 0) {
          // Pod GC: a terminating pod bound to a node that does not exist has no kubelet to finish it.
          const node = (o.spec as Record<string, unknown> | undefined)?.nodeName;
          if (typeof node === 'string' && !this.data.get('/nodes')!.has(objKey(undefined, node)))
            this.safe(() => this.forceDeletePod(md.namespace!, md.name!));
          continue;
        }
        const fins = md.finalizers ?? [];
        if (fins.includes('orphan')) {
          for (const d of this.dependentsOf(md.uid!)) {
            const c = clone(d.obj);
            c.metadata.ownerReferences = (c.metadata.ownerReferences ?? []).filter((r) => r.uid !== md.uid);
            this.safe(() => this.update(d.def, c.metadata.namespace, c.metadata.name!, c));
          }
          this.removeFinalizer(def, o, 'orphan');
        } else if (fins.includes('foregroundDeletion')) {
          const deps = this.dependentsOf(md.uid!);
          for (const d of deps)
            if (!d.obj.metadata.deletionTimestamp)
              this.safe(() =>
                this.delete(d.def, d.obj.metadata.namespace, d.obj.metadata.name!, { propagationPolicy: 'Foreground' }),
              );
          if (deps.length === 0) this.removeFinalizer(def, o, 'foregroundDeletion');
        }
      }
    }
  }

  private removeFinalizer(def: ResourceDef, o: KObject, fin: string): void {
    const c = this.tryGet(def, o.metadata.namespace, o.metadata.name!);
    if (!c) return;
    c.metadata.finalizers = (c.metadata.finalizers ?? []).filter((f) => f !== fin);
    this.safe(() => this.update(def, c.metadata.namespace, c.metadata.name!, c));
  }

  private namespacePass(): void {
    const nsDef = this.def('', 'namespaces');
    for (const ns of this.list(nsDef)) {
      if (!ns.metadata.deletionTimestamp) continue;
      let left = 0;
      for (const def of this.defs.values()) {
        if (!def.namespaced) continue;
        for (const o of this.list(def, ns.metadata.name)) {
          left++;
          if (!o.metadata.deletionTimestamp || def.plural === 'pods')
            this.safe(() => this.delete(def, ns.metadata.name, o.metadata.name!, {}));
        }
      }
      if (left === 0) this.commit(nsDef, 'DELETED', ns, ns);
      else this.nsDirty = true; // look again on the next periodic pass
    }
  }

  /** Removes a pod for good (kubelet after termination, pod GC): no grace period, finalizers kept. */
  forceDeletePod(ns: string, name: string): void {
    const def = this.def('', 'pods');
    const o = this.tryGet(def, ns, name);
    if (!o) return;
    const next = clone(o);
    next.metadata.deletionTimestamp ??= now();
    next.metadata.deletionGracePeriodSeconds = 0;
    if ((next.metadata.finalizers ?? []).length > 0) {
      if (JSON.stringify(next) !== JSON.stringify(o)) this.commit(def, 'MODIFIED', next, o);
      return;
    }
    this.commit(def, 'DELETED', next, o);
  }

  /** Adds or replaces a pod condition (status only). */
  setPodCondition(ns: string, name: string, cond: Record<string, unknown>): void {
    const def = this.def('', 'pods');
    const o = this.tryGet(def, ns, name);
    if (!o) return;
    const status = (o.status ??= {}) as Record<string, unknown>;
    const conds = ((status.conditions ?? []) as Array<Record<string, unknown>>).filter((c) => c.type !== cond.type);
    conds.push({ lastTransitionTime: now(), ...cond });
    status.conditions = conds;
    this.safe(() => this.update(def, ns, name, o, 'status'));
  }

  /** Node lifecycle: pods bound to a node that went away get DisruptionTarget and are removed. */
  evictPodsOfNode(nodeName: string, reason: string, message: string): void {
    const def = this.def('', 'pods');
    for (const p of this.list(def)) {
      if ((p.spec as Record<string, unknown> | undefined)?.nodeName !== nodeName) continue;
      this.setPodCondition(p.metadata.namespace!, p.metadata.name!, {
        type: 'DisruptionTarget',
        status: 'True',
        reason,
        message,
      });
      this.forceDeletePod(p.metadata.namespace!, p.metadata.name!);
    }
  }

  private schedulePass(): void {
    const podDef = this.def('', 'pods');
    const nodes = this.list(this.def('', 'nodes')).filter((n) => {
      const conds = ((n.status as Record<string, unknown> | undefined)?.conditions ?? []) as Array<
        Record<string, unknown>
      >;
      const spec = (n.spec ?? {}) as Record<string, unknown>;
      return (
        !n.metadata.deletionTimestamp &&
        !spec.unschedulable &&
        conds.some((c) => c.type === 'Ready' && c.status === 'True')
      );
    });
    // Walk the stored pods without copying (this runs after pod writes; 10,000 pods must stay cheap).
    const raw = [...this.data.get(resKey('', 'pods'))!.values()];
    const load = new Map<string, number>();
    const unbound: KObject[] = [];
    for (const p of raw) {
      const nn = (p.spec as Record<string, unknown>).nodeName as string | undefined;
      const phase = (p.status as Record<string, unknown> | undefined)?.phase;
      if (nn && !TERMINAL.has(String(phase))) load.set(nn, (load.get(nn) ?? 0) + 1);
      if (!nn && !p.metadata.deletionTimestamp) unbound.push(p);
    }
    // Map order is creation order, so older pods are scheduled first.
    const unschedulableMsg = `0/${nodes.length} nodes are available`;
    for (const stored of unbound) {
      const spec = stored.spec as Record<string, unknown>;
      if (spec.schedulerName !== undefined && spec.schedulerName !== 'default-scheduler') continue;
      const fits = nodes.filter((n) => {
        const cap = Number(
          ((n.status as Record<string, unknown>).allocatable as Record<string, unknown> | undefined)?.pods ?? 110,
        );
        return (load.get(n.metadata.name!) ?? 0) < cap && nodeSelectorMatches(spec, n) && toleratesTaints(spec, n);
      });
      if (fits.length === 0) {
        const storedConds = ((stored.status as Record<string, unknown> | undefined)?.conditions ?? []) as Array<
          Record<string, unknown>
        >;
        if (storedConds.find((c) => c.type === 'PodScheduled')?.message === unschedulableMsg) continue;
        const p = clone(stored);
        const status = (p.status ?? {}) as Record<string, unknown>;
        const conds = ((status.conditions ?? []) as Array<Record<string, unknown>>).filter(
          (c) => c.type !== 'PodScheduled',
        );
        status.conditions = [
          ...conds,
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: unschedulableMsg,
            lastTransitionTime: now(),
          },
        ];
        p.status = status;
        delete p.metadata.resourceVersion;
        this.safe(() => this.update(podDef, p.metadata.namespace, p.metadata.name!, p, 'status'));
        continue;
      }
      fits.sort((a, b) => (load.get(a.metadata.name!) ?? 0) - (load.get(b.metadata.name!) ?? 0));
      const node = fits[0].metadata.name!;
      load.set(node, (load.get(node) ?? 0) + 1);
      this.safe(() => this.bindPod(stored.metadata.namespace!, stored.metadata.name!, node));
    }
  }

  /** The binding subresource: sets spec.nodeName once. */
  bindPod(ns: string, name: string, node: string): void {
    const def = this.def('', 'pods');
    const old = this.get(def, ns, name);
    const spec = old.spec as Record<string, unknown>;
    if (spec.nodeName) throw conflict('pods/binding', name);
    const next = clone(old);
    (next.spec as Record<string, unknown>).nodeName = node;
    const status = (next.status ?? {}) as Record<string, unknown>;
    status.conditions = [
      ...((status.conditions ?? []) as Array<Record<string, unknown>>).filter((c) => c.type !== 'PodScheduled'),
      { type: 'PodScheduled', status: 'True', lastTransitionTime: now() },
    ];
    next.status = status;
    this.commit(def, 'MODIFIED', next, old);
  }

  /** Called after a node object is removed: the node lifecycle and pod GC controllers' work. */
  onNodeRemoved(name: string): void {
    this.evictPodsOfNode(name, 'DeletionByPodGC', `PodGC: node ${name} no longer exists`);
  }

  /** Deletes everything a removed CRD served. */
  onCrdRemoved(crd: KObject): void {
    const { def } = defFromCrd(crd);
    if (!def) return;
    const key = resKey(def.group, def.plural);
    const cur = this.defs.get(key);
    if (!cur || cur.crd !== crd.metadata.name) return;
    for (const o of this.list(cur)) this.commit(cur, 'DELETED', o, o);
    this.defs.delete(key);
    this.data.delete(key);
  }

  close(): void {
    this.closed = true;
    this.watchers.clear();
    this.listeners.clear();
  }
}

function nodeSelectorMatches(spec: Record<string, unknown>, node: KObject): boolean {
  const sel = (spec.nodeSelector ?? {}) as Record<string, string>;
  const labels = node.metadata.labels ?? {};
  return Object.entries(sel).every(([k, v]) => labels[k] === v);
}

function toleratesTaints(spec: Record<string, unknown>, node: KObject): boolean {
  const taints = (((node.spec ?? {}) as Record<string, unknown>).taints ?? []) as Array<Record<string, string>>;
  const tols = (spec.tolerations ?? []) as Array<Record<string, string>>;
  return taints
    .filter((t) => t.effect === 'NoSchedule' || t.effect === 'NoExecute')
    .every((t) =>
      tols.some(
        (tol) =>
          (!tol.effect || tol.effect === t.effect) &&
          (tol.operator === 'Exists'
            ? !tol.key || tol.key === t.key
            : tol.key === t.key && (tol.value ?? '') === (t.value ?? '')),
      ),
    );
}
