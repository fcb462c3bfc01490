/**
 * Pipeline stages: a contiguous range of the model's parts that runs on its own.
 *   forward(input)                -> output      (ids [B,T] -> x [B,T,C] -> … -> loss scalar)
 *   backward(input, gradOutput)   -> { gradInput, paramGrads }
 * backward recomputes the stage's forward under the tape (activation recomputation), so a stage keeps nothing
 * between the two calls but its input. Running every stage in turn gives the whole model's loss and gradients.
 *
 * The LM head is tied to wte, which the `embed` part owns. A stage holding the head but not the embedding keeps
 * its own copy of wte and reports its gradient; the pipeline adds the two gradients of wte (as Megatron does for
 * tied embeddings across stages).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from './config.ts';
import { ConfigError } from './errors.ts';
import { attentionBias, blockForward, embedForward, headLoss, partNames, partParamNames, type HeadTargets, type ParamMap } from './model.ts';

export interface StageRange {
  /** Index of the first part (0 = embed). */
  from: number;
  /** One past the last part. */
  to: number;
}

export interface StageGradients {
  /** Gradient w.r.t. the stage input (undefined for the embedding stage, whose input is token ids). */
  gradInput?: tf.Tensor3D;
  paramGrads: ParamMap;
  /** The last stage's loss, computed on the way (the caller owns it); undefined for other stages. */
  loss?: tf.Scalar;
}

/** Splits the nLayer + 2 parts into `stages` contiguous ranges of near-equal part counts. */
export function evenStageRanges(c: ModelConfig, stages: number): StageRange[] {
  const parts = partNames(c).length;
  if (!Number.isInteger(stages) || stages < 1 || stages > parts) {
    throw new ConfigError(`stages must be an integer in [1, ${parts}] for ${c.nLayer} layers, got ${stages}`, 'stages');
  }
  const ranges: StageRange[] = [];
  let from = 0;
  for (let s = 0; s < stages; s++) {
    const to = Math.round(((s + 1) * parts) / stages);
    ranges.push({ from, to });
    from = to;
  }
  return ranges;
}

/** Names of the parameters a stage reads (wte twice-owned when the head sits apart from the embedding). */
export function stageParamNames(c: ModelConfig, r: StageRange): string[] {
  const parts = partNames(c);
  const names = parts.slice(r.from, r.to).flatMap((p) => partParamNames(c, p));
  if (r.to === parts.length && r.from > 0) names.push('wte');
  return names;
}

export class Stage {
  readonly names: string[];
  readonly isFirst: boolean;
  readonly isLast: boolean;

  constructor(
    readonly config: ModelConfig,
    readonly range: StageRange,
  ) {
    const parts = partNames(config).length;
    if (range.from < 0 || range.to > parts || range.from >= range.to) {
      throw new ConfigError(`stage range [${range.from}, ${range.to}) is outside the model's ${parts} parts`, 'stages');
    }
    this.names = stageParamNames(config, range);
    this.isFirst = range.from === 0;
    this.isLast = range.to === parts;
  }

  /** Runs the stage: ids [B,T] or x [B,T,C] in; x [B,T,C] or (last stage) the loss out. */
  forward(params: ParamMap, input: tf.Tensor, targets?: HeadTargets): tf.Tensor {
    const c = this.config;
    const parts = partNames(c);
    let x: tf.Tensor = input;
    const T = input.shape[1] as number;
    const bias = attentionBias(c, T);
    for (let i = this.range.from; i < this.range.to; i++) {
      const part = parts[i];
      if (part === 'embed') x = embedForward(c, params, x as tf.Tensor2D);
      else if (part === 'head') {
        if (!targets) throw new ConfigError('the last stage needs targets to compute the loss', 'targets');
        x = headLoss(params, x as tf.Tensor3D, targets);
      } else x = blockForward(c, params, i - 1, x as tf.Tensor3D, bias);
    }
    return x;
  }

  /**
   * Gradients of the stage: for the last stage of the loss (gradOutput omitted = 1), otherwise of
   * sum(output * gradOutput). Returned tensors belong to the caller.
   */
  backward(params: ParamMap, input: tf.Tensor, gradOutput?: tf.Tensor, targets?: HeadTargets): StageGradients {
    const names = this.names;
    const wrt = names.map((n) => params[n]);
    const differentiableInput = !this.isFirst;
    const f = (...xs: tf.Tensor[]) => {
      const local: ParamMap = { ...params };
      const offset = differentiableInput ? 1 : 0;
      names.forEach((n, k) => (local[n] = xs[k + offset]));
      return this.forward(local, differentiableInput ? xs[0] : input, targets);
    };
    const xs = differentiableInput ? [input, ...wrt] : wrt;
    const { value, grads } = tf.valueAndGrads(f)(xs, gradOutput);
    const paramGrads: ParamMap = {};
    const offset = differentiableInput ? 1 : 0;
    names.forEach((n, k) => (paramGrads[n] = grads[k + offset]));
    let loss: tf.Scalar | undefined;
    if (this.isLast) loss = value as tf.Scalar;
    else value.dispose();
    return { gradInput: differentiableInput ? (grads[0] as tf.Tensor3D) : undefined, paramGrads, loss };
  }
}
