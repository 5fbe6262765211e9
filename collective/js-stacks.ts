// JavaScript stacks of a worker whose main thread is stuck in synchronous code (the hang watchdog's busy-loop case).
//
// A busy loop never returns to the event loop, so it answers neither the control channel's `dump` nor Node's
// report-on-signal. The native addon (collective/native/src/stacks.cc) can still take its stack: a native thread,
// asked over an abstract Unix socket, makes V8 interrupt the running JavaScript and read its stack.
//
// Worker side: `installStackDumper()` starts that thread (the control client does it when it connects). It never
// throws: without the addon, off Linux, or off the main thread it returns { ok: false, reason } and nothing changes.
// Agent side: `requestJsStack(pid, timeoutMs, scope)` asks a worker for its stack and maps transpiled frames back
// through their inline source maps (`mapStackText`); pure JavaScript (the agent needs no addon). It never rejects
// and is bounded by its timeout.
//
// The socket is named after the worker's pid and a scope (`stackSocketName`): the agent spawned the worker, so both
// see the same pid and share the network namespace that abstract sockets live in. The scope, the name of the agent's
// control-socket directory (`stackScopeOf`, random per agent), keeps agents apart whose workers share a network
// namespace but not a PID namespace (pods with host networking, containers of one pod): there, two workers can have
// the same pid. Only the same user or root is served.

import { SourceMap, type SourceMapPayload } from 'node:module';
import { createConnection } from 'node:net';
import { basename, dirname } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { loadAddon } from './native/addon.js';

/** How long the worker's native thread waits for the interrupt to run (it runs at the next JS loop or call). */
export const JS_STACK_INTERRUPT_TIMEOUT_MS = 1000;
/** Frames kept, newest first. */
export const JS_STACK_MAX_FRAMES = 64;
/** Bound on a reply read by `requestJsStack`: frames take a few KiB, inline source maps (≤ 4 MiB each) the rest. */
const MAX_REPLY_BYTES = 16 << 20;

const SCOPE = /^[A-Za-z0-9._-]{1,64}$/;

/** The abstract socket name (without the leading NUL) of process `pid`'s stack dumper in `scope`. */
export function stackSocketName(pid: number, scope?: string): string {
  return scope === undefined ? `tensile-stacks.${pid}` : `tensile-stacks.${pid}.${scope}`;
}

/** The scope of the workers of the agent whose control socket is `controlSocketPath`: its directory's name. */
export function stackScopeOf(controlSocketPath: string): string {
  const name = basename(dirname(controlSocketPath))
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(-64);
  return name === '' ? '_' : name;
}

export type StackDumperInstall = { ok: true; socket: string } | { ok: false; reason: string };

/**
 * Starts this process's stack dumper (idempotent). Synchronous: loads the addon (once), binds the socket, starts one
 * native thread. Never throws.
 */
export function installStackDumper(
  opts: { scope?: string; maxFrames?: number; interruptTimeoutMs?: number } = {},
): StackDumperInstall {
  if (opts.scope !== undefined && !SCOPE.test(opts.scope))
    return {
      ok: false,
      reason: `stack dumper scope ${JSON.stringify(opts.scope)}: expected 1 to 64 of [A-Za-z0-9._-]`,
    };
  if (process.platform !== 'linux')
    return { ok: false, reason: `abstract Unix sockets need Linux (platform ${process.platform})` };
  if (!isMainThread) return { ok: false, reason: 'only the main thread installs the stack dumper' };
  const a = loadAddon();
  if (!a.ok) return { ok: false, reason: a.reason };
  if (typeof a.addon.stacksInstall !== 'function')
    return { ok: false, reason: `the addon at ${a.path} predates the stack dumper: rebuild it (npm run build)` };
  const socket = stackSocketName(process.pid, opts.scope);
  try {
    a.addon.stacksInstall(
      socket,
      opts.maxFrames ?? JS_STACK_MAX_FRAMES,
      opts.interruptTimeoutMs ?? JS_STACK_INTERRUPT_TIMEOUT_MS,
    );
  } catch (err) {
    return { ok: false, reason: `the stack dumper cannot start: ${(err as Error).message}` };
  }
  return { ok: true, socket };
}

/** Stops this process's stack dumper, if any (it also stops by itself when the process exits). Never throws. */
export function closeStackDumper(): void {
  const a = loadAddon();
  if (!a.ok) return;
  try {
    a.addon.stacksClose();
  } catch {
    // Installed by another thread: that thread's environment stops it.
  }
}

export type JsStackResult =
  /** `text`: a header line, then one `    at fn (script:line:column)` line per frame, newest first. */
  | { ok: true; text: string }
  /** Why there is no stack: no dumper in that process, the interrupt did not run in time (idle or in native code)… */
  | { ok: false; reason: string };

/**
 * Asks process `pid` (its dumper installed in `scope`) for its main thread's JavaScript stack. Resolves within about
 * `timeoutMs`; never rejects.
 */
export function requestJsStack(pid: number, timeoutMs: number, scope?: string): Promise<JsStackResult> {
  return new Promise((resolve) => {
    const name = stackSocketName(pid, scope);
    const chunks: Buffer[] = [];
    let bytes = 0;
    // Node 20 pads an abstract name with NULs to the whole sun_path; the dumper listens under both spellings.
    const socket = createConnection({ path: `\0${name}` });
    const timer = setTimeout(
      () => finish({ ok: false, reason: `no reply from @${name} within ${timeoutMs} ms` }),
      timeoutMs,
    );
    let settled = false;
    function finish(r: JsStackResult): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    }
    socket.on('connect', () => socket.write('stack\n'));
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > MAX_REPLY_BYTES) finish({ ok: false, reason: `reply from @${name} over ${MAX_REPLY_BYTES} bytes` });
      else chunks.push(chunk);
    });
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.startsWith('JavaScript stack of pid ')) finish({ ok: true, text: mapStackText(text) });
      else finish({ ok: false, reason: text.trim() === '' ? `@${name} closed without a reply` : text.trim() });
    });
    socket.on('error', (err: NodeJS.ErrnoException) =>
      finish({
        ok: false,
        reason:
          err.code === 'ECONNREFUSED' || err.code === 'ENOENT'
            ? `pid ${pid} runs no stack dumper (@${name}: ${err.code}; the native addon did not load there, or ` +
              `the worker has no control client)`
            : `@${name}: ${err.message}`,
      }),
    );
  });
}

const FRAME = /^( {4}at .* \((?:eval at )?)(.*):(\d+):(\d+)\)((?: \[wasm\])?)$/;
const MAP_LINE = /^source-map\t([^\t]*)\t(.*)$/;

/**
 * The dumper's reply made readable: each frame of a script that came with an inline source map (`source-map` lines
 * after the frames; tsx and bundlers emit them) gets its original file, line and column, with the generated position
 * kept in brackets; the `source-map` lines are dropped. Frames without a usable map are left as they are. Pure.
 */
export function mapStackText(raw: string): string {
  const maps = new Map<string, SourceMap | null>();
  const lines = raw.split('\n');
  for (const line of lines) {
    const m = MAP_LINE.exec(line);
    if (!m) continue;
    try {
      maps.set(m[1] as string, new SourceMap(decodeDataUrl(m[2] as string)));
    } catch {
      maps.set(m[1] as string, null); // not an inline map (a file or http URL), or malformed: positions stay generated
    }
  }
  const out: string[] = [];
  for (const line of lines) {
    if (MAP_LINE.test(line)) continue;
    const f = FRAME.exec(line);
    const map = f ? maps.get(f[2] as string) : undefined;
    if (!f || !map) {
      out.push(line);
      continue;
    }
    const [, head, script, genLine, genCol, wasm] = f as unknown as [string, string, string, string, string, string];
    const e = map.findEntry(Number(genLine) - 1, Number(genCol) - 1) as Partial<{
      originalSource: string;
      originalLine: number;
      originalColumn: number;
    }>;
    if (e.originalLine === undefined || e.originalColumn === undefined) {
      out.push(line);
      continue;
    }
    const source = e.originalSource !== undefined && e.originalSource !== '' ? e.originalSource : script;
    out.push(`${head}${source}:${e.originalLine + 1}:${e.originalColumn + 1})${wasm} [generated ${genLine}:${genCol}]`);
  }
  return out.join('\n');
}

/** The JSON payload of a `data:application/json[;charset=…][;base64],…` URL; throws for anything else. */
function decodeDataUrl(url: string): SourceMapPayload {
  const m = /^data:application\/json(?:;charset=[^;,]+)?(;base64)?,(.*)$/s.exec(url);
  if (!m) throw new Error(`not an inline JSON source map: ${url.slice(0, 40)}`);
  const body = m[1] ? Buffer.from(m[2] as string, 'base64').toString('utf8') : decodeURIComponent(m[2] as string);
  return JSON.parse(body) as SourceMapPayload;
}
