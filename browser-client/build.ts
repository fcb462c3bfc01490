/**
 * Builds the browser client into dist/browser: the page (app.js), the peer's Web Worker (worker.js), styles,
 * and TF.js's WASM binaries, which the coordinator serves itself (the page loads nothing from elsewhere).
 *   npm run build            (the coordinator also builds when dist/browser is missing or older than sources)
 */
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const BROWSER_DIST = join(root, 'dist', 'browser');
const SOURCES = ['browser-client', 'engine', 'peer', 'protocol'];

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Whether dist/browser is missing or older than any source it is built from. */
export function browserBuildStale(): boolean {
  try {
    const built = statSync(join(BROWSER_DIST, 'BUILD')).mtimeMs;
    return SOURCES.some((d) => newestMtime(join(root, d)) > built);
  } catch {
    return true;
  }
}

export async function buildBrowser(): Promise<void> {
  const tmp = `${BROWSER_DIST}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'wasm'), { recursive: true });
  await build({
    entryPoints: { app: join(root, 'browser-client/page/app.ts'), worker: join(root, 'browser-client/worker/worker.ts') },
    outdir: tmp,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'chrome120',
    minify: true,
    sourcemap: 'linked',
    logLevel: 'warning',
    define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  });
  for (const f of ['index.html', 'app.css']) copyFileSync(join(root, 'browser-client/page', f), join(tmp, f));
  const require = createRequire(import.meta.url);
  copyFileSync(join(dirname(require.resolve('uplot/package.json')), 'dist/uPlot.min.css'), join(tmp, 'uPlot.min.css'));
  const wasmDir = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
  for (const f of readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'))) copyFileSync(join(wasmDir, f), join(tmp, 'wasm', f));
  writeFileSync(join(tmp, 'BUILD'), `${new Date().toISOString()}\n`);
  mkdirSync(dirname(BROWSER_DIST), { recursive: true });
  // Swap in atomically: the old build moves aside first. Two processes building at once (two coordinators
  // starting together) both produce the same files: whichever lands last wins, the other's temp is removed.
  const old = `${BROWSER_DIST}.old-${process.pid}`;
  try {
    renameSync(BROWSER_DIST, old);
  } catch {
    // no previous build
  }
  try {
    renameSync(tmp, BROWSER_DIST);
  } catch (err) {
    if (browserBuildStale()) throw err;
  } finally {
    rmSync(old, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t0 = Date.now();
  await buildBrowser();
  console.log(`built ${BROWSER_DIST} in ${Date.now() - t0} ms`);
}
