import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../../node/backend.ts';

/** Backends every engine test runs on in Node. */
export const ENGINE_BACKENDS = ['cpu', 'wasm'] as const;

export async function useBackend(name: string): Promise<void> {
  const choice = await selectBackend(name);
  if (tf.getBackend() !== choice.name) throw new Error(`wanted ${name}, got ${tf.getBackend()}`);
}
