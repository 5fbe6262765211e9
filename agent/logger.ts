// The agent's pino logger: human-readable on a TTY (pino-pretty, loaded only then), JSON lines otherwise.
// Both write synchronously to stderr so that nothing is lost when the agent exits right after logging.

import { pino, type Logger as PinoLogger } from 'pino';

export async function createAgentLogger(format: 'pretty' | 'json', level: string, name = 'tensile'): Promise<PinoLogger> {
  if (format === 'pretty') {
    const { default: pretty } = await import('pino-pretty');
    const stream = pretty({ colorize: process.stderr.isTTY === true, sync: true, destination: 2, ignore: 'pid,hostname,name' });
    return pino({ name, level }, stream);
  }
  return pino({ name, level }, pino.destination({ dest: 2, sync: true }));
}
