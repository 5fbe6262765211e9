// `tensile operator`: runs the ElasticJob controller (in cluster, or with --kubeconfig).

export async function operatorCommand(argv: readonly string[]): Promise<number> {
  const { operatorMain } = await import('../../operator/index.js');
  return operatorMain(argv);
}
