/**
 * Backend choice for Node peers, made once at the entry point. Order of preference:
 *   tensorflow (tfjs-node-gpu, then tfjs-node: optional, their install downloads libtensorflow)
 *   → webgpu (the `webgpu` package's Dawn, only on a real GPU adapter: software adapters are slower than wasm)
 *   → wasm (with our faster matmul/slice kernels) → cpu.
 * `--backend NAME` forces one; a forced backend that cannot start is an error that lists what is supported.
 */
import { existsSync, readdirSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { installFastWasmKernels } from '../engine/kernels/wasm-fast-kernels.ts';
import { BackendUnavailableError } from './errors.ts';

export const BACKENDS = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface BackendChoice {
  name: BackendName;
  /** What the backend runs on, e.g. "tfjs-node-gpu", "XNNPACK/SIMD", an adapter description. */
  detail: string;
  /** Why each better backend was skipped. */
  skipped: Record<string, string>;
}

export interface SelectOptions {
  /** Allow software WebGPU adapters (correctness tests only: 2–3 GFLOP/s here). */
  allowSoftwareWebGpu?: boolean;
}

const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|software|cpu/i;

async function importOptional(name: string): Promise<boolean> {
  try {
    await import(name);
    return true;
  } catch {
    return false;
  }
}

async function tryTensorflow(): Promise<string> {
  // tfjs-node registers the "tensorflow" backend on import; the GPU build first.
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    if ((await importOptional(pkg)) && (await tf.setBackend('tensorflow'))) return pkg;
  }
  throw new Error('neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed');
}

/** Whether this machine exposes a GPU device node (Linux DRM render node or NVIDIA device). */
function hasGpuDevice(): boolean {
  try {
    if (readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))) return true;
  } catch {
    // no DRM devices
  }
  return existsSync('/dev/nvidia0');
}

interface AdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
}
interface GpuLike {
  requestAdapter(o?: object): Promise<AdapterLike | null>;
}
interface WebGpuPackage {
  create: (flags: string[]) => GpuLike;
  globals: Record<string, unknown>;
}

/** Adapter description. dawn.node keeps GPUAdapterInfo's fields as prototype getters: read them by name. */
function describeAdapter(a: AdapterLike): string {
  const i = a.info ?? {};
  return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
}

/**
 * Installs navigator.gpu from the `webgpu` package (Dawn). The default Dawn instance (Vulkan on Linux, Metal,
 * D3D12) comes first; with software adapters allowed, Mesa's llvmpipe over OpenGL ES follows (it needs
 * EGL_PLATFORM=surfaceless headless and only offers the 'compatibility' feature level). tfjs-backend-webgpu
 * requests its own adapter, so navigator.gpu adds the feature level that worked to every request.
 */
async function installNodeWebGpu(opts: SelectOptions): Promise<GpuLike> {
  let webgpu: WebGpuPackage;
  try {
    webgpu = (await import('webgpu')) as unknown as WebGpuPackage;
  } catch {
    throw new Error('the optional "webgpu" package is not installed');
  }
  Object.assign(globalThis, webgpu.globals);
  const attempts: Array<[string[], object]> = [[[], {}]];
  if (opts.allowSoftwareWebGpu) attempts.push([['backend=opengles'], { featureLevel: 'compatibility' }]);
  for (const [flags, extra] of attempts) {
    if (flags.includes('backend=opengles')) process.env.EGL_PLATFORM ??= 'surfaceless';
    const dawn = webgpu.create(flags);
    if (!(await dawn.requestAdapter({ powerPreference: 'high-performance', ...extra }))) continue;
    const d = dawn as unknown as { getPreferredCanvasFormat(): string; wgslLanguageFeatures: unknown };
    const gpu = {
      requestAdapter: (o: object = {}) => dawn.requestAdapter({ ...o, ...extra }),
      getPreferredCanvasFormat: () => d.getPreferredCanvasFormat(),
      get wgslLanguageFeatures() {
        return d.wgslLanguageFeatures;
      },
    };
    const nav = (globalThis as { navigator?: object }).navigator ?? {};
    Object.defineProperty(globalThis, 'navigator', { value: { ...nav, gpu }, configurable: true });
    return gpu;
  }
  throw new Error(opts.allowSoftwareWebGpu ? 'no WebGPU adapter (Vulkan or OpenGL ES)' : 'no WebGPU adapter');
}

async function tryWebGpu(opts: SelectOptions): Promise<string> {
  // Dawn prints driver warnings when it finds no GPU; without a device node a real adapter is impossible.
  if (!opts.allowSoftwareWebGpu && !hasGpuDevice()) throw new Error('no GPU device on this machine');
  const existing = (globalThis as { navigator?: { gpu?: GpuLike } }).navigator?.gpu;
  const gpu = existing ?? (await installNodeWebGpu(opts));
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('no WebGPU adapter');
  const desc = describeAdapter(adapter);
  if (SOFTWARE_ADAPTER.test(desc) && !opts.allowSoftwareWebGpu) throw new Error(`only a software adapter (${desc || 'unknown'})`);
  if (!(await importOptional('@tensorflow/tfjs-backend-webgpu'))) throw new Error('@tensorflow/tfjs-backend-webgpu is not installed');
  if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend("webgpu") failed');
  return desc || 'webgpu adapter';
}

async function tryWasm(): Promise<string> {
  await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('tf.setBackend("wasm") failed');
  const replaced = installFastWasmKernels();
  return replaced.length ? `XNNPACK, fast ${replaced.join('/')}` : 'XNNPACK (stock kernels)';
}

async function tryCpu(): Promise<string> {
  if (!(await tf.setBackend('cpu'))) throw new Error('tf.setBackend("cpu") failed');
  // The cpu backend greets Node users with advice to install tfjs-node; we already report the choice ourselves.
  (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
  return 'plain JavaScript';
}

async function start(name: BackendName, opts: SelectOptions): Promise<string> {
  switch (name) {
    case 'tensorflow':
      return tryTensorflow();
    case 'webgpu':
      return tryWebGpu(opts);
    case 'wasm':
      return tryWasm();
    case 'cpu':
      return tryCpu();
  }
}

/**
 * Process-wide settings a backend needs before any thread starts it. Worker threads get a copy of process.env
 * that native code never sees, so the main thread sets what Mesa's EGL reads (headless surfaceless platform).
 */
export function prepareProcessForBackend(name: string): void {
  if (name === 'webgpu' || name === 'auto') process.env.EGL_PLATFORM ??= 'surfaceless';
}

/** Starts the preferred backend, or the best available one when `preferred` is undefined or "auto". */
export async function selectBackend(preferred?: string, opts: SelectOptions = {}): Promise<BackendChoice> {
  if (preferred !== undefined && preferred !== 'auto' && !(BACKENDS as readonly string[]).includes(preferred)) {
    throw new BackendUnavailableError(`unknown backend "${preferred}" (supported: auto, ${BACKENDS.join(', ')})`);
  }
  const forced = preferred !== undefined && preferred !== 'auto';
  const order: BackendName[] = forced ? [preferred as BackendName] : [...BACKENDS];
  // Asking for webgpu by name accepts a software adapter (slow, but it is what the user asked for).
  if (forced && preferred === 'webgpu') opts = { ...opts, allowSoftwareWebGpu: opts.allowSoftwareWebGpu ?? true };
  const skipped: Record<string, string> = {};
  for (const name of order) {
    try {
      const detail = await start(name, opts);
      await tf.ready();
      return { name, detail, skipped };
    } catch (err) {
      skipped[name] = (err as Error).message;
    }
  }
  const why = Object.entries(skipped)
    .map(([k, v]) => `${k}: ${v}`)
    .join('; ');
  throw new BackendUnavailableError(`no backend could start (${why}); supported: ${BACKENDS.join(', ')}`);
}
