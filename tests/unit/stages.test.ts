/**
 * Stage-split equivalence: running the model as S stages (forward through each, then backward from the last)
 * gives the same loss and gradients as the whole model, for every S. Pipeline parallelism stands on this.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { DEFAULT_TRAIN, validateModelConfig } from '../../engine/config.ts';
import { evenStageRanges, Stage } from '../../engine/stages.ts';
import { batchTensors, Trainer } from '../../engine/trainer.ts';
import { partNames } from '../../engine/model.ts';
import { ENGINE_BACKENDS, useBackend } from '../helpers/backend.ts';
import { compareTensor, goldenBatch, loadGolden } from '../helpers/golden.ts';

describe.each(ENGINE_BACKENDS)('pipeline stages on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });
  afterAll(() => tf.disposeVariables());

  for (const objective of ['causal', 'mlm'] as const) {
    it(`${objective}: every split into stages matches the whole model`, async () => {
      const g = loadGolden(objective);
      const model = validateModelConfig({ ...g.config, nLayer: 3 });
      const trainer = new Trainer(model, { ...DEFAULT_TRAIN, seed: 11 });
      const batch = goldenBatch(g);
      const whole = await trainer.computeGradients([batch]);
      const before = tf.memory().numTensors;
      for (let S = 1; S <= partNames(model).length; S++) {
        const stages = evenStageRanges(model, S).map((r) => new Stage(model, r));
        const result = tf.tidy(() => {
          const { ids, targets } = batchTensors(batch);
          // Forward, keeping each stage's input (what a pipeline peer keeps between the two passes).
          const inputs: tf.Tensor[] = [ids];
          for (const st of stages.slice(0, -1)) inputs.push(st.forward(trainer.params, inputs[inputs.length - 1]));
          const loss = stages[stages.length - 1].forward(trainer.params, inputs[inputs.length - 1], targets);
          // Backward from the last stage; the tied wte gets gradients from the embed and head stages.
          const grads: Record<string, tf.Tensor> = {};
          let gradOut: tf.Tensor | undefined;
          for (let s = stages.length - 1; s >= 0; s--) {
            const r = stages[s].backward(trainer.params, inputs[s], gradOut, s === stages.length - 1 ? targets : undefined);
            for (const [n, gr] of Object.entries(r.paramGrads)) grads[n] = grads[n] ? tf.add(grads[n], gr) : gr;
            gradOut = r.gradInput;
          }
          return { loss: loss.dataSync()[0], grads };
        });
        expect(Math.abs(result.loss - whole.loss)).toBeLessThan(1e-5);
        const problems = trainer.manifest.entries.map((e) => compareTensor(`S=${S} ${e.name}`, result.grads[e.name], Array.from(whole.grads[e.name].dataSync()), 1e-6, 1e-4)).filter(Boolean);
        expect(problems).toEqual([]);
        tf.dispose(Object.values(result.grads));
        expect(tf.memory().numTensors).toBe(before);
      }
      tf.dispose(Object.values(whole.grads));
      trainer.dispose();
    });
  }

  it('refuses impossible splits', () => {
    const model = loadGolden('causal').config;
    expect(() => evenStageRanges(model, 0)).toThrow(/stages must be an integer in \[1, 4\]/);
    expect(() => evenStageRanges(model, 5)).toThrow(/stages must be/);
    expect(() => new Stage(model, { from: 2, to: 2 })).toThrow(/outside the model/);
  });
});
