/**
 * The GPT: token + learned position embeddings, nLayer pre-LayerNorm blocks (causal or bidirectional multi-head
 * self-attention, 4x GELU MLP, residuals), a final LayerNorm and an LM head tied to the token embedding.
 *
 * The model is a sequence of parts — `embed`, `block0` … `block{nLayer-1}`, `head` — so that any contiguous
 * range runs on its own (pipeline stages). Between parts activations are [B, T, C].
 * Parameter names and layouts (weights are [in, out]: y = x @ W):
 *   wte [V, C], wpe [blockSize, C],
 *   h.{i}.ln1.{gamma,beta}, h.{i}.attn.{wQkv [C,3C], bQkv, wProj [C,C], bProj},
 *   h.{i}.ln2.{gamma,beta}, h.{i}.mlp.{wFc [C,4C], bFc, wProj [4C,C], bProj}, lnF.{gamma,beta}
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from './config.ts';
import { crossEntropy, embeddingLookup, gelu, layerNorm, linear } from './ops.ts';
import { makeRng, normalArray } from './rng.ts';

export type ParamMap = Record<string, tf.Tensor>;

export interface ParamSpec {
  name: string;
  shape: number[];
  /** Standard deviation of the normal init; 0 means constant `fill`. */
  std: number;
  fill: number;
}

/** Inputs that travel with a micro-batch to the head: the targets, and for masked-LM the 0/1 loss weights. */
export interface HeadTargets {
  targets: tf.Tensor2D; // [B, T] int32
  weights?: tf.Tensor2D; // [B, T] float32
}

const INIT_STD = 0.02;

/** Every parameter with its shape and init, in a fixed order (the order of flat arrays on the wire). */
export function parameterSpecs(c: ModelConfig): ParamSpec[] {
  const C = c.nEmbd;
  // Residual projections are scaled down so the residual stream's variance does not grow with depth.
  const residStd = INIT_STD / Math.sqrt(2 * c.nLayer);
  const w = (name: string, shape: number[], std = INIT_STD): ParamSpec => ({ name, shape, std, fill: 0 });
  const k = (name: string, shape: number[], fill: number): ParamSpec => ({ name, shape, std: 0, fill });
  const specs: ParamSpec[] = [w('wte', [c.vocabSize, C]), w('wpe', [c.blockSize, C])];
  for (let i = 0; i < c.nLayer; i++) {
    const p = `h.${i}`;
    specs.push(
      k(`${p}.ln1.gamma`, [C], 1),
      k(`${p}.ln1.beta`, [C], 0),
      w(`${p}.attn.wQkv`, [C, 3 * C]),
      k(`${p}.attn.bQkv`, [3 * C], 0),
      w(`${p}.attn.wProj`, [C, C], residStd),
      k(`${p}.attn.bProj`, [C], 0),
      k(`${p}.ln2.gamma`, [C], 1),
      k(`${p}.ln2.beta`, [C], 0),
      w(`${p}.mlp.wFc`, [C, 4 * C]),
      k(`${p}.mlp.bFc`, [4 * C], 0),
      w(`${p}.mlp.wProj`, [4 * C, C], residStd),
      k(`${p}.mlp.bProj`, [C], 0),
    );
  }
  specs.push(k('lnF.gamma', [C], 1), k('lnF.beta', [C], 0));
  return specs;
}

/** Initial parameter values as typed arrays, deterministic in the seed (identical on every peer and backend). */
export function initParameterArrays(c: ModelConfig, seed: number): Map<string, Float32Array> {
  const rng = makeRng(seed);
  const out = new Map<string, Float32Array>();
  for (const s of parameterSpecs(c)) {
    const size = s.shape.reduce((a, b) => a * b, 1);
    out.set(s.name, s.std > 0 ? normalArray(size, s.std, rng) : new Float32Array(size).fill(s.fill));
  }
  return out;
}

/** Part names in order: `embed`, `block0` … , `head`. */
export function partNames(c: ModelConfig): string[] {
  return ['embed', ...Array.from({ length: c.nLayer }, (_, i) => `block${i}`), 'head'];
}

/** Names of the parameters a part owns. wte belongs to `embed`; the tied head reads it too (see stages). */
export function partParamNames(c: ModelConfig, part: string): string[] {
  if (part === 'embed') return ['wte', 'wpe'];
  if (part === 'head') return ['lnF.gamma', 'lnF.beta'];
  const i = Number(part.slice('block'.length));
  return parameterSpecs(c)
    .map((s) => s.name)
    .filter((n) => n.startsWith(`h.${i}.`));
}

/** Additive attention bias [T, T]: 0 where key j may be seen from query i, -1e9 above the diagonal (causal). */
export function causalBias(T: number): tf.Tensor2D {
  const data = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) data[i * T + j] = -1e9;
  return tf.tensor2d(data, [T, T]);
}

/** Token ids [B, T] -> x [B, T, C]. */
export function embedForward(c: ModelConfig, p: ParamMap, ids: tf.Tensor2D): tf.Tensor3D {
  const [B, T] = ids.shape;
  const tok = embeddingLookup(p.wte as tf.Tensor2D, tf.reshape(ids, [B * T])); // [B*T, C]
  const pos = tf.slice(p.wpe, [0, 0], [T, c.nEmbd]); // [T, C]
  return tf.add(tf.reshape(tok, [B, T, c.nEmbd]), pos); // [B, T, C]
}

/** Multi-head self-attention on h [B*T, C]; `bias` [T, T] masks future keys (causal) or is absent (mlm). */
function attention(c: ModelConfig, p: ParamMap, pre: string, h: tf.Tensor2D, B: number, T: number, bias?: tf.Tensor2D): tf.Tensor2D {
  const C = c.nEmbd;
  const nh = c.nHead;
  const hs = C / nh;
  const qkv = linear(h, p[`${pre}.wQkv`] as tf.Tensor2D, p[`${pre}.bQkv`] as tf.Tensor1D); // [B*T, 3C]
  const split = tf.transpose(tf.reshape(qkv, [B, T, 3, nh, hs]), [2, 0, 3, 1, 4]); // [3, B, nh, T, hs]
  // Three contiguous row slices of a 2-D view: not tf.split (copies the whole input per output on WASM), and
  // not a rank-5 slice (its gradient is a rank-5 pad, invalid WGSL in tfjs-backend-webgpu 4.22).
  const rows = tf.reshape(split, [3, B * nh * T * hs]); // [3, B*nh*T*hs]
  const [q, k, v] = [0, 1, 2].map((j) => tf.reshape(tf.slice(rows, [j, 0], [1, B * nh * T * hs]), [B * nh, T, hs])); // [B*nh, T, hs]
  let scores = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hs)); // [B*nh, T, T]
  if (bias) scores = tf.add(scores, bias);
  const att = tf.softmax(scores); // [B*nh, T, T]
  const y = tf.matMul(att, v); // [B*nh, T, hs]
  const merged = tf.reshape(tf.transpose(tf.reshape(y, [B, nh, T, hs]), [0, 2, 1, 3]), [B * T, C]) as tf.Tensor2D; // [B*T, C]
  return linear(merged, p[`${pre}.wProj`] as tf.Tensor2D, p[`${pre}.bProj`] as tf.Tensor1D);
}

/** One pre-LN transformer block on x [B, T, C]. */
export function blockForward(c: ModelConfig, p: ParamMap, i: number, x: tf.Tensor3D, bias?: tf.Tensor2D): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const pre = `h.${i}`;
  let r = tf.reshape(x, [B * T, C]) as tf.Tensor2D; // [B*T, C]
  const a = layerNorm(r, p[`${pre}.ln1.gamma`] as tf.Tensor1D, p[`${pre}.ln1.beta`] as tf.Tensor1D) as tf.Tensor2D;
  r = tf.add(r, attention(c, p, `${pre}.attn`, a, B, T, bias)) as tf.Tensor2D;
  const m = layerNorm(r, p[`${pre}.ln2.gamma`] as tf.Tensor1D, p[`${pre}.ln2.beta`] as tf.Tensor1D) as tf.Tensor2D;
  const hidden = gelu(linear(m, p[`${pre}.mlp.wFc`] as tf.Tensor2D, p[`${pre}.mlp.bFc`] as tf.Tensor1D)) as tf.Tensor2D; // [B*T, 4C]
  r = tf.add(r, linear(hidden, p[`${pre}.mlp.wProj`] as tf.Tensor2D, p[`${pre}.mlp.bProj`] as tf.Tensor1D));
  return tf.reshape(r, [B, T, C]); // [B, T, C]
}

/** Final LayerNorm and tied LM head: x [B, T, C] -> logits [B*T, V]. */
export function logitsForward(p: ParamMap, x: tf.Tensor3D): tf.Tensor2D {
  const [B, T, C] = x.shape;
  const normed = layerNorm(tf.reshape(x, [B * T, C]) as tf.Tensor2D, p['lnF.gamma'] as tf.Tensor1D, p['lnF.beta'] as tf.Tensor1D) as tf.Tensor2D;
  return tf.matMul(normed, p.wte as tf.Tensor2D, false, true); // [B*T, V]
}

/** Head part: logits and the mean loss over positions (weighted for masked-LM). */
export function headLoss(p: ParamMap, x: tf.Tensor3D, t: HeadTargets): tf.Scalar {
  const [B, T] = t.targets.shape;
  const logits = logitsForward(p, x);
  const weights = t.weights ? (tf.reshape(t.weights, [B * T]) as tf.Tensor1D) : undefined;
  return crossEntropy(logits, tf.reshape(t.targets, [B * T]) as tf.Tensor1D, weights);
}

/** Attention bias for the objective and length, or undefined when attention is bidirectional. */
export function attentionBias(c: ModelConfig, T: number): tf.Tensor2D | undefined {
  return c.objective === 'causal' ? causalBias(T) : undefined;
}

/** Whole model: ids [B, T] -> loss. Used by single-peer training; stages compose the same part functions. */
export function modelLoss(c: ModelConfig, p: ParamMap, ids: tf.Tensor2D, t: HeadTargets): tf.Scalar {
  const bias = attentionBias(c, ids.shape[1]);
  let x = embedForward(c, p, ids);
  for (let i = 0; i < c.nLayer; i++) x = blockForward(c, p, i, x, bias);
  return headLoss(p, x, t);
}
