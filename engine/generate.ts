/**
 * Sampling from a causal model: temperature, top-k and nucleus (top-p) filtering, seeded for reproducibility.
 * Each new token runs the model on the last blockSize tokens (no KV cache: simple, and fast enough for the
 * small models a browser or a CPU trains).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from './config.ts';
import { attentionBias, blockForward, embedForward, logitsForward, type ParamMap } from './model.ts';
import { makeRng } from './rng.ts';
import { ConfigError } from './errors.ts';

export interface SampleOptions {
  maxNewTokens: number;
  /** 0 means greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 keeps all. */
  topK: number;
  /** Keep the smallest set of tokens whose probability reaches p; 1 keeps all. */
  topP: number;
  seed: number;
}

/** Logits of the next token after `context` (at most blockSize ids). */
export async function nextTokenLogits(c: ModelConfig, params: ParamMap, context: ArrayLike<number>): Promise<Float32Array> {
  const last = tf.tidy(() => {
    const T = context.length;
    const ids = tf.tensor2d(Int32Array.from(context), [1, T], 'int32');
    const bias = attentionBias(c, T);
    let x = embedForward(c, params, ids);
    for (let i = 0; i < c.nLayer; i++) x = blockForward(c, params, i, x, bias);
    const logits = logitsForward(params, x); // [T, V]
    return tf.slice(logits, [T - 1, 0], [1, c.vocabSize]);
  });
  const values = (await last.data()) as Float32Array;
  last.dispose();
  return values;
}

/** Picks a token from logits under the options (pure: testable without a model). */
export function pickToken(logits: Float32Array, o: Pick<SampleOptions, 'temperature' | 'topK' | 'topP'>, rng: () => number, exclude = -1): number {
  const ids = Array.from(logits.keys()).filter((i) => i !== exclude);
  if (o.temperature <= 0) return ids.reduce((best, i) => (logits[i] > logits[best] ? i : best), ids[0]);
  ids.sort((a, b) => logits[b] - logits[a]);
  let kept = o.topK > 0 ? ids.slice(0, o.topK) : ids;
  const max = logits[kept[0]];
  let probs = kept.map((i) => Math.exp((logits[i] - max) / o.temperature));
  let sum = probs.reduce((a, b) => a + b, 0);
  if (o.topP < 1) {
    let cum = 0;
    let cut = kept.length;
    for (let j = 0; j < kept.length; j++) {
      cum += probs[j] / sum;
      if (cum >= o.topP) {
        cut = j + 1;
        break;
      }
    }
    kept = kept.slice(0, cut);
    probs = probs.slice(0, cut);
    sum = probs.reduce((a, b) => a + b, 0);
  }
  let r = rng() * sum;
  for (let j = 0; j < kept.length; j++) {
    r -= probs[j];
    if (r <= 0) return kept[j];
  }
  return kept[kept.length - 1];
}

export function validateSampleOptions(o: SampleOptions): void {
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) throw new ConfigError('maxNewTokens must be a non-negative integer', 'maxNewTokens');
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) throw new ConfigError('temperature must be >= 0', 'temperature');
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new ConfigError('topK must be a non-negative integer', 'topK');
  if (!(o.topP > 0 && o.topP <= 1)) throw new ConfigError('topP must be in (0, 1]', 'topP');
}

/**
 * A prompt for samples: the opening (up to 16 tokens) of a held-out sequence, cut at its first document
 * separator, so a sample continues real text.
 */
export function heldOutPrompt(sequences: { data: Int32Array; length: number }, eosId: number): number[] {
  const first = Array.from(sequences.data.subarray(0, Math.min(16, sequences.length)));
  const cut = first.indexOf(eosId);
  const prompt = cut > 0 ? first.slice(0, cut) : first.filter((id) => id !== eosId);
  return prompt.length ? prompt : [0];
}

/** Continues `prompt` by up to maxNewTokens ids; returns only the new ids. `exclude` (e.g. [MASK]) is never sampled. */
export async function generate(c: ModelConfig, params: ParamMap, prompt: ArrayLike<number>, o: SampleOptions, exclude = -1): Promise<number[]> {
  validateSampleOptions(o);
  if (c.objective !== 'causal') throw new ConfigError('generation needs a causal model', 'objective');
  const rng = makeRng(o.seed);
  const seq = Array.from(prompt);
  if (seq.length === 0) throw new ConfigError('generation needs a non-empty prompt', 'prompt');
  const out: number[] = [];
  for (let n = 0; n < o.maxNewTokens; n++) {
    const context = seq.slice(-c.blockSize);
    const next = pickToken(await nextTokenLogits(c, params, context), o, rng, exclude);
    seq.push(next);
    out.push(next);
  }
  return out;
}
