// The control channel between an agent and each of its workers (live recovery, hang watchdog, goodput).
//
// Transport: a Unix stream socket whose path the agent gives each worker in TENSILE_CONTROL. Framing: one JSON
// object per line (UTF-8, '\n'-terminated), at most MAX_CONTROL_LINE_BYTES per line. A worker that never connects,
// or whose first message is not a valid `hello` with `live: true`, is a non-live worker and is handled by the
// restart path (stop the whole group, start it again, reload the newest checkpoint).
//
// Conversation:
//   worker → agent   hello       first message, once: protocol version, local rank, pid, whether it can recover live
//   agent  → worker  welcome     reply to a valid hello: how often to send heartbeats
//   worker → agent   heartbeat   at step boundaries (throttled by the worker to heartbeatIntervalMs): step number
//   agent  → worker  round       a new round: abort pending collectives (ABORTED), discard the interrupted step,
//                                build a process group for this round from the fields here, agree on state with the
//                                peers (ranks without state receive it from a rank that has it), then continue
//   worker → agent   ready       the worker runs in `round` (its group is built and it holds the state of `step`)
//   agent  → worker  dump        write diagnostics (stacks) into `dir` now; the agent kills the worker afterwards
//   either           error       a protocol error, said once before the sender closes the connection
//
//   worker → agent   peer-lost   optional: a collective failed because a peer's connection broke (PEER_LOST); the
//                                agent probes its peer agents at once instead of waiting for a lease to expire
//
// Every decode failure is a ControlProtocolError naming the bad field or the byte count; the receiver closes that
// one connection and treats the worker as non-live. Nothing here does I/O.
//
// What the agent guarantees (agent/control-server.ts, agent/agent.ts; agreed with the worker side):
// - One socket per worker, created before the worker starts, in a private temporary directory of the agent (short
//   paths: Unix socket paths are limited to 107 bytes), removed when the agent exits. A restarted worker gets the
//   same path; its hello replaces the previous connection of that local rank.
// - TENSILE_RECOVERY=live: the agent announces round changes to live workers. TENSILE_RECOVERY=restart: it never
//   sends `round`; a worker that says live is handled by the restart path (heartbeats still feed the watchdog).
// - A worker started (or restarted alone) in round r takes round r from its environment (RANK, WORLD_SIZE,
//   MASTER_ADDR, MASTER_PORT, TENSILE_ROUND=r) and sends `ready` for r once its group is built and it holds state
//   (stateFrom 'peer' when a peer sent it). The agent sends `round` only for rounds that begin while the worker
//   runs; when the round changed between the spawn and the hello, the current `round` follows `welcome` at once.
// - Warm standby (--standby-workers N, live mode only): the agent pre-starts N spare processes per node with the
//   worker environment plus TENSILE_STANDBY=1, LOCAL_RANK = a standby slot (nproc-per-node + i, not a rank) and
//   TENSILE_CONTROL = that slot's socket. A standby says hello (live: true) on its slot and then waits, joining no
//   group and sending no heartbeats, for a `round`. When a live worker fails, the agent promotes a standby into the
//   failed local rank: from then on its connection speaks for that rank, and it gets the new round's `round`, whose
//   rank/localRank/worldSize/master are authoritative (its environment's RANK, WORLD_SIZE, MASTER_* are not).
// - Every `round` has a fresh MASTER port (a free pair: store on masterPort, RPC on masterPort + 1) that the new
//   round's rank 0 binds; the previous round's store is never reused.
// - The agent waits a bounded time for `ready` from every local worker (the ready timeout); past it, or when any
//   local worker is not live, it falls back to the restart path (stop the group, start it again).
// - A live worker that exits non-zero is restarted alone in the next round, counted against --max-restarts; the
//   others are not stopped and get that round's `round`.
// - Hang watchdog: armed at a worker's `ready` or first heartbeat, paused between `round` and `ready`. No step progress for
//   the hang timeout → `dump` (dir = the worker's log dir), SIGCONT, SIGUSR2 (Node workers run with
//   --report-on-signal --report-signal=SIGUSR2 --report-directory=<log dir>) or SIGABRT (Python workers run with
//   PYTHONFAULTHANDLER=1: the traceback goes to stderr, which the agent saves as stacks.txt), ≤ 2 s for the dump,
//   then SIGKILL; the exit then counts as a failure like any other.

import { z } from 'zod';

export const CONTROL_PROTOCOL_VERSION = 1;
/** Longest line either side accepts; a longer one is a protocol error, never buffered without bound. */
export const MAX_CONTROL_LINE_BYTES = 64 * 1024;
/** Environment variable with the control socket path. */
export const CONTROL_ENV = 'TENSILE_CONTROL';
/** Set to '1' in a warm standby's environment (see above): wait for a `round` before joining any group. */
export const STANDBY_ENV = 'TENSILE_STANDBY';
/** Environment variable with the recovery mode the agent runs in: 'live' or 'restart'. */
export const RECOVERY_ENV = 'TENSILE_RECOVERY';

const nonNegInt = z.number().int().nonnegative();

export const helloSchema = z.object({
  type: z.literal('hello'),
  version: z.literal(CONTROL_PROTOCOL_VERSION),
  localRank: nonNegInt,
  pid: z.number().int().positive(),
  live: z.boolean(),
});

export const heartbeatSchema = z.object({
  type: z.literal('heartbeat'),
  step: nonNegInt,
  /** Epoch the step belongs to, when the worker knows it. */
  epoch: nonNegInt.optional(),
});

export const readySchema = z.object({
  type: z.literal('ready'),
  round: nonNegInt,
  step: nonNegInt,
  /** Where this worker's state came from in this round: it kept its own, a peer sent it, or a disk checkpoint. */
  stateFrom: z.enum(['self', 'peer', 'disk', 'fresh']),
  /** Milliseconds from receiving `round` to `ready` (recovery time as the worker saw it). */
  recoveryMs: z.number().nonnegative(),
});

export const errorSchema = z.object({ type: z.literal('error'), message: z.string() });

export const peerLostSchema = z.object({
  type: z.literal('peer-lost'),
  /** Global ranks whose connections broke, when the worker knows them. */
  ranks: z.array(nonNegInt).optional(),
});

export const welcomeSchema = z.object({
  type: z.literal('welcome'),
  version: z.literal(CONTROL_PROTOCOL_VERSION),
  heartbeatIntervalMs: z.number().int().positive(),
});

export const roundSchema = z.object({
  type: z.literal('round'),
  round: nonNegInt,
  rank: nonNegInt,
  localRank: nonNegInt,
  worldSize: z.number().int().positive(),
  localWorldSize: z.number().int().positive(),
  groupRank: nonNegInt,
  groupWorldSize: z.number().int().positive(),
  masterAddr: z.string().min(1),
  masterPort: z.number().int().min(1).max(65535),
  restartCount: nonNegInt,
});

export const dumpSchema = z.object({ type: z.literal('dump'), dir: z.string().min(1) });

export const workerMessageSchema = z.discriminatedUnion('type', [
  helloSchema,
  heartbeatSchema,
  readySchema,
  errorSchema,
  peerLostSchema,
]);
export const agentMessageSchema = z.discriminatedUnion('type', [welcomeSchema, roundSchema, dumpSchema, errorSchema]);

export type WorkerMessage = z.infer<typeof workerMessageSchema>;
export type AgentMessage = z.infer<typeof agentMessageSchema>;
export type RoundMessage = z.infer<typeof roundSchema>;

export class ControlProtocolError extends Error {
  readonly code = 'CONTROL_PROTOCOL' as const;
}

/** Encodes one message as a line. Throws ControlProtocolError when the line would exceed the limit. */
export function encodeControlMessage(msg: WorkerMessage | AgentMessage): string {
  const line = JSON.stringify(msg) + '\n';
  const bytes = Buffer.byteLength(line);
  if (bytes > MAX_CONTROL_LINE_BYTES) {
    throw new ControlProtocolError(`control message of ${bytes} bytes exceeds ${MAX_CONTROL_LINE_BYTES}`);
  }
  return line;
}

function decodeWith<T>(schema: z.ZodType<T>, line: string, from: string): T {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new ControlProtocolError(`${from}: not JSON: ${JSON.stringify(line.slice(0, 80))}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.join('.') || '(message)';
    throw new ControlProtocolError(`${from}: ${path}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

/** Decodes one line (without its '\n') sent by a worker. Throws ControlProtocolError naming the bad field. */
export function decodeWorkerMessage(line: string): WorkerMessage {
  return decodeWith(workerMessageSchema, line, 'worker message');
}

/** Decodes one line (without its '\n') sent by the agent. Throws ControlProtocolError naming the bad field. */
export function decodeAgentMessage(line: string): AgentMessage {
  return decodeWith(agentMessageSchema, line, 'agent message');
}

/**
 * Splits a byte stream into lines. `push` returns the complete lines received so far; a line longer than
 * MAX_CONTROL_LINE_BYTES throws ControlProtocolError (the caller closes the connection). Not thread-safe (one
 * per connection).
 */
export class LineSplitter {
  private pending = '';

  push(chunk: Buffer | string): string[] {
    this.pending += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    if (Buffer.byteLength(this.pending) > MAX_CONTROL_LINE_BYTES) {
      throw new ControlProtocolError(`control line longer than ${MAX_CONTROL_LINE_BYTES} bytes`);
    }
    for (const line of lines) {
      if (Buffer.byteLength(line) > MAX_CONTROL_LINE_BYTES) {
        throw new ControlProtocolError(`control line longer than ${MAX_CONTROL_LINE_BYTES} bytes`);
      }
    }
    return lines.filter((l) => l.length > 0);
  }

  /** Bytes of an unfinished line (a connection closed with a non-zero value here was truncated). */
  get pendingBytes(): number {
    return Buffer.byteLength(this.pending);
  }
}
