// Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm; @kubernetes/client-node has none).
//
// - Expiry is judged by the LOCAL clock from when this replica last saw the lease record change, never by
//   comparing the holder's renewTime with our clock (clocks of different machines disagree).
// - Every write carries the resourceVersion it read, so two candidates cannot both win: the second gets 409.
// - The leader renews every retryPeriodMs; if it cannot renew for renewDeadlineMs it steps down
//   (`onStoppedLeading`) before the lease can expire for the others (renewDeadline < leaseDuration).
// - `stop()` releases the lease (empty holder, 1 s duration) so a standby takes over at once.
import type { V1Lease } from '@kubernetes/client-node';
import type { KubeClient, Logger } from '../api.js';
import { ApiConflictError, noopLogger } from '../api.js';

export interface LeaseRecord {
  readonly holderIdentity: string;
  readonly leaseDurationSeconds: number;
  readonly renewTime: string;
  readonly leaseTransitions: number;
}

export interface Observation {
  /** The record as last read, and the local time it was first seen in that form. */
  readonly record: LeaseRecord;
  readonly observedAtMs: number;
}

export type LeaseDecision = 'create' | 'acquire' | 'renew' | 'wait';

/** Pure: what to do with a lease given what was observed and the local clock. */
export function decideLease(observation: Observation | undefined, identity: string, nowMs: number): LeaseDecision {
  if (observation === undefined) return 'create';
  const { record, observedAtMs } = observation;
  if (record.holderIdentity === identity) return 'renew';
  const expired = record.holderIdentity === '' || observedAtMs + record.leaseDurationSeconds * 1000 <= nowMs;
  return expired ? 'acquire' : 'wait';
}

/** RFC 3339 with microseconds, the MicroTime format the API server parses for Lease times. */
function microTime(d: Date): Date {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date;
}

export interface LeaderElectorOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  readonly logger?: Logger;
  readonly onStartedLeading: () => void;
  readonly onStoppedLeading: () => void;
}

function recordOf(lease: V1Lease): LeaseRecord {
  const s = lease.spec ?? {};
  const renew = s.renewTime as unknown;
  return {
    holderIdentity: s.holderIdentity ?? '',
    leaseDurationSeconds: s.leaseDurationSeconds ?? 15,
    renewTime: renew instanceof Date ? renew.toISOString() : String(renew ?? ''),
    leaseTransitions: s.leaseTransitions ?? 0,
  };
}

function sameRecord(a: LeaseRecord, b: LeaseRecord): boolean {
  return (
    a.holderIdentity === b.holderIdentity && a.renewTime === b.renewTime && a.leaseTransitions === b.leaseTransitions
  );
}

export class LeaderElector {
  private observation: Observation | undefined;
  private lease: V1Lease | undefined;
  private leading = false;
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private readonly o: Required<Omit<LeaderElectorOptions, 'logger'>> & { logger: Logger };

  constructor(opts: LeaderElectorOptions) {
    this.o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      ...opts,
      logger: opts.logger ?? noopLogger,
    };
    if (this.o.renewDeadlineMs >= this.o.leaseDurationMs) {
      throw new RangeError(
        `renewDeadlineMs (${this.o.renewDeadlineMs}) must be < leaseDurationMs (${this.o.leaseDurationMs})`,
      );
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts campaigning in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; releases the lease when held. Resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    if (this.leading) {
      this.leading = false;
      await this.release();
      this.o.onStoppedLeading();
    }
  }

  private async run(): Promise<void> {
    let lastRenewMs = Date.now();
    while (!this.stopped) {
      const ok = await this.tryAcquireOrRenew();
      const now = Date.now();
      if (ok) {
        lastRenewMs = now;
        if (!this.leading) {
          this.leading = true;
          this.o.logger.info({ lease: this.o.name, identity: this.o.identity }, 'became leader');
          this.o.onStartedLeading();
        }
      } else if (this.leading && now - lastRenewMs >= this.o.renewDeadlineMs) {
        this.leading = false;
        this.o.logger.warn({ lease: this.o.name }, 'lost leadership: could not renew within renewDeadline');
        this.o.onStoppedLeading();
      }
      // Leaders renew on the period; candidates add jitter so they do not stampede the API server together.
      const delay = this.leading ? this.o.retryPeriodMs : this.o.retryPeriodMs * (1 + Math.random() * 0.2);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { client, namespace, name, identity } = this.o;
    const now = microTime(new Date());
    try {
      const current = await client.readLease(namespace, name);
      if (current !== undefined) {
        const rec = recordOf(current);
        if (this.observation === undefined || !sameRecord(this.observation.record, rec)) {
          this.observation = { record: rec, observedAtMs: Date.now() };
        }
        this.lease = current;
      } else {
        this.observation = undefined;
        this.lease = undefined;
      }
      const decision = decideLease(this.observation, identity, Date.now());
      if (decision === 'wait') return false;
      const durationSeconds = Math.ceil(this.o.leaseDurationMs / 1000);
      if (decision === 'create') {
        const created = await client.createLease(namespace, {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: durationSeconds,
            acquireTime: now,
            renewTime: now,
            leaseTransitions: 0,
          },
        });
        this.remember(created);
        return true;
      }
      const old = this.lease!;
      const rec = this.observation!.record;
      const spec = {
        ...old.spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: now,
        ...(decision === 'acquire' ? { acquireTime: now, leaseTransitions: rec.leaseTransitions + 1 } : {}),
      };
      // Fencing: the body carries the resourceVersion we read; a concurrent writer makes this a 409.
      const updated = await client.replaceLease(namespace, name, { ...old, spec });
      this.remember(updated);
      return true;
    } catch (err) {
      if (!(err instanceof ApiConflictError)) {
        this.o.logger.warn({ err: (err as Error).message, lease: name }, 'lease read/write failed');
      }
      return false;
    }
  }

  private remember(lease: V1Lease): void {
    this.lease = lease;
    this.observation = { record: recordOf(lease), observedAtMs: Date.now() };
  }

  private async release(): Promise<void> {
    const lease = this.lease;
    if (lease === undefined) return;
    try {
      await this.o.client.replaceLease(this.o.namespace, this.o.name, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
      });
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, 'could not release the lease');
    }
  }
}
