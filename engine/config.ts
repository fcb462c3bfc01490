/**
 * Model and training configuration: plain objects with named presets, validated before any tensor exists.
 * The model config is saved inside every checkpoint; its architecture keys must match on resume.
 */
import { ConfigError } from './errors.ts';

export type Objective = 'causal' | 'mlm';

export interface ModelConfig {
  /** Tokens in the vocabulary (for `mlm`, the last id is the [MASK] token). */
  vocabSize: number;
  /** Context length: the longest sequence the position embedding covers. */
  blockSize: number;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  /** `causal`: next-token prediction with causal attention. `mlm`: BERT-style masked tokens, bidirectional. */
  objective: Objective;
}

/** Keys that fix the parameter shapes or the function the model computes; a checkpoint refuses other values. */
export const ARCHITECTURE_KEYS = ['vocabSize', 'blockSize', 'nLayer', 'nHead', 'nEmbd', 'objective'] as const;

export interface TrainConfig {
  /** Sequences per optimizer step (summed over micro-batches). */
  batchSize: number;
  /** Sequences per forward/backward pass; batchSize must be a multiple. Smaller saves memory. */
  microBatchSize: number;
  /** Tokens per sequence (<= blockSize). */
  seqLen: number;
  lr: number;
  /** Learning rate at the end of cosine decay, as a fraction of lr. */
  minLrRatio: number;
  warmupSteps: number;
  /** Steps over which the cosine decays; the schedule stays at the floor after. */
  totalSteps: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value; 0 disables clipping. */
  gradClip: number;
  /** Fraction of positions masked for the `mlm` objective. */
  maskProb: number;
  seed: number;
}

type Architecture = Omit<ModelConfig, 'vocabSize' | 'objective'>;

/** Named shapes. `tiny` ≈ 0.8M params, `small` ≈ 11M, `gpt2` the 124M shape (with a GPT-2 vocabulary). */
export const PRESETS: Record<string, Architecture> = {
  tiny: { nLayer: 4, nHead: 4, nEmbd: 128, blockSize: 128 },
  small: { nLayer: 6, nHead: 6, nEmbd: 384, blockSize: 256 },
  gpt2: { nLayer: 12, nHead: 12, nEmbd: 768, blockSize: 1024 },
};

export const DEFAULT_TRAIN: TrainConfig = {
  batchSize: 16,
  microBatchSize: 16,
  seqLen: 128,
  lr: 1e-3,
  minLrRatio: 0.1,
  warmupSteps: 20,
  totalSteps: 1000,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  gradClip: 1.0,
  maskProb: 0.15,
  seed: 1337,
};

export function presetNames(): string[] {
  return Object.keys(PRESETS);
}

/** Builds a model config from a preset name, a vocabulary size and optional overrides, and validates it. */
export function modelConfigFromPreset(preset: string, vocabSize: number, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const arch = PRESETS[preset];
  if (!arch) throw new ConfigError(`unknown preset "${preset}" (known: ${presetNames().join(', ')})`, 'preset');
  return validateModelConfig({ ...arch, vocabSize, objective: 'causal', ...overrides });
}

function positiveInt(obj: Record<string, unknown>, key: string, max = 1 << 24): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new ConfigError(`${key} must be an integer in [1, ${max}], got ${JSON.stringify(v)}`, key);
  }
  return v;
}

function finiteNumber(obj: Record<string, unknown>, key: string, min: number, max: number, minExclusive = false): number {
  const v = obj[key];
  const tooLow = typeof v === 'number' && (minExclusive ? v <= min : v < min);
  if (typeof v !== 'number' || !Number.isFinite(v) || tooLow || v > max) {
    const range = `${minExclusive ? '(' : '['}${min}, ${max}]`;
    throw new ConfigError(`${key} must be a number in ${range}, got ${JSON.stringify(v)}`, key);
  }
  return v;
}

/** Checks every field; returns a clean copy holding only known keys. */
export function validateModelConfig(raw: unknown): ModelConfig {
  if (typeof raw !== 'object' || raw === null) throw new ConfigError('model config must be an object');
  const o = raw as Record<string, unknown>;
  const nLayer = positiveInt(o, 'nLayer', 512);
  const nHead = positiveInt(o, 'nHead', 1024);
  const nEmbd = positiveInt(o, 'nEmbd', 1 << 16);
  const blockSize = positiveInt(o, 'blockSize', 1 << 16);
  const vocabSize = positiveInt(o, 'vocabSize', 1 << 20);
  if (nEmbd % nHead !== 0) {
    throw new ConfigError(`nHead (${nHead}) must divide nEmbd (${nEmbd})`, 'nHead');
  }
  const objective = o.objective ?? 'causal';
  if (objective !== 'causal' && objective !== 'mlm') {
    throw new ConfigError(`objective must be "causal" or "mlm", got ${JSON.stringify(objective)}`, 'objective');
  }
  if (objective === 'mlm' && vocabSize < 2) throw new ConfigError('mlm needs a vocabulary of at least 2 (one is [MASK])', 'vocabSize');
  return { vocabSize, blockSize, nLayer, nHead, nEmbd, objective };
}

export function validateTrainConfig(raw: unknown, model: ModelConfig): TrainConfig {
  if (typeof raw !== 'object' || raw === null) throw new ConfigError('train config must be an object');
  const o = { ...DEFAULT_TRAIN, ...(raw as Record<string, unknown>) } as Record<string, unknown>;
  const batchSize = positiveInt(o, 'batchSize', 1 << 16);
  const microBatchSize = positiveInt(o, 'microBatchSize', 1 << 16);
  if (batchSize % microBatchSize !== 0) {
    throw new ConfigError(`batchSize (${batchSize}) must be a multiple of microBatchSize (${microBatchSize})`, 'microBatchSize');
  }
  const seqLen = positiveInt(o, 'seqLen', model.blockSize);
  const cfg: TrainConfig = {
    batchSize,
    microBatchSize,
    seqLen,
    lr: finiteNumber(o, 'lr', 0, 10, true),
    minLrRatio: finiteNumber(o, 'minLrRatio', 0, 1),
    warmupSteps: finiteNumber(o, 'warmupSteps', 0, 1e9),
    totalSteps: positiveInt(o, 'totalSteps', 1e9),
    beta1: finiteNumber(o, 'beta1', 0, 1),
    beta2: finiteNumber(o, 'beta2', 0, 1),
    eps: finiteNumber(o, 'eps', 0, 1, true),
    weightDecay: finiteNumber(o, 'weightDecay', 0, 10),
    gradClip: finiteNumber(o, 'gradClip', 0, 1e9),
    maskProb: finiteNumber(o, 'maskProb', 0, 1, true),
    seed: finiteNumber(o, 'seed', 0, 2 ** 32 - 1),
  };
  if (!Number.isInteger(cfg.warmupSteps)) throw new ConfigError('warmupSteps must be an integer', 'warmupSteps');
  if (cfg.beta1 >= 1) throw new ConfigError('beta1 must be below 1', 'beta1');
  if (cfg.beta2 >= 1) throw new ConfigError('beta2 must be below 1', 'beta2');
  return cfg;
}

/** Number of trainable parameters of a config (tied head: wte counted once). */
export function countParams(c: ModelConfig): number {
  const C = c.nEmbd;
  const perBlock = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C);
  return c.vocabSize * C + c.blockSize * C + c.nLayer * perBlock + 2 * C;
}

/** First architecture key whose value differs, or undefined when the two configs describe the same model. */
export function architectureDifference(a: ModelConfig, b: ModelConfig): { key: string; a: unknown; b: unknown } | undefined {
  for (const key of ARCHITECTURE_KEYS) {
    if (a[key] !== b[key]) return { key, a: a[key], b: b[key] };
  }
  return undefined;
}
