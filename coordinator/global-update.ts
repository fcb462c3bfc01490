/**
 * How the coordinator's copy of the model takes a round's averaged vector — one part per averaging mode,
 * instead of mode branches: sync applies the averaged gradient with AdamW (the trainer's own optimizer);
 * DiLoCo keeps the global parameters apart from the trainer and takes an outer Nesterov step with the averaged
 * pseudo-gradient. Each also says what its state is (for newcomers and checkpoints).
 */
import { OuterNesterov } from '../engine/outer-optimizer.ts';
import type { Trainer } from '../engine/trainer.ts';
import type { RunConfig } from '../run/config.ts';

/** What a checkpoint holds of the optimizer: AdamW's moments, or DiLoCo's momentum where m sits (v zero). */
export interface SavedOptimizer {
  step: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export interface GlobalUpdate {
  /** The run's global parameters. */
  params(): Promise<Float32Array>;
  /** Applies a round's averaged vector; returns the gradient norm it clipped by, where it clips. */
  apply(avg: Float32Array): Promise<{ gradNorm?: number }>;
  /**
   * The optimizer state served to a newcomer at `round`: its step and one flat vector (AdamW m then v; DiLoCo
   * momentum).
   */
  optimizerState(round: number): Promise<{ step: number; optimizer: Float32Array }>;
  /** The arrays a checkpoint at `round` stores. */
  save(round: number): Promise<SavedOptimizer>;
  /** Restores from a checkpoint. */
  restore(c: SavedOptimizer): void;
  /** Makes the trainer hold the global parameters (before evaluating or sampling with it). */
  syncTrainer(): void;
}

/** Sync mode (and pipelines): the trainer is the global model, its AdamW the optimizer. */
export class AdamWUpdate implements GlobalUpdate {
  constructor(private readonly trainer: Trainer) {}

  params(): Promise<Float32Array> {
    return this.trainer.exportParams();
  }

  async apply(avg: Float32Array): Promise<{ gradNorm: number }> {
    const { gradNorm } = await this.trainer.applyFlatGradients(avg);
    return { gradNorm };
  }

  async optimizerState(): Promise<{ step: number; optimizer: Float32Array }> {
    const s = await this.trainer.optimizer.exportState();
    const optimizer = new Float32Array(s.m.length + s.v.length);
    optimizer.set(s.m);
    optimizer.set(s.v, s.m.length);
    return { step: s.step, optimizer };
  }

  save(): Promise<SavedOptimizer> {
    return this.trainer.exportState();
  }

  restore(c: SavedOptimizer): void {
    this.trainer.importState(c);
  }

  syncTrainer(): void {}
}

/** DiLoCo: global parameters and the outer momentum live here; the trainer only evaluates and samples. */
export class OuterNesterovUpdate implements GlobalUpdate {
  private global!: Float32Array;
  private outer!: OuterNesterov;

  constructor(
    private readonly trainer: Trainer,
    private readonly config: RunConfig,
  ) {}

  /** Starts from the trainer's initial parameters (a new run). */
  async init(): Promise<void> {
    this.global = await this.trainer.exportParams();
    this.outer = new OuterNesterov(this.config.outer, this.global.length);
  }

  async params(): Promise<Float32Array> {
    return this.global;
  }

  async apply(avg: Float32Array): Promise<{ gradNorm?: number }> {
    this.outer.step(this.global, avg);
    return {};
  }

  async optimizerState(round: number): Promise<{ step: number; optimizer: Float32Array }> {
    // DiLoCo's outer step count is the round.
    return { step: round, optimizer: this.outer.velocity };
  }

  async save(round: number): Promise<SavedOptimizer> {
    return { step: round, params: this.global, m: this.outer.velocity, v: new Float32Array(this.global.length) };
  }

  restore(c: SavedOptimizer): void {
    this.trainer.importParams(c.params);
    this.global = Float32Array.from(c.params);
    this.outer = new OuterNesterov(this.config.outer, c.params.length, c.m);
  }

  syncTrainer(): void {
    this.trainer.importParams(this.global);
  }
}
