// What happens when this replica wins or loses the leader Lease: a controller is started on winning (retried with
// backoff while it cannot start: API server unreachable, CRD not installed yet) and stopped on losing. Transitions
// run one at a time in order, so a stop never overlaps the start it follows.
import { Backoff } from '../common/backoff.js';
import type { Logger } from './api.js';
import type { ElasticJobController } from './controller/elasticjob-controller.js';
import type { OperatorMetrics } from './controller/metrics.js';

export class LeaderHandover {
  private controller: ElasticJobController | undefined;
  private leading = false;
  private transition: Promise<void> = Promise.resolve();
  private readonly backoff = new Backoff({ initialMs: 500, multiplier: 2, maxMs: 30_000, jitter: 0.2 });

  constructor(
    private readonly newController: () => ElasticJobController,
    private readonly metrics: OperatorMetrics,
    private readonly log: Logger,
  ) {}

  /** Whether a controller runs and its caches are synced. */
  get isSynced(): boolean {
    return this.controller?.isSynced ?? false;
  }

  /** Called when the Lease is won (or at once without leader election). Does not block. */
  startLeading(): void {
    this.leading = true;
    this.metrics.isLeader.set(1);
    this.backoff.reset();
    this.transition = this.transition.then(() => this.startController());
  }

  /** Called when the Lease is lost or released. Does not block; `settled()` waits for the controller to stop. */
  stopLeading(): void {
    this.leading = false;
    this.metrics.isLeader.set(0);
    this.transition = this.transition.then(async () => {
      const c = this.controller;
      this.controller = undefined;
      await c?.stop();
    });
  }

  /** Resolves once every queued transition is done and no controller runs (call after stopLeading). */
  async settled(): Promise<void> {
    await this.transition;
    await this.controller?.stop();
  }

  // The wait between tries is outside `transition`, so stopLeading never waits on it.
  private async startController(): Promise<void> {
    if (!this.leading) return;
    const c = this.newController();
    this.controller = c;
    try {
      await c.start();
    } catch (err) {
      const delayMs = Math.round(this.backoff.next());
      this.log.error({ err: (err as Error).message, retryInMs: delayMs }, 'controller failed to start');
      await c.stop();
      if (this.controller === c) this.controller = undefined;
      setTimeout(() => {
        this.transition = this.transition.then(() => this.startController());
      }, delayMs).unref();
    }
  }
}
