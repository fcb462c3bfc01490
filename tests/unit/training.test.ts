/**
 * Training behaviour on each Node backend: no tensor leaks across a step, the loss falls on real text, and
 * replicas started from the same seed stay bit-identical.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { DEFAULT_TRAIN, validateModelConfig, validateTrainConfig } from '../../engine/config.ts';
import { CharTokenizer } from '../../engine/data/tokenizers/index.ts';
import { packedSequences, stepBatches, validationBatches } from '../../engine/data/batches.ts';
import { hashFloats } from '../../engine/averaging.ts';
import { Trainer } from '../../engine/trainer.ts';
import { ENGINE_BACKENDS, useBackend } from '../helpers/backend.ts';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
const text = loadBrownText().slice(0, 400_000);
const tokenizer = CharTokenizer.fromText(text);
const tokens = tokenizer.encode(text);
// Small enough for the cpu backend to take 50 steps in seconds; the same code path as the presets.
const model = validateModelConfig({ vocabSize: tokenizer.vocabSize, nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 32, objective: 'causal' });
const train = validateTrainConfig({ ...DEFAULT_TRAIN, batchSize: 8, microBatchSize: 4, seqLen: 32, lr: 3e-3, warmupSteps: 5, totalSteps: 50 }, model);
const spec = { B: 4, T: 32, objective: 'causal' as const };
// The last tenth is held out; both are packed into sequences of 33 tokens (windows of 32).
const cut = Math.floor(tokens.length * 0.9);
const trainTokens = packedSequences(tokens.subarray(0, cut), 33);
const val = packedSequences(tokens.slice(cut), 33);

describe.each(ENGINE_BACKENDS)('training on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });
  afterAll(() => tf.disposeVariables());

  it('leaks no tensor across a training step (with gradient accumulation)', async () => {
    const trainer = new Trainer(model, train);
    await trainer.trainStep(stepBatches(trainTokens, spec, 1, 0, 2)); // creates optimizer state
    const before = tf.memory().numTensors;
    for (let s = 1; s < 4; s++) await trainer.trainStep(stepBatches(trainTokens, spec, 1, s, 2));
    expect(tf.memory().numTensors).toBe(before);
    await trainer.evalLoss(validationBatches(val, spec, 1, 1));
    expect(tf.memory().numTensors).toBe(before);
    trainer.dispose();
  });

  it('the loss falls over 50 steps on real text (Brown corpus)', async () => {
    const trainer = new Trainer(model, train);
    const valBatches = validationBatches(val, spec, 1, 4);
    const initial = await trainer.evalLoss(valBatches);
    expect(initial).toBeGreaterThan(Math.log(tokenizer.vocabSize) - 0.3); // starts near uniform
    const losses: number[] = [];
    for (let s = 0; s < 50; s++) losses.push((await trainer.trainStep(stepBatches(trainTokens, spec, 1, s, 2))).loss);
    const final = await trainer.evalLoss(valBatches);
    const early = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const late = losses.slice(-5).reduce((a, b) => a + b) / 5;
    expect(late).toBeLessThan(early - 0.8);
    expect(final).toBeLessThan(initial - 0.8);
    trainer.dispose();
  });

  it('replicas from the same seed and batches stay bit-identical', async () => {
    const a = new Trainer(model, train);
    const b = new Trainer(model, train);
    for (let s = 0; s < 3; s++) {
      await a.trainStep(stepBatches(trainTokens, spec, 2, s, 1));
      await b.trainStep(stepBatches(trainTokens, spec, 2, s, 1));
    }
    expect(hashFloats(await a.exportParams())).toBe(hashFloats(await b.exportParams()));
    a.dispose();
    b.dispose();
  });
});
