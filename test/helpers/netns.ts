// Test hosts in Linux network namespaces (root only): one namespace per node, each joined to a bridge in the root
// namespace by a veth pair, on a /24 made up for this test run. `linkDown(i)` cuts node i off; `destroy()` removes
// every namespace, veth and the bridge. Traffic stays between these namespaces and the bridge.
import { execFileSync } from 'node:child_process';

export interface NetnsNode {
  readonly ns: string;
  readonly ip: string;
  readonly hostIf: string;
}

export interface Topology {
  readonly hostIp: string;
  readonly nodes: readonly NetnsNode[];
  linkDown(i: number): void;
  linkUp(i: number): void;
  destroy(): void;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
}

/** Why netns tests cannot run here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network-namespace tests need root (ip netns add)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (the ip command) is not installed';
  }
  const probe = `tslprobe${process.pid % 10000}`;
  try {
    ip(['netns', 'add', probe]);
    ip(['netns', 'del', probe]);
    return null;
  } catch (err) {
    return `cannot create network namespaces here: ${(err as Error).message.split('\n')[0]}`;
  }
}

export function createTopology(count: number): Topology {
  const tag = String(process.pid % 10000);
  const subnet = `10.213.${process.pid % 250}`;
  const bridge = `tsb${tag}`;
  const nodes: NetnsNode[] = [];
  const destroy = (): void => {
    for (const n of nodes) {
      try {
        ip(['netns', 'del', n.ns]);
      } catch {
        // already gone
      }
      try {
        ip(['link', 'del', n.hostIf]);
      } catch {
        // removed with the namespace
      }
    }
    try {
      ip(['link', 'del', bridge]);
    } catch {
      // already gone
    }
  };
  try {
    ip(['link', 'add', bridge, 'type', 'bridge']);
    ip(['addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
    ip(['link', 'set', bridge, 'up']);
    for (let i = 0; i < count; i++) {
      const ns = `tsl${tag}n${i}`;
      const hostIf = `tsh${tag}n${i}`;
      const nsIf = `tsc${tag}n${i}`;
      const node = { ns, ip: `${subnet}.${10 + i}`, hostIf };
      nodes.push(node);
      ip(['netns', 'add', ns]);
      ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
      ip(['link', 'set', nsIf, 'netns', ns]);
      ip(['link', 'set', hostIf, 'master', bridge]);
      ip(['link', 'set', hostIf, 'up']);
      ip(['-n', ns, 'addr', 'add', `${node.ip}/24`, 'dev', nsIf]);
      ip(['-n', ns, 'link', 'set', nsIf, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  } catch (err) {
    destroy();
    throw err;
  }
  return {
    hostIp: `${subnet}.1`,
    nodes,
    linkDown: (i) => ip(['link', 'set', (nodes[i] as NetnsNode).hostIf, 'down']),
    linkUp: (i) => ip(['link', 'set', (nodes[i] as NetnsNode).hostIf, 'up']),
    destroy,
  };
}
