/**
 * One pipeline stage with its own parameters and AdamW state: what a stage peer holds instead of the whole
 * model. Micro-batches pass through it as plain arrays (they arrive from, and leave for, other peers):
 *   forward(input)              -> activations [B, T, C] for the next stage (its input is kept by the caller)
 *   backward(input, gradOutput) -> gradient w.r.t. the input, for the previous stage; the stage's parameter
 *                                  gradients are accumulated here (weighted by the micro-batch's sequences)
 *   lastStage(input, targets)   -> the loss and the input gradient (the stage holding the head)
 * then takeGradients() gives the sample-weighted mean to average with the stage's swarm, and apply() takes
 * the averaged gradient with the global norm every stage's clipping must use (a stage only sees its slice).
 *
 * Layout: the stage's parameters flat in the model's parameter order (so `wte`, when the stage holds it, comes
 * first: the tied embedding is averaged apart, between the first and the last stage).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig, TrainConfig } from './config.ts';
import { ManifestError } from './errors.ts';
import { buildManifest, flattenTensors, sliceFlat, type Manifest } from './flat.ts';
import { initParameterArrays, parameterSpecs, type HeadTargets } from './model.ts';
import { AdamW } from './optimizer.ts';
import { learningRate } from './schedule.ts';
import { Stage, type StageRange } from './stages.ts';

/** What a stage receives: token ids (first stage) or the previous stage's activations. */
export interface StageInput {
  B: number;
  T: number;
  ids?: Int32Array; // [B*T]
  activations?: Float32Array; // [B*T*C]
}

/** The batch's targets, travelling with the micro-batch to the last stage. */
export interface StageTargets {
  targets: Int32Array; // [B*T]
  /** Masked-LM 0/1 loss weights (absent or empty for the causal objective). */
  weights?: Float32Array; // [B*T]
}

/** The manifest of a stage's parameters: the model's order restricted to the stage's names. */
export function stageManifest(c: ModelConfig, r: StageRange): Manifest {
  const names = new Set(new Stage(c, r).names);
  return buildManifest(parameterSpecs(c).filter((p) => names.has(p.name)));
}

/** Copies a stage's parameters (or any same-layout array) out of a whole-model flat array. */
export function gatherStage(full: Float32Array, model: Manifest, stage: Manifest): Float32Array {
  const out = new Float32Array(stage.totalSize);
  const byName = new Map(model.entries.map((e) => [e.name, e]));
  for (const e of stage.entries) {
    const m = byName.get(e.name);
    if (!m) throw new ManifestError(`stage parameter ${e.name} is not in the model`);
    out.set(full.subarray(m.offset, m.offset + m.size), e.offset);
  }
  return out;
}

/** Writes a stage's slice into a whole-model flat array. */
export function scatterStage(stageValues: Float32Array, stage: Manifest, model: Manifest, full: Float32Array): void {
  const byName = new Map(model.entries.map((e) => [e.name, e]));
  for (const e of stage.entries) {
    const m = byName.get(e.name)!;
    full.set(stageValues.subarray(e.offset, e.offset + e.size), m.offset);
  }
}

export class StageTrainer {
  readonly stage: Stage;
  readonly manifest: Manifest;
  readonly params: Record<string, tf.Variable> = {};
  readonly optimizer: AdamW;
  private acc: Record<string, tf.Tensor> = {};
  /** Sequences whose gradients are accumulated since the last takeGradients(). */
  samples = 0;
  /** Sum of sequence-weighted losses seen by the last stage since the last takeGradients(). */
  private lossSum = 0;
  /** Bumped whenever the accumulators are emptied. */
  private generation = 0;

  constructor(
    readonly model: ModelConfig,
    readonly train: TrainConfig,
    readonly range: StageRange,
    initial?: Float32Array,
  ) {
    this.stage = new Stage(model, range);
    this.manifest = stageManifest(model, range);
    if (initial && initial.length !== this.manifest.totalSize) throw new ManifestError(`stage [${range.from}, ${range.to}) has ${this.manifest.totalSize} parameters, got ${initial.length}`);
    const all = initial ? undefined : initParameterArrays(model, train.seed);
    const views = initial ? sliceFlat(initial, this.manifest) : undefined;
    tf.tidy(() => {
      for (const e of this.manifest.entries) this.params[e.name] = tf.variable(tf.tensor(views ? views.get(e.name)! : all!.get(e.name)!, e.shape, 'float32'), true);
    });
    this.optimizer = new AdamW(train, this.manifest);
  }

  get isFirst(): boolean {
    return this.stage.isFirst;
  }

  get isLast(): boolean {
    return this.stage.isLast;
  }

  private inputTensor(x: StageInput): tf.Tensor {
    if (this.isFirst) {
      if (!x.ids || x.ids.length !== x.B * x.T) throw new ManifestError(`the first stage needs ${x.B * x.T} token ids`);
      return tf.tensor2d(x.ids, [x.B, x.T], 'int32');
    }
    const C = this.model.nEmbd;
    if (!x.activations || x.activations.length !== x.B * x.T * C) throw new ManifestError(`stage [${this.range.from}, ${this.range.to}) needs ${x.B * x.T * C} activations`);
    return tf.tensor3d(x.activations, [x.B, x.T, C], 'float32'); // [B, T, C]
  }

  private targetTensors(t: StageTargets, B: number, T: number): HeadTargets {
    return {
      targets: tf.tensor2d(t.targets, [B, T], 'int32'),
      weights: t.weights && t.weights.length ? tf.tensor2d(t.weights, [B, T], 'float32') : undefined,
    };
  }

  /** Activations [B, T, C] this stage hands to the next one. */
  async forward(x: StageInput): Promise<Float32Array> {
    if (this.isLast) throw new ManifestError('the last stage computes its loss with lastStage()');
    const out = tf.tidy(() => this.stage.forward(this.params, this.inputTensor(x)));
    try {
      return (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
  }

  /** Accumulates B · paramGrads and returns the input gradient (undefined on the first stage). */
  private async accumulate(x: StageInput, gradOutput: Float32Array | undefined, t: StageTargets | undefined): Promise<{ gradInput?: Float32Array; loss?: number }> {
    const C = this.model.nEmbd;
    const result = tf.tidy(() => {
      const input = this.inputTensor(x);
      const dy = gradOutput ? tf.tensor3d(gradOutput, [x.B, x.T, C], 'float32') : undefined; // [B, T, C]
      const r = this.stage.backward(this.params, input, dy, t ? this.targetTensors(t, x.B, x.T) : undefined);
      const next: Record<string, tf.Tensor> = {};
      for (const e of this.manifest.entries) {
        const g = tf.mul(r.paramGrads[e.name], x.B);
        next[e.name] = this.acc[e.name] ? tf.add(this.acc[e.name], g) : g;
      }
      return { next, gradInput: r.gradInput, loss: r.loss };
    });
    tf.dispose(Object.values(this.acc));
    this.acc = result.next;
    this.samples += x.B;
    const generation = this.generation;
    try {
      const gradInput = result.gradInput ? ((await result.gradInput.data()) as Float32Array) : undefined;
      const loss = result.loss ? (await result.loss.data())[0] : undefined;
      // Unless the accumulators were taken or dropped while the loss was read back.
      if (loss !== undefined && generation === this.generation) this.lossSum += loss * x.B;
      return { gradInput, loss };
    } finally {
      result.gradInput?.dispose();
      result.loss?.dispose();
    }
  }

  /** Backward through a middle or first stage, given the gradient of its output. */
  async backward(x: StageInput, gradOutput: Float32Array): Promise<Float32Array | undefined> {
    if (this.isLast) throw new ManifestError('the last stage computes its gradients with lastStage()');
    return (await this.accumulate(x, gradOutput, undefined)).gradInput;
  }

  /** The last stage: loss of the micro-batch and the gradient w.r.t. its input (undefined when it is also the first). */
  async lastStage(x: StageInput, t: StageTargets): Promise<{ loss: number; gradInput?: Float32Array }> {
    if (!this.isLast) throw new ManifestError('only the last stage holds the head');
    const r = await this.accumulate(x, undefined, t);
    return { loss: r.loss!, gradInput: r.gradInput };
  }

  /**
   * The sample-weighted mean of the accumulated gradients (flat, stage layout), the number of sequences behind
   * it, and (last stage) their mean loss; resets the accumulators.
   */
  async takeGradients(): Promise<{ values: Float32Array; samples: number; loss: number }> {
    const samples = this.samples;
    const loss = samples ? this.lossSum / samples : 0;
    if (samples === 0) {
      this.discardGradients();
      return { values: new Float32Array(this.manifest.totalSize), samples, loss };
    }
    // Taken and reset before the first await: what accumulates meanwhile belongs to the next call.
    const mean = tf.tidy(() => Object.fromEntries(Object.entries(this.acc).map(([k, g]) => [k, tf.div(g, samples)])));
    this.discardGradients();
    try {
      return { values: await flattenTensors(mean, this.manifest), samples, loss };
    } finally {
      tf.dispose(Object.values(mean));
    }
  }

  /**
   * Drops what was accumulated (an abandoned attempt). Accumulating is synchronous once a backward pass has
   * computed its gradients, so a call here never cuts one in half.
   */
  discardGradients(): void {
    this.generation++;
    tf.dispose(Object.values(this.acc));
    this.acc = {};
    this.samples = 0;
    this.lossSum = 0;
  }

  /**
   * One AdamW step with the averaged gradient (stage layout), clipped as the whole model's gradient would be:
   * scale = min(1, gradClip / (gradNorm + 1e-6)), computed in float32 as clipByGlobalNorm does, so a stage
   * peer and a whole-model replica given the same numbers take bit-identical steps.
   */
  apply(grads: Float32Array, gradNorm: number): { lr: number } {
    if (grads.length !== this.manifest.totalSize) throw new ManifestError(`stage gradient has ${grads.length} values, expected ${this.manifest.totalSize}`);
    const lr = learningRate(this.optimizer.step, this.train);
    const views = sliceFlat(grads, this.manifest);
    const clip = this.train.gradClip;
    const g = tf.tidy(() => {
      const scale = clip > 0 ? tf.minimum(1, tf.div(clip, tf.add(tf.scalar(gradNorm, 'float32'), 1e-6))) : undefined;
      return Object.fromEntries(
        this.manifest.entries.map((e) => {
          const t = tf.tensor(views.get(e.name)!, e.shape, 'float32');
          return [e.name, scale ? tf.mul(t, scale) : t];
        }),
      );
    });
    try {
      this.optimizer.apply(this.params, g, lr);
    } finally {
      tf.dispose(Object.values(g));
    }
    return { lr };
  }

  exportParams(): Promise<Float32Array> {
    return flattenTensors(this.params, this.manifest);
  }

  importParams(flat: Float32Array): void {
    if (flat.length !== this.manifest.totalSize) throw new ManifestError(`stage has ${this.manifest.totalSize} parameters, got ${flat.length}`);
    const views = sliceFlat(flat, this.manifest);
    tf.tidy(() => {
      for (const e of this.manifest.entries) this.params[e.name].assign(tf.tensor(views.get(e.name)!, e.shape, 'float32'));
    });
  }

  dispose(): void {
    this.discardGradients();
    for (const v of Object.values(this.params)) v.dispose();
    this.optimizer.dispose();
  }
}
