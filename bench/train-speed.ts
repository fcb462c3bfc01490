/**
 * One training-throughput measurement, in its own process so its peak memory is its own:
 *   node bin/run-ts.js bench/train-speed.ts --preset tiny --backend wasm --workers 2 --batch 16 --seq 128 --steps 5
 * Trains through the same ReplicaGroup `peertrain train` uses, on random tokens (speed depends on shapes only),
 * and prints one JSON line.
 */
import { readFileSync } from 'node:fs';
import { countParams, DEFAULT_TRAIN, modelConfigFromPreset, validateTrainConfig } from '../engine/config.ts';
import { makeRng } from '../engine/rng.ts';
import type { Batch } from '../engine/trainer.ts';
import { parseArgs } from '../cli/args.ts';
import { ReplicaGroup } from '../node/cluster/replica-group.ts';

const { flags } = parseArgs(process.argv.slice(2), {
  preset: { type: 'string', help: '', default: 'tiny' },
  backend: { type: 'string', help: '', default: 'wasm' },
  workers: { type: 'int', help: '', default: 1, min: 1 },
  batch: { type: 'int', help: '', default: 16, min: 1 },
  seq: { type: 'int', help: '', default: 128, min: 2 },
  steps: { type: 'int', help: '', default: 5, min: 1 },
  warmup: { type: 'int', help: '', default: 2, min: 0 },
  vocab: { type: 'int', help: '', default: 96, min: 2 },
});

function peakRssMB(): number {
  // VmHWM: the process's peak resident set (all threads, so all replica workers).
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : Math.round(process.memoryUsage().rss / 2 ** 20);
}

const model = modelConfigFromPreset(String(flags.preset), Number(flags.vocab));
const B = Number(flags.batch);
const T = Number(flags.seq);
const workers = Number(flags.workers);
const micro = Math.max(1, Math.floor(B / workers));
const train = validateTrainConfig({ ...DEFAULT_TRAIN, batchSize: B, microBatchSize: micro, seqLen: T }, model);
const group = await ReplicaGroup.start({ workers, backend: String(flags.backend), model, train });
const rng = makeRng(7);
const batches = (): Batch[] =>
  Array.from({ length: B / micro }, () => {
    const ids = Int32Array.from({ length: micro * T }, () => Math.floor(rng() * model.vocabSize));
    const targets = Int32Array.from({ length: micro * T }, () => Math.floor(rng() * model.vocabSize));
    return { B: micro, T, ids, targets };
  });
try {
  for (let i = 0; i < Number(flags.warmup); i++) await group.step(batches());
  const steps = Number(flags.steps);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await group.step(batches());
  const msPerStep = (performance.now() - t0) / steps;
  console.log(
    JSON.stringify({
      impl: 'peertrain',
      backend: group.backend,
      detail: group.backendDetail,
      workers,
      preset: flags.preset,
      params: countParams(model),
      batch: B,
      seq: T,
      tokensPerSec: Math.round((B * T) / (msPerStep / 1000)),
      msPerStep: Math.round(msPerStep),
      peakRssMB: peakRssMB(),
    }),
  );
} finally {
  await group.stop();
}
process.exit(0);
