/**
 * Differentiable building blocks written from TF.js core ops, with hand-written gradients where autograd's are
 * slow or missing: LayerNorm (autograd keeps ~10 intermediates), tanh-GELU, the embedding lookup (tf.gather's
 * gradient needs UnsortedSegmentSum, which the WASM backend lacks) and softmax cross-entropy.
 * Activations are 2-D [N, C] (N = B*T) wherever possible so matmuls stay plain 2-D.
 */
import * as tf from '@tensorflow/tfjs-core';
// Gradients of core ops live in a side-effect module; the engine differentiates, so it registers them.
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';

/** LayerNorm epsilon, as PyTorch's default. */
export const LN_EPS = 1e-5;
const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;

type Grad = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
type SaveFn = (tensors: tf.Tensor[]) => void;
type Custom<A extends tf.Tensor[]> = (...args: [...A, SaveFn]) => { value: tf.Tensor; gradFunc: Grad };

/** tf.customGrad with the argument typing it lacks. */
function customGrad<A extends tf.Tensor[]>(f: Custom<A>): (...args: A) => tf.Tensor {
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...args: A) => tf.Tensor;
}

/** LayerNorm over the last axis of x [N, C] with gain and bias [C]. */
export const layerNorm = customGrad<[tf.Tensor2D, tf.Tensor1D, tf.Tensor1D]>((x, gamma, beta, save) => {
  const mean = tf.mean(x, -1, true); // [N, 1]
  const centered = tf.sub(x, mean);
  const variance = tf.mean(tf.square(centered), -1, true); // [N, 1]
  const rstd = tf.rsqrt(tf.add(variance, LN_EPS)); // [N, 1]
  const xhat = tf.mul(centered, rstd); // [N, C]
  save([xhat, rstd, gamma]);
  return {
    value: tf.add(tf.mul(xhat, gamma), beta),
    gradFunc: (dy, [xh, rs, g]) => {
      const dxhat = tf.mul(dy, g);
      // d/dx of (x - mean) * rstd, folded: rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
      const meanD = tf.mean(dxhat, -1, true);
      const meanDX = tf.mean(tf.mul(dxhat, xh), -1, true);
      const dx = tf.mul(tf.sub(tf.sub(dxhat, meanD), tf.mul(xh, meanDX)), rs);
      return [dx, columnSums(tf.mul(dy, xh) as tf.Tensor2D), columnSums(dy as tf.Tensor2D)];
    },
  };
});

/**
 * GELU, tanh approximation (GPT-2's): 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), u = k(x + c·x³).
 * Written with sigmoid because backends vectorise it (WASM: tanh 20 ms, sigmoid 2.4 ms for 1M values).
 */
export const gelu = customGrad<[tf.Tensor]>((x, save) => {
  const x2 = tf.square(x);
  const twoU = tf.mul(tf.mul(x, tf.add(tf.mul(x2, GELU_C), 1)), 2 * GELU_K);
  const s = tf.sigmoid(twoU);
  save([x, s]);
  return {
    value: tf.mul(x, s),
    gradFunc: (dy, [xs, ss]) => {
      // d/dx x·s(2u) = s + x·s(1-s)·2u'   with u' = k(1 + 3c·x²)
      const dTwoU = tf.mul(tf.add(tf.mul(tf.square(xs), 3 * GELU_C), 1), 2 * GELU_K);
      const slope = tf.add(ss, tf.mul(tf.mul(xs, tf.mul(ss, tf.sub(1, ss))), dTwoU));
      return [tf.mul(dy, slope)];
    },
  };
});

/**
 * Sum of many tensors by pairwise adds. Not tf.addN: on WebGPU it binds every input to one shader, and a
 * device allows as few as 8 storage buffers per stage (found with 53 gradient norms on Mesa's adapter).
 */
export function addMany(ts: tf.Tensor[]): tf.Tensor {
  if (ts.length === 0) throw new Error('addMany needs at least one tensor');
  let level = ts;
  while (level.length > 1) {
    const next: tf.Tensor[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? tf.add(level[i], level[i + 1]) : level[i]);
    level = next;
  }
  return level[0];
}

/** Column sums of a [N, C] matrix -> [C] (bias and gain gradients; a fast in-place kernel on WASM). */
export function columnSums(x: tf.Tensor2D): tf.Tensor1D {
  return tf.sum(x, 0);
}

/**
 * One-hot rows as float32. Built as int32 then cast: tfjs-backend-wasm's OneHot ignores a float32 dtype and
 * writes int32 bit patterns into the float buffer (found by the golden test).
 */
export function oneHotFloat(ids: tf.Tensor1D, depth: number): tf.Tensor2D {
  return tf.cast(tf.oneHot(ids, depth), 'float32') as tf.Tensor2D;
}

/**
 * x [N, in] @ w [in, out] + b [out]: one fused op forward (bias inside XNNPACK on WASM); gradients as three
 * plain matmuls (dx = dy·wᵀ, dw = xᵀ·dy, db = 1ᵀ·dy) rather than autograd's reduction for the bias.
 */
export const linear = customGrad<[tf.Tensor2D, tf.Tensor2D, tf.Tensor1D]>((x, w, b, save) => {
  save([x, w]);
  return {
    value: tf.fused.matMul({ a: x, b: w, bias: b }),
    gradFunc: (dy, [xs, ws]) => [tf.matMul(dy, ws, false, true), tf.matMul(xs, dy, true, false), columnSums(dy as tf.Tensor2D)],
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/**
 * Rows of table [V, C] picked by ids [N] -> [N, C]. Gradient: onehot(ids)^T @ dy, a matmul every backend has
 * (tf.gather's own gradient needs a scatter kernel that WASM lacks).
 */
export function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor1D): tf.Tensor2D {
  const lookup = customGrad<[tf.Tensor2D]>((t, save) => {
    save([]);
    return {
      value: tf.gather(t, ids),
      gradFunc: (dy) => {
        const oneHot = oneHotFloat(ids, t.shape[0]); // [N, V]
        return [tf.matMul(oneHot, dy as tf.Tensor2D, true, false)]; // [V, C]
      },
    };
  });
  return lookup(table) as tf.Tensor2D;
}

/**
 * Mean softmax cross-entropy of logits [N, V] against integer targets [N]; with weights [N] (0/1 for masked-LM)
 * it is sum(w * ce) / sum(w). Gradient (softmax - onehot) * w / sum(w), without autograd's intermediates.
 */
export function crossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, weights?: tf.Tensor1D): tf.Scalar {
  const vocab = logits.shape[1];
  const n = logits.shape[0];
  const ce = customGrad<[tf.Tensor2D]>((lg, save) => {
    const logProbs = tf.logSoftmax(lg); // [N, V]
    const oneHot = oneHotFloat(targets, vocab); // [N, V]
    const perRow = tf.neg(tf.sum(tf.mul(logProbs, oneHot), -1)); // [N]
    const scale = weights ? tf.div(weights, tf.maximum(tf.sum(weights), 1e-12)) : tf.fill([n], 1 / n); // [N]
    save([logProbs, oneHot, scale]);
    return {
      value: tf.sum(tf.mul(perRow, scale)),
      gradFunc: (dy, [lp, oh, sc]) => {
        const probs = tf.exp(lp);
        return [tf.mul(tf.mul(tf.sub(probs, oh), tf.expandDims(sc, 1)), dy)];
      },
    };
  });
  return ce(logits) as tf.Scalar;
}
