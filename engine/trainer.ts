/**
 * One replica of the model with its optimizer: computes gradients over micro-batches (accumulated), clips,
 * and applies AdamW at the scheduled learning rate. Gradient computation and the update are separate calls so
 * data-parallel peers can average gradients in between.
 * Every step runs inside tf.tidy or disposes what it made: the tensor count is the same after each step.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig, TrainConfig } from './config.ts';
import { buildManifest, flattenTensors, sliceFlat, unflattenToTensors, type Manifest } from './flat.ts';
import { modelLoss, parameterSpecs, initParameterArrays, type HeadTargets } from './model.ts';
import { AdamW, clipByGlobalNorm } from './optimizer.ts';
import { learningRate } from './schedule.ts';
import { DataError } from './errors.ts';
import { addMany } from './ops.ts';

/** A micro-batch as plain arrays (what data loaders produce and peers can recompute). */
export interface Batch {
  /** Sequences. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  ids: Int32Array; // [B*T]
  targets: Int32Array; // [B*T]
  /** Masked-LM loss weights (0/1); absent for the causal objective. */
  weights?: Float32Array; // [B*T]
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  lr: number;
  step: number;
}

export interface GradientResult {
  /** Mean loss over the micro-batches. */
  loss: number;
  /** Mean gradients; the caller owns (and must dispose) the tensors. */
  grads: Record<string, tf.Tensor>;
}

export function batchTensors(b: Batch): { ids: tf.Tensor2D; targets: HeadTargets } {
  return {
    ids: tf.tensor2d(b.ids, [b.B, b.T], 'int32'),
    targets: {
      targets: tf.tensor2d(b.targets, [b.B, b.T], 'int32'),
      weights: b.weights ? tf.tensor2d(b.weights, [b.B, b.T], 'float32') : undefined,
    },
  };
}

export function validateBatch(b: Batch, c: ModelConfig): void {
  const n = b.B * b.T;
  if (b.T > c.blockSize) throw new DataError(`batch sequence length ${b.T} exceeds blockSize ${c.blockSize}`);
  if (b.ids.length !== n || b.targets.length !== n || (b.weights && b.weights.length !== n)) {
    throw new DataError(`batch arrays must hold B*T = ${n} entries`);
  }
  for (let i = 0; i < n; i++) {
    if (b.ids[i] < 0 || b.ids[i] >= c.vocabSize || b.targets[i] < 0 || b.targets[i] >= c.vocabSize) {
      throw new DataError(`token id out of range [0, ${c.vocabSize}) at position ${i}`);
    }
  }
}

/** A replica's whole state, flat: parameters and AdamW moments in manifest order, and the step count. */
export interface TrainerState {
  step: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export class Trainer {
  readonly manifest: Manifest;
  readonly params: Record<string, tf.Variable> = {};
  readonly optimizer: AdamW;

  constructor(
    readonly model: ModelConfig,
    readonly train: TrainConfig,
    initial?: Float32Array,
  ) {
    this.manifest = buildManifest(parameterSpecs(model));
    const arrays = initial ? sliceFlat(initial, this.manifest) : initParameterArrays(model, train.seed);
    // Variables get engine-generated names: several replicas (tests, local workers) may live in one process.
    tf.tidy(() => {
      for (const e of this.manifest.entries) this.params[e.name] = tf.variable(tf.tensor(arrays.get(e.name)!, e.shape, 'float32'), true);
    });
    this.optimizer = new AdamW(train, this.manifest);
  }

  get step(): number {
    return this.optimizer.step;
  }

  /** Loss and mean gradients over micro-batches (each weighted by its share of the sequences). */
  async computeGradients(microBatches: Batch[]): Promise<GradientResult> {
    if (microBatches.length === 0) throw new DataError('computeGradients needs at least one micro-batch');
    const total = microBatches.reduce((s, b) => s + b.B, 0);
    const names = this.manifest.entries.map((e) => e.name);
    const wrt = names.map((n) => this.params[n]);
    let grads: Record<string, tf.Tensor> | undefined;
    const losses: tf.Scalar[] = [];
    for (const mb of microBatches) {
      const share = mb.B / total;
      const result = tf.tidy(() => {
        const { ids, targets } = batchTensors(mb);
        const f = (...ps: tf.Tensor[]) => modelLoss(this.model, Object.fromEntries(names.map((n, k) => [n, ps[k]])), ids, targets);
        const { value, grads: g } = tf.valueAndGrads(f)(wrt);
        const acc = g.map((gi, k) => (grads ? tf.add(grads[names[k]], tf.mul(gi, share)) : tf.mul(gi, share)));
        return { value: tf.mul(value, share) as tf.Scalar, acc };
      });
      losses.push(result.value);
      if (grads) for (const t of Object.values(grads)) t.dispose();
      grads = Object.fromEntries(names.map((n, k) => [n, result.acc[k]]));
    }
    // One read at the end, so the device is never stalled between micro-batches.
    // Inside a tidy: the pairwise sums between the losses and the total are intermediates to dispose.
    const total_ = tf.tidy(() => addMany(losses));
    const loss = (await total_.data())[0];
    tf.dispose([total_, ...losses]);
    return { loss, grads: grads! };
  }

  /** Clips and applies gradients at the schedule's learning rate; disposes the gradients. */
  async applyGradients(grads: Record<string, tf.Tensor>): Promise<{ gradNorm: number; lr: number }> {
    const lr = learningRate(this.optimizer.step, this.train);
    let norm: tf.Scalar | undefined;
    try {
      norm = clipByGlobalNorm(grads, this.train.gradClip);
      this.optimizer.apply(this.params, grads, lr);
      return { gradNorm: (await norm.data())[0], lr };
    } finally {
      norm?.dispose();
      for (const t of Object.values(grads)) t.dispose();
    }
  }

  /** One optimizer step over the given micro-batches. */
  async trainStep(microBatches: Batch[]): Promise<StepResult> {
    const { loss, grads } = await this.computeGradients(microBatches);
    const { gradNorm, lr } = await this.applyGradients(grads);
    return { loss, gradNorm, lr, step: this.optimizer.step };
  }

  /** Mean loss over batches without gradients. */
  async evalLoss(batches: Batch[]): Promise<number> {
    let sum = 0;
    let count = 0;
    for (const b of batches) {
      const loss = tf.tidy(() => {
        const { ids, targets } = batchTensors(b);
        return modelLoss(this.model, this.params, ids, targets);
      });
      sum += (await loss.data())[0] * b.B;
      loss.dispose();
      count += b.B;
    }
    return sum / Math.max(1, count);
  }

  exportParams(): Promise<Float32Array> {
    return flattenTensors(this.params, this.manifest);
  }

  importParams(flat: Float32Array): void {
    const views = sliceFlat(flat, this.manifest);
    // tidy disposes the temporary tensors; the variables keep their data alive.
    tf.tidy(() => {
      for (const e of this.manifest.entries) this.params[e.name].assign(tf.tensor(views.get(e.name)!, e.shape, 'float32'));
    });
  }

  // ---------------------------------------------------------------- flat-array façade
  // What the coordinator, the peers and the replica workers use: flat Float32Arrays in manifest order, so no
  // code outside the engine creates or disposes a tensor.

  /** computeGradients, flattened: the mean gradient of the micro-batches as one array, and their sequences. */
  async flatGradients(microBatches: Batch[]): Promise<{ loss: number; grads: Float32Array; samples: number }> {
    const { loss, grads } = await this.computeGradients(microBatches);
    try {
      return { loss, grads: await flattenTensors(grads, this.manifest), samples: microBatches.reduce((s, b) => s + b.B, 0) };
    } finally {
      tf.dispose(Object.values(grads));
    }
  }

  /** applyGradients from one flat array (clipped, at the schedule's learning rate). */
  applyFlatGradients(flat: Float32Array): Promise<{ gradNorm: number; lr: number }> {
    return this.applyGradients(unflattenToTensors(flat, this.manifest));
  }

  /** Parameters and AdamW state as flat arrays. */
  async exportState(): Promise<TrainerState> {
    const { step, m, v } = await this.optimizer.exportState();
    return { step, params: await this.exportParams(), m, v };
  }

  importState(s: TrainerState): void {
    this.importParams(s.params);
    this.optimizer.importState(s);
  }

  dispose(): void {
    for (const v of Object.values(this.params)) v.dispose();
    this.optimizer.dispose();
  }
}
