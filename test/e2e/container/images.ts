// What the container e2e tests need from this machine: the locally built agent image (scripts/images.sh), the
// buildah storage driver it was built with, and why the tests must skip when either is missing.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../operator/harness.js';

const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
export const AGENT_IMAGE = `localhost/tensile/agent:${process.env.TENSILE_IMAGE_TAG ?? VERSION}`;
export const DRIVER =
  process.env.TENSILE_BUILDAH_DRIVER ??
  (readFileSync('/proc/filesystems', 'utf8').includes('overlay') ? 'overlay' : 'vfs');

/** Why this machine cannot run the container tests, or undefined when it can. */
function unavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (buildah --isolation chroot)';
  try {
    execFileSync('buildah', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'buildah is not installed (apt-get install buildah)';
  }
  try {
    execFileSync('buildah', ['--storage-driver', DRIVER, 'inspect', '--type', 'image', AGENT_IMAGE], {
      stdio: 'ignore',
    });
  } catch {
    return `image ${AGENT_IMAGE} is not built (storage driver ${DRIVER}): run scripts/images.sh first`;
  }
  return undefined;
}

/**
 * The reason `what` must skip here (printed once), or undefined when it can run. With TENSILE_REQUIRE_IMAGES=1
 * (set by .ci/run after it built the images) a missing prerequisite throws instead of skipping.
 */
export function containerSkipReason(what: string): string | undefined {
  const reason = unavailable();
  if (reason !== undefined) {
    if (process.env.TENSILE_REQUIRE_IMAGES === '1') throw new Error(`TENSILE_REQUIRE_IMAGES=1 but ${reason}`);
    process.stdout.write(`# ${what} skipped: ${reason}\n`);
  }
  return reason;
}
