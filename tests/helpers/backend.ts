import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../../node/backend.ts';

/** Backends every engine test runs on in Node. */
export const ENGINE_BACKENDS = ['cpu', 'wasm'] as const;

export async function useBackend(name: string): Promise<void> {
  const choice = await selectBackend(name);
  if (tf.getBackend() !== choice.name) throw new Error(`wanted ${name}, got ${tf.getBackend()}`);
}

/**
 * Whether WebGPU starts here (through the `webgpu` package; on this CI a Mesa software adapter). Tests that
 * can afford its slowness add it to their backends when it does, and say so when it does not.
 */
export async function webGpuWorks(): Promise<boolean> {
  if (process.env.PEERTRAIN_TEST_WEBGPU === '0') return false;
  try {
    await selectBackend('webgpu');
    return true;
  } catch (err) {
    console.warn(`webgpu backend unavailable, its tests are skipped: ${(err as Error).message}`);
    return false;
  } finally {
    await tf.setBackend('cpu');
  }
}
