// The RPC world as this worker knows it: every member's name, rank, address and connection. Filled once by the
// bootstrap (rpc/bootstrap.ts); a peer whose stream closed stays in the table marked lost (no reconnection: a
// new world is a new initRpc).

import { RpcError, type WorkerInfo, type WorkerRef } from './api.js';
import type { Conn } from './loopback-conn.js';

/** A member of the world, as exchanged at bootstrap. */
export interface Member {
  readonly name: string;
  readonly rank: number;
  readonly addr: string;
  readonly port: number;
}

export interface Peer extends Member {
  conn: Conn | null;
  lost: boolean;
}

export class WorkerTable {
  private readonly peers = new Map<number, Peer>();
  private readonly byName = new Map<string, number>();

  constructor(readonly worldSize: number) {}

  /** Fills the table with the bootstrap's member list (no connections yet). */
  set(members: readonly Member[]): void {
    for (const m of members) {
      this.peers.set(m.rank, { ...m, conn: null, lost: false });
      this.byName.set(m.name, m.rank);
    }
  }

  get(rank: number): Peer | undefined {
    return this.peers.get(rank);
  }

  has(rank: number): boolean {
    return this.peers.has(rank);
  }

  /** Every member, in insertion (rank) order. */
  all(): IterableIterator<[number, Peer]> {
    return this.peers.entries();
  }

  /** The rank of a worker named by rank, name or WorkerInfo; UNKNOWN_WORKER names the known ones. */
  resolve(worker: WorkerRef): number {
    if (typeof worker === 'number') {
      if (!this.peers.has(worker)) {
        throw new RpcError('UNKNOWN_WORKER', `rank ${worker} is not in the RPC world (ranks 0..${this.worldSize - 1})`);
      }
      return worker;
    }
    const name = typeof worker === 'string' ? worker : worker.name;
    const r = this.byName.get(name);
    if (r === undefined) {
      throw new RpcError(
        'UNKNOWN_WORKER',
        `worker '${name}' is not in the RPC world (workers: ${[...this.byName.keys()].join(', ')})`,
      );
    }
    return r;
  }

  name(rank: number): string {
    return this.peers.get(rank)?.name ?? `rank${rank}`;
  }

  /** True for a peer whose stream closed, and for ranks not (yet) in the table. */
  isLost(rank: number): boolean {
    return this.peers.get(rank)?.lost ?? true;
  }

  info(rank: number): WorkerInfo {
    return { name: this.peers.get(rank)!.name, id: rank };
  }

  infos(): WorkerInfo[] {
    return [...this.peers.values()].sort((a, b) => a.rank - b.rank).map((p) => ({ name: p.name, id: p.rank }));
  }

  /** Members with a connection bound (this worker's own loopback counts). */
  connectedCount(): number {
    let n = 0;
    for (const p of this.peers.values()) if (p.conn) n++;
    return n;
  }

  /** Marks every peer lost and closes its connection (teardown). */
  closeAll(): void {
    for (const p of this.peers.values()) {
      p.lost = true;
      p.conn?.close();
    }
  }
}
