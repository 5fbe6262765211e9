// The tensile callee of bench/rpc (rank 1). Env: RANK, WORLD_SIZE, MASTER_ADDR, TENSILE_RPC_PORT.
import { initRpc, registerFunction, shutdown } from '../../rpc/index.js';

registerFunction('noop', () => null);
registerFunction('echo', (t: Float32Array) => t);
await initRpc({ initTimeoutMs: 30_000 });
await shutdown({ graceful: true, timeoutMs: 600_000 });
