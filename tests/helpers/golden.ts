import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { validateModelConfig, type ModelConfig } from '../../engine/config.ts';
import type { Batch } from '../../engine/trainer.ts';

interface NamedArray {
  shape: number[];
  data: number[];
}

export interface GoldenFixture {
  config: ModelConfig;
  idx: number[][];
  targets: number[][];
  weights?: number[][];
  params: Record<string, NamedArray>;
  loss: number;
  grads: Record<string, NamedArray>;
  adamw: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; steps: number; params: Record<string, NamedArray> };
}

/** Loads a fixture written by scripts/reference/gen_golden.py. */
export function loadGolden(objective: 'causal' | 'mlm'): GoldenFixture {
  const path = fileURLToPath(new URL(`../fixtures/golden-gpt-${objective}.json`, import.meta.url));
  const raw = JSON.parse(readFileSync(path, 'utf8')) as GoldenFixture;
  raw.config = validateModelConfig(raw.config);
  return raw;
}

export function goldenBatch(g: GoldenFixture): Batch {
  const B = g.idx.length;
  const T = g.idx[0].length;
  return {
    B,
    T,
    ids: Int32Array.from(g.idx.flat()),
    targets: Int32Array.from(g.targets.flat()),
    weights: g.weights ? Float32Array.from(g.weights.flat()) : undefined,
  };
}

/** Flat parameter array in manifest order from the fixture's named arrays. */
export function goldenParamsFlat(named: Record<string, NamedArray>, order: Array<{ name: string; size: number }>): Float32Array {
  const total = order.reduce((s, e) => s + e.size, 0);
  const out = new Float32Array(total);
  let off = 0;
  for (const e of order) {
    const a = named[e.name];
    if (!a) throw new Error(`fixture lacks ${e.name}`);
    out.set(a.data, off);
    off += e.size;
  }
  return out;
}

/**
 * Compares a tensor against reference numbers with |a - b| <= atol + rtol·|b| and returns a message naming the
 * tensor and its max difference on mismatch (empty string when it matches).
 */
export function compareTensor(name: string, actual: tf.Tensor | Float32Array, expected: number[], atol: number, rtol: number): string {
  const a = actual instanceof Float32Array ? actual : (actual.dataSync() as Float32Array);
  if (a.length !== expected.length) return `${name}: ${a.length} values, expected ${expected.length}`;
  let worst = 0;
  let maxDiff = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - expected[i]);
    const excess = d - (atol + rtol * Math.abs(expected[i]));
    if (d > maxDiff) maxDiff = d;
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  return at >= 0 ? `${name}: max |diff| ${maxDiff.toExponential(3)}, worst at [${at}] got ${a[at]} expected ${expected[at]}` : '';
}
