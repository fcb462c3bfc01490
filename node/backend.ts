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

async function tryWebGpu(opts: SelectOptions): Promise<string> {
  // Dawn prints driver warnings when it finds no GPU; without a device node a real adapter is impossible.
  if (!opts.allowSoftwareWebGpu && !hasGpuDevice()) throw new Error('no GPU device on this machine');
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator?.gpu) {
    let webgpu: { create: (flags: string[]) => unknown; globals: Record<string, unknown> };
    try {
      webgpu = (await import('webgpu')) as unknown as typeof webgpu;
    } catch {
      throw new Error('the optional "webgpu" package is not installed');
    }
    Object.assign(globalThis, webgpu.globals);
    const gpu = webgpu.create([]);
    Object.defineProperty(globalThis, 'navigator', { value: { ...(g.navigator ?? {}), gpu }, configurable: true });
  }
  const gpu = (globalThis as unknown as { navigator: { gpu: { requestAdapter(o?: object): Promise<{ info?: Record<string, string> } | null> } } }).navigator.gpu;
  const adapter = (await gpu.requestAdapter()) ?? (await gpu.requestAdapter({ featureLevel: 'compatibility' }));
  if (!adapter) throw new Error('no WebGPU adapter');
  const desc = Object.values(adapter.info ?? {}).filter(Boolean).join(' ');
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

/** Starts the preferred backend, or the best available one when `preferred` is undefined or "auto". */
export async function selectBackend(preferred?: string, opts: SelectOptions = {}): Promise<BackendChoice> {
  if (preferred !== undefined && preferred !== 'auto' && !(BACKENDS as readonly string[]).includes(preferred)) {
    throw new BackendUnavailableError(`unknown backend "${preferred}" (supported: auto, ${BACKENDS.join(', ')})`);
  }
  const order: BackendName[] = preferred && preferred !== 'auto' ? [preferred as BackendName] : [...BACKENDS];
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
