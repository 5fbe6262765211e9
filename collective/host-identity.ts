// The one definition of "the same host" for the collectives: the TCP mesh uses it to choose Unix sockets between
// ranks, the plane choice (net-plane.ts) to choose shared memory, sockets or the hierarchical path.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * What makes two ranks "on one host": the host name and boot id, or TENSILE_HOST_ID when set (tests and benchmarks
 * simulate several hosts on one machine with it; every rank then talks over loopback).
 */
export function hostIdentity(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TENSILE_HOST_ID !== undefined && env.TENSILE_HOST_ID !== '') return `id:${env.TENSILE_HOST_ID}`;
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // not Linux: hostname alone
  }
  return `${hostname()}/${boot}`;
}
