// The one logger contract of the tree: a pino-compatible subset. Library code takes one injected (no-op by
// default) and never writes to the console; the agent and the operator pass real pino loggers.

/** A pino-compatible logger: `logger.info({ rank }, 'msg')` or `logger.info('msg')`. */
export interface Logger {
  trace(obj: object | string, msg?: string): void;
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Drops everything; `child` returns itself. */
export const noopLogger: Logger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return noopLogger;
  },
};
