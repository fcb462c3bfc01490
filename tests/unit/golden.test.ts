/**
 * Golden tests: loss, every parameter gradient, and two AdamW steps of a tiny GPT against PyTorch
 * (fixtures from scripts/reference/gen_golden.py, computed in float64).
 * Tolerances: TF.js computes in float32, so loss agrees to ~1e-6 relative. Gradients are mostly 1e-3..1e-1 with
 * some (the key bias, exactly 0 in exact arithmetic) at float32 noise: |diff| <= 2e-6 + 1e-4·|ref|. WASM
 * (XNNPACK) sums in another order than the reference's, and WebGPU (Mesa llvmpipe shaders) in yet another,
 * all within the same bound. AdamW's update divides the
 * gradient by sqrt(v)+eps, so gradients near 1e-8 amplify float32 noise: parameters within 1e-4 absolute.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { DEFAULT_TRAIN } from '../../engine/config.ts';
import { Trainer } from '../../engine/trainer.ts';
import { ENGINE_BACKENDS, useBackend, webGpuWorks } from '../helpers/backend.ts';
import { compareTensor, goldenBatch, goldenParamsFlat, loadGolden } from '../helpers/golden.ts';

// WebGPU joins when it starts (a software adapter here): same model code, its own kernels.
const BACKENDS: string[] = [...ENGINE_BACKENDS, ...((await webGpuWorks()) ? ['webgpu'] : [])];

describe.each(BACKENDS)('golden GPT vs PyTorch on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });
  afterAll(() => tf.disposeVariables());

  for (const objective of ['causal', 'mlm'] as const) {
    it(`${objective}: loss and every gradient match`, async () => {
      const g = loadGolden(objective);
      const trainer = new Trainer(g.config, { ...DEFAULT_TRAIN, seed: 1 });
      trainer.importParams(goldenParamsFlat(g.params, trainer.manifest.entries));
      const { loss, grads } = await trainer.computeGradients([goldenBatch(g)]);
      expect(Math.abs(loss - g.loss) / g.loss).toBeLessThan(1e-5);
      const problems: string[] = [];
      for (const e of trainer.manifest.entries) problems.push(compareTensor(e.name, (await grads[e.name].data()) as Float32Array, g.grads[e.name].data, 2e-6, 1e-4));
      expect(problems.filter(Boolean)).toEqual([]);
      for (const t of Object.values(grads)) t.dispose();
      trainer.dispose();
    });

    it(`${objective}: two AdamW steps match torch.optim.AdamW`, async () => {
      const g = loadGolden(objective);
      const a = g.adamw;
      const trainer = new Trainer(g.config, {
        ...DEFAULT_TRAIN,
        lr: a.lr,
        minLrRatio: 1,
        warmupSteps: 0,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        weightDecay: a.weightDecay,
        // Clipping on but never binding (scale exactly 1): exercises the global-norm path on every backend.
        gradClip: 1e6,
      });
      trainer.importParams(goldenParamsFlat(g.params, trainer.manifest.entries));
      for (let s = 0; s < a.steps; s++) await trainer.trainStep([goldenBatch(g)]);
      const problems: string[] = [];
      for (const e of trainer.manifest.entries) problems.push(compareTensor(e.name, (await trainer.params[e.name].data()) as Float32Array, a.params[e.name].data, 1e-4, 0));
      expect(problems.filter(Boolean)).toEqual([]);
      trainer.dispose();
    });
  }
});
