/**
 * The configuration of a shared run, sent to every peer in its welcome, and its hash: every run-scoped message
 * carries the hash, so a peer with another config (or another run) is rejected before its payload is read.
 */
import { validateModelConfig, validateTrainConfig, type ModelConfig, type TrainConfig } from '../engine/config.ts';
import { validateDataManifest, type DataManifest } from '../engine/data/manifest.ts';
import { ConfigError } from '../engine/errors.ts';
import type { OuterConfig } from '../engine/outer-optimizer.ts';

export type AveragingMode = 'sync' | 'diloco';

/**
 * Pipeline parallelism: the model split into stages, each served by a swarm of peers. Absent: every peer
 * holds the whole model (data parallelism, sync or DiLoCo). A run is one or the other, never a mix: see
 * README ("Which parallelism a run uses").
 */
export interface PipelineConfig {
  /** A fixed number of stages, or 'auto': the fewest stages whose memory fits the peers that joined. */
  stages: number | 'auto';
  /** How activations and their gradients travel between stages. */
  activationDtype: 'float32' | 'float16';
  /** Micro-batches a driver keeps in flight (the pipeline's depth: about the stage count fills it). */
  maxInFlight: number;
}

export interface RunConfig {
  model: ModelConfig;
  /** batchSize is the run's whole batch per round (sync) or per inner step (diloco), over all peers. */
  train: TrainConfig;
  mode: AveragingMode;
  /** DiLoCo: local AdamW steps between averagings. */
  innerSteps: number;
  outer: OuterConfig;
  /** Seconds a round may take before the coordinator retries it without the peers that did not finish. */
  roundTimeoutSec: number;
  /** Frames whose L2 norm exceeds this are rejected (a poisoned or broken contribution). */
  maxPartNorm: number;
  /** Rounds between validation-loss measurements and between checkpoints. */
  evalEvery: number;
  checkpointEvery: number;
  /** The data every peer trains on (shards are verified against it). */
  data: DataManifest;
  pipeline?: PipelineConfig;
}

/** Canonical JSON: object keys sorted, so equal configs hash equally whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** sha256 of the canonical config, hex, via WebCrypto (Node 20 and browsers alike). */
export async function configHash(c: RunConfig): Promise<string> {
  const bytes = new TextEncoder().encode(canonicalJson(c));
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function validateRunConfig(raw: unknown): RunConfig {
  if (typeof raw !== 'object' || raw === null) throw new ConfigError('run config must be an object');
  const o = raw as RunConfig;
  const model = validateModelConfig(o.model);
  const train = validateTrainConfig(o.train, model);
  if (o.mode !== 'sync' && o.mode !== 'diloco') throw new ConfigError(`mode must be "sync" or "diloco", got ${JSON.stringify(o.mode)}`, 'mode');
  const int = (k: 'innerSteps' | 'evalEvery' | 'checkpointEvery', max: number) => {
    if (!Number.isInteger(o[k]) || o[k] < 1 || o[k] > max) throw new ConfigError(`${k} must be an integer in [1, ${max}], got ${JSON.stringify(o[k])}`, k);
  };
  int('innerSteps', 10_000);
  int('evalEvery', 1_000_000);
  int('checkpointEvery', 1_000_000);
  if (!(o.roundTimeoutSec > 0 && o.roundTimeoutSec <= 3600)) throw new ConfigError('roundTimeoutSec must be in (0, 3600]', 'roundTimeoutSec');
  if (!(o.maxPartNorm > 0) || !Number.isFinite(o.maxPartNorm)) throw new ConfigError('maxPartNorm must be a positive number', 'maxPartNorm');
  if (typeof o.outer !== 'object' || o.outer === null || !(o.outer.lr > 0 && o.outer.lr <= 10) || !(o.outer.momentum >= 0 && o.outer.momentum < 1)) {
    throw new ConfigError('outer must be { lr in (0, 10], momentum in [0, 1) }', 'outer');
  }
  const data = validateDataManifest(o.data, 'run config data');
  if (data.vocabSize !== model.vocabSize) throw new ConfigError(`the data has ${data.vocabSize} tokens, the model ${model.vocabSize}`, 'vocabSize');
  const pipeline = o.pipeline === undefined ? undefined : validatePipelineConfig(o.pipeline, model.nLayer + 2);
  if (pipeline && o.mode !== 'sync') throw new ConfigError('pipeline parallelism runs in sync mode (DiLoCo\'s local steps need the whole model on each peer)', 'mode');
  return { model, train, mode: o.mode, innerSteps: o.innerSteps, outer: { lr: o.outer.lr, momentum: o.outer.momentum }, roundTimeoutSec: o.roundTimeoutSec, maxPartNorm: o.maxPartNorm, evalEvery: o.evalEvery, checkpointEvery: o.checkpointEvery, data, ...(pipeline ? { pipeline } : {}) };
}

export function validatePipelineConfig(raw: unknown, parts: number): PipelineConfig {
  if (typeof raw !== 'object' || raw === null) throw new ConfigError('pipeline must be { stages, activationDtype, maxInFlight }', 'pipeline');
  const o = raw as PipelineConfig;
  const unknown = Object.keys(o).find((k) => !['stages', 'activationDtype', 'maxInFlight'].includes(k));
  if (unknown) throw new ConfigError(`pipeline: unknown key "${unknown}" (allowed: stages, activationDtype, maxInFlight)`, unknown);
  if (o.stages !== 'auto' && !(Number.isInteger(o.stages) && (o.stages as number) >= 1 && (o.stages as number) <= parts)) {
    throw new ConfigError(`pipeline.stages must be "auto" or an integer in [1, ${parts}] (the model has ${parts} parts: embedding, blocks, head), got ${JSON.stringify(o.stages)}`, 'stages');
  }
  if (o.activationDtype !== 'float32' && o.activationDtype !== 'float16') throw new ConfigError(`pipeline.activationDtype must be "float32" or "float16", got ${JSON.stringify(o.activationDtype)}`, 'activationDtype');
  if (!Number.isInteger(o.maxInFlight) || o.maxInFlight < 1 || o.maxInFlight > 64) throw new ConfigError(`pipeline.maxInFlight must be an integer in [1, 64], got ${JSON.stringify(o.maxInFlight)}`, 'maxInFlight');
  return { stages: o.stages, activationDtype: o.activationDtype, maxInFlight: o.maxInFlight };
}
