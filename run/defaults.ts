/**
 * The defaults of a shared run, in one place: the coordinator's flags, a config file's missing keys and the
 * tests all start from these. Each says what it is and why it has that value.
 */
import type { OuterConfig } from '../engine/outer-optimizer.ts';
import type { AveragingMode, PipelineConfig } from './config.ts';

export const RUN_DEFAULTS = {
  /** Sync: gradients averaged every step — the same model as one process would train. */
  mode: 'sync' as AveragingMode,
  /** DiLoCo's local steps between averagings: 10 cuts traffic ~10x at little loss (see the bench). */
  innerSteps: 10,
  /** DiLoCo's outer Nesterov step: the values of the DiLoCo paper (lr 0.7, momentum 0.9). */
  outer: { lr: 0.7, momentum: 0.9 } as OuterConfig,
  /** A round that takes longer is retried without its stragglers: a minute covers a slow home uplink. */
  roundTimeoutSec: 60,
  /** Frames whose L2 norm exceeds this are refused: far above any honest gradient part of our presets. */
  maxPartNorm: 1e5,
  /** Rounds between validation-loss measurements. */
  evalEvery: 10,
  /** Rounds between checkpoints: at most 10 rounds are lost to a crash. */
  checkpointEvery: 10,
  /** Sequences per round over all peers (per inner step in DiLoCo). */
  batchSize: 16,
  /** Sequences per micro-batch, the unit handed to peers: 4 lets four peers share the default batch. */
  microBatchSize: 4,
  /** Tokens per sequence (capped by the model's block size and the data's sequence length). */
  seqLen: 128,
  /** Peak learning rate of AdamW. */
  lr: 1e-3,
  /** Pipeline activations travel as float32 unless asked: fp16 halves the bytes (loss impact in the bench). */
  activationDtype: 'float32' as PipelineConfig['activationDtype'],
  /** Stages of `--stages auto` before peers are seen: maxInFlight's default counts on it. */
  autoStagesGuess: 2,
} as const;

/** Micro-batches a first-stage peer keeps in flight: twice the stage count keeps every stage busy. */
export function defaultMaxInFlight(stages: number): number {
  return Math.min(64, 2 * stages);
}
