// ElasticJob manifests for the operator and chart tests: the fields a test varies, the rest as every such test
// writes it (namespace `default`, one replica type `Worker` whose container is named `worker`).

/** What a test's ElasticJob varies; an optional field is left out of the manifest when not given. */
export interface ElasticJobShape {
  /** Default `127.0.0.1:1`: nothing listens there, for jobs whose workers never rendezvous. */
  readonly rdzvEndpoint?: string;
  readonly minReplicas?: number;
  readonly maxReplicas?: number;
  readonly backoffLimit?: number;
  /** Worker replicas. */
  readonly replicas: number;
  /** The worker container less its name (`worker`): image, command, … */
  readonly container: Record<string, unknown>;
  /** More fields of the workers' pod spec (nodeSelector, …). */
  readonly podSpec?: Record<string, unknown>;
}

/** The ElasticJob object `name` in `namespace` (stringify it for kubectl). */
export function elasticJob(name: string, o: ElasticJobShape, namespace = 'default'): Record<string, unknown> {
  const optional = (key: string, v: number | undefined): Record<string, number> =>
    v === undefined ? {} : { [key]: v };
  return {
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'ElasticJob',
    metadata: { name, namespace },
    spec: {
      rdzvEndpoint: o.rdzvEndpoint ?? '127.0.0.1:1',
      ...optional('minReplicas', o.minReplicas),
      ...optional('maxReplicas', o.maxReplicas),
      ...optional('backoffLimit', o.backoffLimit),
      replicaSpecs: {
        Worker: {
          replicas: o.replicas,
          template: { spec: { ...o.podSpec, containers: [{ name: 'worker', ...o.container }] } },
        },
      },
    },
  };
}
