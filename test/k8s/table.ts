// Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which kubectl get uses.
import type { KObject } from './api.js';
import { evalJsonPath } from './jsonpath.js';
import type { PrinterColumn, ResourceDef } from './resources.js';

/** kubectl's short human duration: 45s, 3m12s, 5h, 2d. */
export function age(ts: string | undefined, nowMs = Date.now()): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((nowMs - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

type Cell = string | number | boolean | null;
interface Col {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority?: number;
  cell: (o: KObject) => Cell;
}

const nameCol: Col = { name: 'Name', type: 'string', format: 'name', cell: (o) => o.metadata.name ?? '' };
const ageCol: Col = { name: 'Age', type: 'string', cell: (o) => age(o.metadata.creationTimestamp) };
const rec = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});

function podStatus(o: KObject): string {
  if (o.metadata.deletionTimestamp) return 'Terminating';
  const st = rec(o.status);
  for (const cs of (st.containerStatuses ?? []) as Array<Record<string, unknown>>) {
    const state = rec(cs.state);
    if (state.waiting) return String(rec(state.waiting).reason ?? 'Waiting');
    if (state.terminated && st.phase !== 'Succeeded' && st.phase !== 'Failed')
      return String(rec(state.terminated).reason ?? 'Terminated');
  }
  if (st.phase === 'Succeeded') return 'Completed';
  if (st.phase === 'Failed') {
    const term = ((st.containerStatuses ?? []) as Array<Record<string, unknown>>)
      .map((c) => rec(rec(c.state).terminated).reason)
      .find((r) => r);
    return String(term ?? st.reason ?? 'Error');
  }
  return String(st.phase ?? 'Pending');
}

function builtinColumns(def: ResourceDef): Col[] {
  if (def.group === '' && def.plural === 'pods')
    return [
      nameCol,
      {
        name: 'Ready',
        type: 'string',
        cell: (o) => {
          const cs = (rec(o.status).containerStatuses ?? []) as Array<Record<string, unknown>>;
          const total = ((rec(o.spec).containers ?? []) as unknown[]).length;
          return `${cs.filter((c) => c.ready).length}/${total}`;
        },
      },
      { name: 'Status', type: 'string', cell: podStatus },
      {
        name: 'Restarts',
        type: 'string',
        cell: (o) =>
          String(
            ((rec(o.status).containerStatuses ?? []) as Array<Record<string, unknown>>).reduce(
              (n, c) => n + Number(c.restartCount ?? 0),
              0,
            ),
          ),
      },
      ageCol,
      { name: 'IP', type: 'string', priority: 1, cell: (o) => String(rec(o.status).podIP ?? '<none>') },
      { name: 'Node', type: 'string', priority: 1, cell: (o) => String(rec(o.spec).nodeName ?? '<none>') },
    ];
  if (def.group === '' && def.plural === 'nodes')
    return [
      nameCol,
      {
        name: 'Status',
        type: 'string',
        cell: (o) => {
          const ready = ((rec(o.status).conditions ?? []) as Array<Record<string, unknown>>).find(
            (c) => c.type === 'Ready',
          );
          let s = ready?.status === 'True' ? 'Ready' : 'NotReady';
          if (rec(o.spec).unschedulable) s += ',SchedulingDisabled';
          return s;
        },
      },
      ageCol,
    ];
  if (def.group === '' && def.plural === 'namespaces')
    return [nameCol, { name: 'Status', type: 'string', cell: (o) => String(rec(o.status).phase ?? '') }, ageCol];
  if (def.group === '' && def.plural === 'services')
    return [
      nameCol,
      { name: 'Type', type: 'string', cell: (o) => String(rec(o.spec).type ?? '') },
      { name: 'Cluster-IP', type: 'string', cell: (o) => String(rec(o.spec).clusterIP ?? '<none>') },
      ageCol,
    ];
  if (def.group === 'coordination.k8s.io' && def.plural === 'leases')
    return [nameCol, { name: 'Holder', type: 'string', cell: (o) => String(rec(o.spec).holderIdentity ?? '') }, ageCol];
  if (def.plural === 'customresourcedefinitions')
    return [nameCol, { name: 'Created At', type: 'date', cell: (o) => o.metadata.creationTimestamp ?? '' }];
  return [nameCol, ageCol];
}

function crdColumns(cols: PrinterColumn[] | undefined): Col[] {
  const out: Col[] = [nameCol];
  const list = cols ?? [];
  for (const c of list) {
    out.push({
      name: c.name,
      type: c.type,
      format: c.format,
      description: c.description,
      priority: c.priority,
      cell: (o) => {
        const vals = evalJsonPath(o, c.jsonPath);
        if (vals.length === 0) return null;
        const v = vals.length === 1 ? vals[0] : vals;
        if (c.type === 'date' && typeof v === 'string') return age(v);
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
        return JSON.stringify(v);
      },
    });
  }
  if (!list.some((c) => c.jsonPath === '.metadata.creationTimestamp')) out.push(ageCol);
  return out;
}

/** Renders objects as a meta.k8s.io/v1 Table. includeObject: None | Metadata (default) | Object. */
export function toTable(
  def: ResourceDef,
  version: string,
  objs: KObject[],
  resourceVersion: string,
  includeObject = 'Metadata',
): KObject {
  const cols = def.crd ? crdColumns(def.columns[version]) : builtinColumns(def);
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: cols.map((c) => ({
      name: c.name,
      type: c.type === 'date' ? 'string' : c.type,
      format: c.format ?? '',
      description: c.description ?? '',
      priority: c.priority ?? 0,
    })),
    rows: objs.map((o) => ({
      cells: cols.map((c) => c.cell(o)),
      ...(includeObject === 'None'
        ? {}
        : {
            object:
              includeObject === 'Object'
                ? o
                : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
          }),
    })),
  };
}
