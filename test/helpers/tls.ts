// Test certificates made by openssl in a temp directory: one CA, and leaf certificates it signs that serve both as
// server and client certificates (subjectAltName IP:127.0.0.1 and DNS:localhost). For TLS tests of etcd and RPC.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestCa {
  readonly cert: string;
  readonly key: string;
}

export interface TestCert {
  readonly cert: string;
  readonly key: string;
}

const DAYS = '2';

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore', timeout: 20_000 });
}

/** Whether the openssl command is there (tests that need it skip otherwise). */
export function haveOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore', timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}

/** A self-signed CA in `dir`: `<prefix>ca.pem` and `<prefix>ca.key`. */
export function makeTestCa(dir: string, prefix = ''): TestCa {
  const cert = join(dir, `${prefix}ca.pem`);
  const key = join(dir, `${prefix}ca.key`);
  openssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    DAYS,
    '-subj',
    '/CN=tensile-test-ca',
    '-keyout',
    key,
    '-out',
    cert,
  ]);
  return { cert, key };
}

/** A certificate for `cn` signed by `ca`: `<name>.pem` and `<name>.key` in `dir`. */
export function makeTestCert(dir: string, ca: TestCa, name: string, cn: string): TestCert {
  const f = (ext: string): string => join(dir, `${name}.${ext}`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', f('key'), '-out', f('csr')]);
  writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  openssl([
    'x509',
    '-req',
    '-in',
    f('csr'),
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-days',
    DAYS,
    '-extfile',
    f('ext'),
    '-out',
    f('pem'),
  ]);
  return { cert: f('pem'), key: f('key') };
}
