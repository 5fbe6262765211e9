// Single-stream loopback TCP throughput from Node (tensile's ceiling): a sender child process writes 4 MiB buffers,
// this process reads them. Prints {"gbps": GB/s}.
import { fork } from 'node:child_process';
import { connect, createServer } from 'node:net';

const TOTAL = Number(process.argv[2] ?? 512 << 20);
const CHUNK = 4 << 20;

if (process.argv[3] === 'sender') {
  const s = connect({ host: '127.0.0.1', port: Number(process.argv[4]) }, async () => {
    const buf = Buffer.alloc(CHUNK);
    for (let sent = 0; sent < TOTAL; sent += CHUNK) {
      if (!s.write(buf)) await new Promise((r) => s.once('drain', r));
    }
    s.end();
  });
} else {
  const server = createServer((sock) => {
    let got = 0;
    let t0 = 0n;
    sock.on('data', (d: Buffer) => {
      if (got === 0) t0 = process.hrtime.bigint();
      got += d.length;
    });
    sock.on('end', () => {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      process.stdout.write(JSON.stringify({ gbps: got / s / 1e9 }) + '\n');
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const port = (server.address() as { port: number }).port;
    // The sender inherits this process's execArgv (tsx from source, nothing when compiled).
    fork(new URL(import.meta.url).pathname, [String(TOTAL), 'sender', String(port)]);
  });
}
