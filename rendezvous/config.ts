// Rendezvous defaults and the parsing of torchrun's `--rdzv-conf` keys: the one place both live.
import { z } from 'zod';
import { type BackendOptions, type RendezvousConfig, RendezvousConfigError } from './api.js';

/**
 * Defaults, in milliseconds. They follow torchrun's dynamic rendezvous except where tensile's goals differ:
 * - lastCallTimeoutMs is 1 s (torchrun: 30 s), so a `min < max` job is not held 30 s when fewer than max show up;
 * - leaseTtlMs is 2 s (torchrun notices a dead node after 5 s × 3 = 15 s), so a crash is noticed within ≤ 2 s;
 * - readTimeoutMs is 10 s (torchrun: 60 s).
 */
export const RDZV_DEFAULTS = {
  joinTimeoutMs: 600_000,
  lastCallTimeoutMs: 1_000,
  closeTimeoutMs: 30_000,
  leaseTtlMs: 2_000,
  readTimeoutMs: 10_000,
  outageTimeoutMs: 60_000,
  scaleUpPolicy: 'immediate',
} as const satisfies Omit<RendezvousConfig, 'runId' | 'minNodes' | 'maxNodes'>;

/** Keys that set RendezvousConfig fields (values in seconds, as torchrun takes them). */
const TIMEOUT_KEYS = {
  join_timeout: 'joinTimeoutMs',
  last_call_timeout: 'lastCallTimeoutMs',
  close_timeout: 'closeTimeoutMs',
  read_timeout: 'readTimeoutMs',
  heartbeat: 'leaseTtlMs',
  heartbeat_timeout: 'leaseTtlMs',
  lease_ttl: 'leaseTtlMs',
  outage_timeout: 'outageTimeoutMs',
} as const satisfies Record<string, keyof RendezvousConfig>;

/** Keys passed through to the backend (etcd TLS and auth). */
export const BACKEND_CONF_KEYS = ['cacert', 'cert', 'key', 'user', 'password_file', 'password_env'] as const;

/** Keys that are secret: their values never appear in errors or logs. */
export const SECRET_CONF_KEYS: ReadonlySet<string> = new Set(['password']);

const secondsSchema = z
  .string()
  .trim()
  .regex(/^\d+(\.\d+)?$/, 'a non-negative number of seconds')
  .transform((s) => Math.round(Number(s) * 1000));

const runIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,128}$/, 'letters, digits, ".", "_" or "-" (1 to 128 characters)');

/**
 * Builds the rendezvous config and backend options from torchrun-style `--rdzv-conf` key/values.
 * Timeouts are in seconds (fractions allowed: `last_call_timeout=0.5`). Throws RendezvousConfigError naming the
 * bad key and value (secret values are never quoted) and what was expected.
 */
export function parseRdzvConf(
  conf: Readonly<Record<string, string>>,
  base: { runId: string; minNodes: number; maxNodes: number; endpoint?: string },
): { config: RendezvousConfig; backendOptions: BackendOptions } {
  const runId = runIdSchema.safeParse(base.runId);
  if (!runId.success) {
    throw new RendezvousConfigError(
      `rdzv id ${JSON.stringify(base.runId)}: expected ${runId.error.issues[0]?.message}`,
    );
  }
  const { minNodes, maxNodes } = base;
  if (!Number.isInteger(minNodes) || minNodes < 1) {
    throw new RendezvousConfigError(`min nodes (${minNodes}) must be an integer ≥ 1`);
  }
  if (!Number.isInteger(maxNodes) || maxNodes < minNodes) {
    throw new RendezvousConfigError(`nnodes ${minNodes}:${maxNodes}: min (${minNodes}) must be ≤ max (${maxNodes})`);
  }
  const config: { -readonly [K in keyof RendezvousConfig]: RendezvousConfig[K] } = {
    runId: base.runId,
    minNodes,
    maxNodes,
    ...RDZV_DEFAULTS,
  };
  const backendConf: Record<string, string> = {};
  for (const [key, raw] of Object.entries(conf)) {
    if (key in TIMEOUT_KEYS) {
      const field = TIMEOUT_KEYS[key as keyof typeof TIMEOUT_KEYS];
      const parsed = secondsSchema.safeParse(raw);
      if (!parsed.success) {
        throw new RendezvousConfigError(`--rdzv-conf ${key}=${raw}: expected a non-negative number of seconds`);
      }
      const ms = parsed.data;
      if (field === 'leaseTtlMs' && ms < 1000) {
        throw new RendezvousConfigError(`--rdzv-conf ${key}=${raw}: the lease TTL must be ≥ 1 second (etcd's unit)`);
      }
      if ((field === 'joinTimeoutMs' || field === 'readTimeoutMs' || field === 'outageTimeoutMs') && ms <= 0) {
        throw new RendezvousConfigError(`--rdzv-conf ${key}=${raw}: expected a number of seconds > 0`);
      }
      config[field] = ms;
    } else if (key === 'scale_up') {
      if (raw !== 'immediate' && raw !== 'deferred') {
        throw new RendezvousConfigError(`--rdzv-conf scale_up=${raw}: expected "immediate" or "deferred"`);
      }
      config.scaleUpPolicy = raw;
    } else if ((BACKEND_CONF_KEYS as readonly string[]).includes(key)) {
      if (raw.trim() === '') {
        throw new RendezvousConfigError(`--rdzv-conf ${key}: expected a non-empty value`);
      }
      backendConf[key] = raw;
    } else if (key === 'password') {
      throw new RendezvousConfigError(
        '--rdzv-conf password=...: passwords are not accepted on the command line; use password_file=<path> or password_env=<VAR>',
      );
    } else {
      const known = [...Object.keys(TIMEOUT_KEYS), 'scale_up', ...BACKEND_CONF_KEYS].join(', ');
      const shown = SECRET_CONF_KEYS.has(key) ? '<hidden>' : raw;
      throw new RendezvousConfigError(`--rdzv-conf ${key}=${shown}: unknown key; expected one of ${known}`);
    }
  }
  if (backendConf.password_file !== undefined && backendConf.password_env !== undefined) {
    throw new RendezvousConfigError('--rdzv-conf: give password_file or password_env, not both');
  }
  if ((backendConf.password_file !== undefined || backendConf.password_env !== undefined) && !backendConf.user) {
    throw new RendezvousConfigError('--rdzv-conf: a password needs user=<name>');
  }
  if ((backendConf.cert === undefined) !== (backendConf.key === undefined)) {
    throw new RendezvousConfigError(
      '--rdzv-conf: cert and key must be given together (client certificate and its key)',
    );
  }
  return { config, backendOptions: { endpoint: base.endpoint ?? '', conf: backendConf } };
}

/** A copy of backend conf safe to log: secret values replaced. */
export function redactConf(conf: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(conf)) out[k] = SECRET_CONF_KEYS.has(k) ? '<hidden>' : v;
  return out;
}
