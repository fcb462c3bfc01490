/**
 * Our WASM kernels (BatchMatMul on heap views, contiguous Slice, JS Transpose) against the cpu backend's,
 * over the shapes the model uses and the awkward ones (broadcast batches, transposes, rank 5, int32).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '../helpers/backend.ts';
import '../../engine/ops.ts'; // registers TF.js's gradients
import { collapsePermutation } from '../../engine/kernels/wasm-fast-kernels.ts';
import { makeRng, normalArray } from '../../engine/rng.ts';

function rand(shape: number[], seed: number): Float32Array {
  return normalArray(shape.reduce((a, b) => a * b, 1), 1, makeRng(seed));
}

/** Runs f on both backends with the same input data and returns the max abs difference. */
async function diff(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: Array<{ data: Float32Array | Int32Array; shape: number[] }>): Promise<number> {
  const run = async (backend: string) => {
    await useBackend(backend);
    return tf.tidy(() => {
      const ts = inputs.map((i) => tf.tensor(i.data, i.shape, i.data instanceof Int32Array ? 'int32' : 'float32'));
      const out = f(...ts);
      return { values: Array.from(out.dataSync()), shape: out.shape };
    });
  };
  const cpu = await run('cpu');
  const wasm = await run('wasm');
  expect(wasm.shape).toEqual(cpu.shape);
  return cpu.values.reduce((m, v, i) => Math.max(m, Math.abs(v - wasm.values[i])), 0);
}

describe('fast WASM kernels agree with the cpu backend', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it.each([
    [[2, 5, 3], [2, 3, 4], false, false],
    [[2, 5, 3], [2, 4, 3], false, true],
    [[2, 3, 5], [2, 3, 4], true, false],
    [[2, 3, 5], [2, 4, 3], true, true],
    [[1, 5, 3], [6, 3, 4], false, false], // broadcast left
    [[6, 5, 3], [3, 4], false, false], // broadcast right (rank 2)
    [[2, 3, 7, 8], [2, 3, 8, 5], false, false], // rank 4
    [[64, 32], [64, 48], true, false], // a weight gradient's xᵀ·dy
  ] as Array<[number[], number[], boolean, boolean]>)('matMul %j x %j (tA=%s, tB=%s)', async (sa, sb, ta, tb) => {
    expect(await diff((a, b) => tf.matMul(a, b, ta, tb), [{ data: rand(sa, 1), shape: sa }, { data: rand(sb, 2), shape: sb }])).toBeLessThan(1e-4);
  });

  it.each([
    [[4, 6, 3, 2, 5], [2, 0, 3, 1, 4]],
    [[3, 2, 4, 2, 3, 2], [5, 4, 3, 2, 1, 0]],
    [[37, 53], [1, 0]],
    [[4, 5, 6], [0, 2, 1]],
    [[2, 3, 4, 5], [0, 2, 1, 3]],
  ])('transpose %j by %j', async (shape, perm) => {
    expect(await diff((x) => tf.transpose(x, perm), [{ data: rand(shape, 3), shape }])).toBe(0);
    const ints = Int32Array.from(rand(shape, 4), (v) => Math.round(v * 100));
    expect(await diff((x) => tf.transpose(x, perm), [{ data: ints, shape }])).toBe(0);
  });

  it('contiguous and strided slices', async () => {
    const shape = [3, 4, 5];
    expect(await diff((x) => tf.slice(x, [1, 0, 0], [2, 4, 5]), [{ data: rand(shape, 5), shape }])).toBe(0);
    expect(await diff((x) => tf.slice(x, [1, 1, 0], [1, 2, 5]), [{ data: rand(shape, 5), shape }])).toBe(0);
    expect(await diff((x) => tf.slice(x, [0, 1, 2], [3, 2, 2]), [{ data: rand(shape, 5), shape }])).toBe(0);
  });

  it.each([
    [[37, 53], 0, false],
    [[4, 5, 6], [0, 1], true],
    [[4, 5, 6], 1, false], // not leading: the stock kernel
    [[4, 5, 6], -1, false],
  ] as Array<[number[], number | number[], boolean]>)('sum %j over %j (keepDims %s)', async (shape, axis, keepDims) => {
    expect(await diff((x) => tf.sum(x, axis, keepDims), [{ data: rand(shape, 8), shape }])).toBeLessThan(1e-5);
  });

  it('gradients through the kernels match', async () => {
    const f = (a: tf.Tensor, b: tf.Tensor) => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(tf.transpose(x, [0, 2, 1]), y))))([a, b])[0];
    expect(await diff(f, [{ data: rand([3, 4, 5], 6), shape: [3, 4, 5] }, { data: rand([3, 4, 2], 7), shape: [3, 4, 2] }])).toBeLessThan(1e-3);
  });

  it('collapses adjacent axes of a permutation', () => {
    expect(collapsePermutation([2, 3, 4, 5], [0, 2, 3, 1])).toEqual({ outShape: [2, 20, 3], inStrides: [60, 1, 20] });
    expect(collapsePermutation([2, 3], [0, 1])).toEqual({ outShape: [6], inStrides: [1] });
  });
});
