/**
 * AdamW with PyTorch's semantics: decoupled weight decay (p -= lr·wd·p) on 2-D weights only, bias-corrected
 * moments, eps added after the square root. Plus clipping by global gradient norm.
 * State (step count, first and second moments) converts to and from flat arrays for checkpoints and sync.
 */
import * as tf from '@tensorflow/tfjs-core';
import { buildManifest, flattenTensors, sliceFlat, type Manifest } from './flat.ts';
import { ManifestError } from './errors.ts';
import { addMany } from './ops.ts';

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface OptimizerStateArrays {
  step: number;
  /** First moments, flat in the parameter manifest's order. */
  m: Float32Array;
  /** Second moments, same layout. */
  v: Float32Array;
}

export class AdamW {
  private m = new Map<string, tf.Tensor>();
  private v = new Map<string, tf.Tensor>();
  /** Optimizer steps taken so far. */
  step = 0;

  constructor(
    readonly config: AdamWConfig,
    readonly manifest: Manifest,
  ) {}

  /** Whether a parameter gets weight decay: matrices and embeddings do, biases and LayerNorm gains do not. */
  static decays(shape: readonly number[]): boolean {
    return shape.length === 2;
  }

  /**
   * One update of `params` (tf.Variables, assigned in place) with `grads` at learning rate `lr`.
   * Grads are not disposed (the caller owns them).
   */
  apply(params: Record<string, tf.Variable>, grads: Record<string, tf.Tensor>, lr: number): void {
    this.step += 1;
    const { beta1, beta2, eps, weightDecay } = this.config;
    const bc1 = 1 - beta1 ** this.step;
    const bc2 = 1 - beta2 ** this.step;
    for (const e of this.manifest.entries) {
      const p = params[e.name];
      const g = grads[e.name];
      if (!p || !g) throw new ManifestError(`optimizer: parameter or gradient "${e.name}" is missing`);
      const oldM = this.m.get(e.name);
      const oldV = this.v.get(e.name);
      const [m, v] = tf.tidy(() => {
        const m0 = oldM ?? tf.zerosLike(g);
        const v0 = oldV ?? tf.zerosLike(g);
        return [tf.add(tf.mul(m0, beta1), tf.mul(g, 1 - beta1)), tf.add(tf.mul(v0, beta2), tf.mul(tf.square(g), 1 - beta2))];
      });
      tf.tidy(() => {
        const decayed = AdamW.decays(e.shape) && weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), eps);
        p.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), lr / bc1)));
      });
      oldM?.dispose();
      oldV?.dispose();
      this.m.set(e.name, m);
      this.v.set(e.name, v);
    }
  }

  async exportState(): Promise<OptimizerStateArrays> {
    const zeros = (): Float32Array => new Float32Array(this.manifest.totalSize);
    if (this.m.size === 0) return { step: this.step, m: zeros(), v: zeros() };
    return {
      step: this.step,
      m: await flattenTensors(Object.fromEntries(this.m), this.manifest),
      v: await flattenTensors(Object.fromEntries(this.v), this.manifest),
    };
  }

  importState(s: OptimizerStateArrays): void {
    this.dispose();
    this.step = s.step;
    const mv = sliceFlat(s.m, this.manifest);
    const vv = sliceFlat(s.v, this.manifest);
    for (const e of this.manifest.entries) {
      this.m.set(e.name, tf.tensor(mv.get(e.name)!, e.shape));
      this.v.set(e.name, tf.tensor(vv.get(e.name)!, e.shape));
    }
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}

/** Global L2 norm of a set of gradients, as a scalar tensor (no read back: the caller decides when). */
export function globalNorm(grads: Record<string, tf.Tensor>): tf.Scalar {
  return tf.tidy(() => tf.sqrt(addMany(Object.values(grads).map((g) => tf.sum(tf.square(g))))) as tf.Scalar);
}

/**
 * Scales grads (replacing the tensors in the record) so their global norm is at most maxNorm, as
 * torch.nn.utils.clip_grad_norm_ does (scale = maxNorm / (norm + 1e-6), capped at 1). Computed on the device,
 * without reading the norm back. Returns the norm before clipping; the caller owns it.
 */
export function clipByGlobalNorm(grads: Record<string, tf.Tensor>, maxNorm: number): tf.Scalar {
  const norm = globalNorm(grads);
  if (maxNorm > 0) {
    const scale = tf.tidy(() => tf.minimum(1, tf.div(maxNorm, tf.add(norm, 1e-6))));
    for (const k of Object.keys(grads)) {
      const old = grads[k];
      grads[k] = tf.mul(old, scale);
      old.dispose();
    }
    scale.dispose();
  }
  return norm;
}

export { buildManifest };
