/**
 * Stage trainers in one process, wired as the pipeline wires them (activations forward, gradients back, the
 * tied embedding joined, one global norm for clipping), take the same steps as one whole-model Trainer on the
 * same micro-batches; and a stage step leaks no tensor.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { DEFAULT_TRAIN, validateModelConfig, validateTrainConfig } from '../../engine/config.ts';
import { packedSequences, stepBatches } from '../../engine/data/batches.ts';
import { CharTokenizer } from '../../engine/data/tokenizers/index.ts';
import { assembleModelGradient, joinStageGradient, splitStageGradient, stageSlices } from '../../engine/pipeline-gradients.ts';
import { gatherStage, StageTrainer, stageManifest } from '../../engine/stage-trainer.ts';
import { evenStageRanges, type StageRange } from '../../engine/stages.ts';
import { Trainer, type Batch } from '../../engine/trainer.ts';
import { loadBrownText } from '../../node/data/builtin-corpus.ts';
import { useBackend } from '../helpers/backend.ts';

const text = loadBrownText().slice(0, 50_000);
const tokenizer = CharTokenizer.fromText(text);
const seqs = packedSequences(tokenizer.encode(text), 17);
const model = validateModelConfig({ vocabSize: tokenizer.vocabSize, nLayer: 3, nHead: 2, nEmbd: 32, blockSize: 16, objective: 'causal' });
// A small clip so clipping is active: the global norm must come from every stage.
const train = validateTrainConfig({ ...DEFAULT_TRAIN, batchSize: 6, microBatchSize: 2, seqLen: 16, lr: 3e-3, warmupSteps: 1, totalSteps: 10, gradClip: 0.5 }, model);
const spec = { B: 2, T: 16, objective: 'causal' as const };

/** One step of a pipeline with one peer per stage: forward all micro-batches, backward, join, clip, apply. */
async function pipelineStep(stages: StageTrainer[], ranges: StageRange[], batches: Batch[], coordinator: Trainer): Promise<number> {
  let loss = 0;
  for (const b of batches) {
    const inputs = [{ B: b.B, T: b.T, ids: b.ids }] as Array<{ B: number; T: number; ids?: Int32Array; activations?: Float32Array }>;
    for (const st of stages.slice(0, -1)) inputs.push({ B: b.B, T: b.T, activations: await st.forward(inputs[inputs.length - 1]) });
    const last = await stages[stages.length - 1].lastStage(inputs[inputs.length - 1], { targets: b.targets });
    loss += last.loss / batches.length;
    let grad = last.gradInput;
    for (let s = stages.length - 2; s >= 0; s--) grad = await stages[s].backward(inputs[s], grad!);
  }
  const S = stages.length;
  const taken = await Promise.all(stages.map((st) => st.takeGradients()));
  const parts = taken.map((t, s) => splitStageGradient(model, ranges[s], S, t.values));
  // The tied group: first and last stage, equal weights (every micro-batch passed both).
  const tiedMean = S > 1 ? parts[0].tied.map((x, i) => (x + parts[S - 1].tied[i]) / 2) : undefined;
  const joined = parts.map((p, s) => joinStageGradient(model, ranges[s], S, p.own, tiedMean));
  const full = assembleModelGradient(model, coordinator.manifest, ranges, joined);
  const grads = Object.fromEntries(coordinator.manifest.entries.map((e) => [e.name, tf.tensor(full.subarray(e.offset, e.offset + e.size), e.shape)]));
  const { gradNorm } = await coordinator.applyGradients(grads);
  stages.forEach((st, s) => st.apply(joined[s], gradNorm));
  return loss;
}

describe('stage trainers as a pipeline', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  afterAll(() => tf.disposeVariables());

  for (const S of [1, 2, 3]) {
    it(`${S} stage(s) take the whole model's steps (3 steps, clipping active)`, async () => {
      const reference = new Trainer(model, train);
      const coordinator = new Trainer(model, train);
      const ranges = evenStageRanges(model, S);
      const stages = ranges.map((r) => new StageTrainer(model, train, r));
      for (let step = 0; step < 3; step++) {
        const batches = stepBatches(seqs, spec, 5, step, 3);
        const ref = await reference.trainStep(batches);
        const loss = await pipelineStep(stages, ranges, batches, coordinator);
        expect(Math.abs(loss - ref.loss)).toBeLessThan(1e-5);
      }
      const refParams = await reference.exportParams();
      const coordParams = await coordinator.exportParams();
      let worst = 0;
      for (let i = 0; i < refParams.length; i++) worst = Math.max(worst, Math.abs(refParams[i] - coordParams[i]));
      expect(worst).toBeLessThan(1e-4);
      // Each stage holds exactly the coordinator's slice: same numbers, same clip scale, same AdamW.
      const slices = stageSlices(model, coordinator.manifest, ranges, coordParams);
      for (let s = 0; s < S; s++) expect(Array.from(await stages[s].exportParams())).toEqual(Array.from(slices[s]));
      for (const t of [reference, coordinator, ...stages]) t.dispose();
    });
  }

  it('a stage holds only its own parameters, and its steps leak no tensor', async () => {
    const ranges = evenStageRanges(model, 2);
    const full = new Trainer(model, train);
    const init = await full.exportParams();
    const stages = ranges.map((r) => new StageTrainer(model, train, r, gatherStage(init, full.manifest, stageManifest(model, r))));
    expect(stages[0].manifest.totalSize + stages[1].manifest.totalSize).toBe(full.manifest.totalSize + model.vocabSize * model.nEmbd);
    const coordinator = new Trainer(model, train);
    await pipelineStep(stages, ranges, stepBatches(seqs, spec, 5, 0, 2), coordinator);
    const before = tf.memory().numTensors;
    for (let step = 1; step < 3; step++) await pipelineStep(stages, ranges, stepBatches(seqs, spec, 5, step, 2), coordinator);
    // The coordinator's trainer allocates nothing lasting either: the count is unchanged overall.
    expect(tf.memory().numTensors).toBe(before);
    for (const t of [full, coordinator, ...stages]) t.dispose();
  });
});
