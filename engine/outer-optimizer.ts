/**
 * DiLoCo's outer optimizer (Douillard et al. 2023): every H inner steps, peers average their pseudo-gradients
 * Δ = θ_global − θ_local and the global parameters take one Nesterov-momentum SGD step:
 *   v ← μ·v + Δ;   θ ← θ − lr·(Δ + μ·v)
 * Plain typed-array arithmetic, so every replica (any backend) computes the identical result.
 */
import { ManifestError } from './errors.ts';

export interface OuterConfig {
  /** Outer learning rate (DiLoCo uses 0.7). */
  lr: number;
  /** Nesterov momentum (DiLoCo uses 0.9). */
  momentum: number;
}

export class OuterNesterov {
  readonly velocity: Float32Array;

  constructor(
    readonly config: OuterConfig,
    size: number,
    velocity?: Float32Array,
  ) {
    if (velocity && velocity.length !== size) throw new ManifestError(`outer momentum has ${velocity.length} values, expected ${size}`);
    this.velocity = velocity ? Float32Array.from(velocity) : new Float32Array(size);
  }

  /** Updates `params` in place with the averaged pseudo-gradient. */
  step(params: Float32Array, delta: Float32Array): void {
    if (params.length !== this.velocity.length || delta.length !== this.velocity.length) {
      throw new ManifestError(`outer step: sizes differ (params ${params.length}, delta ${delta.length}, momentum ${this.velocity.length})`);
    }
    const { lr, momentum } = this.config;
    const v = this.velocity;
    for (let i = 0; i < v.length; i++) {
      v[i] = momentum * v[i] + delta[i];
      params[i] -= lr * (delta[i] + momentum * v[i]);
    }
  }
}

/** Δ = θ_global − θ_local, the pseudo-gradient a peer contributes after its inner steps. */
export function pseudoGradient(global: Float32Array, local: Float32Array): Float32Array {
  if (global.length !== local.length) throw new ManifestError(`pseudo-gradient: sizes differ (${global.length} vs ${local.length})`);
  const out = new Float32Array(global.length);
  for (let i = 0; i < out.length; i++) out[i] = global[i] - local[i];
  return out;
}
