/**
 * Backend choice in the browser worker, made once: WebGPU, then WebGL, then WASM (then plain JS). `preferred`
 * forces one; a forced backend that cannot start is an error listing what is supported.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-webgl';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { installFastWasmKernels } from '../../engine/kernels/wasm-fast-kernels.ts';

export const BROWSER_BACKENDS = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;

export interface BrowserBackendChoice {
  name: string;
  detail: string;
  skipped: Record<string, string>;
}

const SOFTWARE = /swiftshader|llvmpipe|lavapipe|software|basic render/i;

/** The WebGL renderer's name (to tell a GPU from a software rasterizer, which is slower than WASM). */
function webglRenderer(): string {
  try {
    const gl = new OffscreenCanvas(1, 1).getContext('webgl2') as WebGL2RenderingContext | null;
    if (!gl) return '';
    const ext = gl.getExtension('WEBGL_debug_renderer_info');
    return String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER) ?? '');
  } catch {
    return '';
  }
}

async function start(name: string, auto: boolean): Promise<string> {
  if (name === 'webgpu') {
    const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<{ info?: { vendor?: string; architecture?: string; description?: string } } | null> } }).gpu;
    if (!gpu) throw new Error('this browser has no WebGPU');
    const adapter = await gpu.requestAdapter();
    if (!adapter) throw new Error('no WebGPU adapter');
    const i = adapter.info ?? {};
    const desc = [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'WebGPU adapter';
    if (auto && SOFTWARE.test(desc)) throw new Error(`only a software adapter (${desc})`);
    if (!(await tf.setBackend('webgpu'))) throw new Error('tf.setBackend("webgpu") failed');
    return desc;
  }
  if (name === 'webgl') {
    if (typeof OffscreenCanvas === 'undefined') throw new Error('no OffscreenCanvas in this worker');
    const renderer = webglRenderer();
    // A software rasterizer (SwiftShader here: 1-3 GFLOP/s) is slower than WASM (~20): auto skips it.
    if (auto && (!renderer || SOFTWARE.test(renderer))) throw new Error(`only a software renderer (${renderer || 'unknown'})`);
    if (!(await tf.setBackend('webgl'))) throw new Error('tf.setBackend("webgl") failed');
    return `WebGL ${tf.env().getNumber('WEBGL_VERSION')} (${renderer})`;
  }
  if (name === 'wasm') {
    // The coordinator serves TF.js's .wasm files itself; the page is cross-origin isolated, so the threaded
    // SIMD build can start.
    setWasmPaths('/wasm/');
    if (!(await tf.setBackend('wasm'))) throw new Error('tf.setBackend("wasm") failed');
    const kernels = installFastWasmKernels();
    return `XNNPACK${crossOriginIsolated ? ', threads' : ''}${kernels.length ? `, fast ${kernels.join('/')}` : ''}`;
  }
  if (name === 'cpu') {
    if (!(await tf.setBackend('cpu'))) throw new Error('tf.setBackend("cpu") failed');
    return 'plain JavaScript';
  }
  throw new Error(`unknown backend "${name}"`);
}

export async function selectBrowserBackend(preferred = 'auto'): Promise<BrowserBackendChoice> {
  const order = preferred === 'auto' ? [...BROWSER_BACKENDS] : [preferred];
  const skipped: Record<string, string> = {};
  for (const name of order) {
    try {
      const detail = await start(name, preferred === 'auto');
      await tf.ready();
      return { name, detail, skipped };
    } catch (err) {
      skipped[name] = (err as Error).message;
    }
  }
  throw new Error(`no backend could start (${Object.entries(skipped).map(([k, v]) => `${k}: ${v}`).join('; ')}); supported: ${BROWSER_BACKENDS.join(', ')}`);
}
