// The agent's pino logger: human-readable on a TTY (pino-pretty, loaded only then), JSON lines otherwise.
// Both write synchronously, so nothing is lost when the agent exits right after logging. With a live status line,
// lines go through `sink` so the status line is cleared before and redrawn after each one.

import { pino, type Logger as PinoLogger } from 'pino';

export type LineSink = NodeJS.WritableStream;

export async function createAgentLogger(
  format: 'pretty' | 'json',
  level: string,
  sink: LineSink | null = null,
  name = 'tensile',
): Promise<PinoLogger> {
  if (format === 'pretty') {
    const { default: pretty } = await import('pino-pretty');
    const stream = pretty({
      colorize: process.stderr.isTTY === true,
      sync: true,
      ignore: 'pid,hostname,name',
      singleLine: true,
      destination: sink ?? 2,
    });
    return pino({ name, level }, stream);
  }
  return pino({ name, level }, sink ?? pino.destination({ dest: 2, sync: true }));
}
