// Errors on the wire: an ERR frame's body is {code, message, worker} and, for a user function that threw,
// {type, stack} too. Pure conversions both ways.

import { RemoteError, RpcError } from './api.js';

export interface ErrorBody {
  code: string;
  message: string;
  worker?: string;
  type?: string;
  stack?: string;
}

/** The ERR body for `err` thrown on worker `self` (RpcErrors keep their code; anything else is REMOTE_ERROR). */
export function errorToBody(err: unknown, self: string): ErrorBody {
  if (err instanceof RpcError) {
    if (err instanceof RemoteError) {
      return { code: err.code, type: err.remoteType, message: err.message, stack: err.remoteStack, worker: err.worker };
    }
    return { code: err.code, message: err.message, worker: err.worker ?? self };
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    code: 'REMOTE_ERROR',
    type: e.constructor?.name && e.constructor.name !== 'Object' ? e.constructor.name : e.name,
    message: e.message,
    stack: e.stack ?? '',
    worker: self,
  };
}

/** The error an ERR body from `peer` stands for (a body without code is a PROTOCOL error). */
export function errorFromBody(body: unknown, peer: string): Error {
  const b = (body ?? {}) as Partial<ErrorBody>;
  const worker = b.worker ?? peer;
  if (b.code === 'REMOTE_ERROR') {
    return new RemoteError(worker, b.type ?? 'Error', b.message ?? '', b.stack ?? '');
  }
  return new RpcError((b.code ?? 'PROTOCOL') as RpcError['code'], b.message ?? 'remote failure', { worker });
}
