/**
 * peertrain's training engine, shared by every peer (Node processes and browser tabs). It imports only
 * TensorFlow.js core APIs: the backend is chosen by the entry point before the engine runs.
 *
 * Example (after the entry point has set a backend):
 *
 *   import { modelConfigFromPreset, validateTrainConfig, DEFAULT_TRAIN, Trainer, CharTokenizer,
 *            packedSequences, stepBatches } from './engine/index.ts';
 *   const tok = CharTokenizer.fromText(text);
 *   const model = modelConfigFromPreset('tiny', tok.vocabSize);
 *   const train = validateTrainConfig({ ...DEFAULT_TRAIN, batchSize: 8, microBatchSize: 8, seqLen: 64 }, model);
 *   const trainer = new Trainer(model, train);
 *   const seqs = packedSequences(tok.encode(text), 65); // windows of 64 inputs + 1 target
 *   const spec = { B: 8, T: 64, objective: 'causal' as const };
 *   for (let step = 0; step < 100; step++) {
 *     const { loss } = await trainer.trainStep(stepBatches(seqs, spec, train.seed, step, 1));
 *   }
 */
export * from './config.ts';
export * from './errors.ts';
export * from './model.ts';
export * from './stages.ts';
export * from './optimizer.ts';
export * from './schedule.ts';
export * from './flat.ts';
export * from './trainer.ts';
export * from './checkpoint.ts';
export * from './averaging.ts';
export * from './generate.ts';
export * from './data/tokenizers/index.ts';
export * from './data/batches.ts';
export * from './data/clean.ts';
export * from './data/manifest.ts';
export * from './data/packing.ts';
export * from './data/split.ts';
export { encodeSafetensors, hfGpt2Name } from './export/safetensors.ts';
export { installFastWasmKernels } from './kernels/wasm-fast-kernels.ts';
