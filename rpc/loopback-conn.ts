// The connection interface the agent sends frames through, and its in-process form for calls to self.

/** One peer's connection as the agent sees it (StreamConn in grpc-transport.ts, or LoopbackConn). */
export interface Conn {
  /** Queues one encoded frame; never blocks, never throws (a closed connection drops it). */
  send(frame: { parts: Buffer[]; bytes: number }): void;
  close(): void;
  readonly isClosed: boolean;
}

/** Delivers frames to this agent itself (calls to self), asynchronously, through the same encode/decode path. */
export class LoopbackConn implements Conn {
  isClosed = false;
  constructor(private readonly deliver: (raw: Buffer) => void) {}
  send(frame: { parts: Buffer[]; bytes: number }): void {
    const raw = Buffer.concat(frame.parts, frame.bytes);
    setImmediate(() => {
      if (!this.isClosed) this.deliver(raw);
    });
  }
  close(): void {
    this.isClosed = true;
  }
}
