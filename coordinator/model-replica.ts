/**
 * The coordinator's whole-model copy: it takes every round's step exactly as the peers do (so it can serve
 * the state to newcomers), writes checkpoints atomically, resumes from them, evaluates on the held-out split
 * and samples. How a round's averaged vector becomes a step is the GlobalUpdate of the run's mode.
 */
import { existsSync } from 'node:fs';
import { hashFloats } from '../engine/averaging.ts';
import { validationBatches, type BatchSpec } from '../engine/data/batches.ts';
import { buildManifest, type Manifest } from '../engine/flat.ts';
import { generate, heldOutPrompt } from '../engine/generate.ts';
import { parameterSpecs } from '../engine/model.ts';
import { Trainer } from '../engine/trainer.ts';
import type { RunState } from '../net/state-sync.ts';
import type { Clock, Logger } from '../net/types.ts';
import { loadCheckpoint, saveCheckpoint } from '../node/checkpoint-io.ts';
import type { ShardDataset } from '../node/data/shard-dataset.ts';
import type { RunConfig } from '../run/config.ts';
import { AdamWUpdate, OuterNesterovUpdate, type GlobalUpdate } from './global-update.ts';
import { paths, type RunInfo } from './run-dir.ts';

/** Validation micro-batches per evaluation. */
const EVAL_BATCHES = 4;
/** Sampling settings of the coordinator's samples (the CLI's `generate` defaults). */
const SAMPLE = { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 };

export interface ModelReplicaDeps {
  config: RunConfig;
  info: RunInfo;
  configHash: string;
  data: ShardDataset;
  runDir: string;
  clock: Clock;
  log: Logger;
}

export class ModelReplica {
  readonly trainer: Trainer;
  readonly update: GlobalUpdate;
  private readonly config: RunConfig;

  constructor(private readonly d: ModelReplicaDeps) {
    this.config = d.config;
    this.trainer = new Trainer(d.config.model, d.config.train);
    this.update = d.config.mode === 'diloco' ? new OuterNesterovUpdate(this.trainer, d.config) : new AdamWUpdate(this.trainer);
  }

  get manifest(): Manifest {
    return this.trainer.manifest;
  }

  /** Restores the last checkpoint of the run directory; returns its round, or undefined for a new run. */
  async restore(): Promise<number | undefined> {
    const p = paths(this.d.runDir).checkpoint;
    if (!existsSync(p)) {
      if (this.update instanceof OuterNesterovUpdate) await this.update.init();
      return undefined;
    }
    const c = loadCheckpoint(p);
    const round = Number(c.dataPosition.round ?? c.step);
    // Each GlobalUpdate puts the parameters where it keeps them (the trainer, or DiLoCo's global copy and the trainer).
    this.update.restore({ step: c.step, params: c.params, m: c.m, v: c.v });
    this.d.log.info(`resumed from ${p} at round ${round}`);
    return round;
  }

  params(): Promise<Float32Array> {
    return this.update.params();
  }

  async paramHash(): Promise<string> {
    return hashFloats(await this.params());
  }

  /** The whole model's state at the start of `round` (what a data-parallel newcomer adopts). */
  async state(round: number): Promise<RunState> {
    const params = await this.params();
    const { step, optimizer } = await this.update.optimizerState(round);
    return { round, step, params, optimizer, stageFrom: 0, stageTo: this.config.model.nLayer + 2 };
  }

  async checkpoint(round: number, history: Array<[number, number, number | null]>): Promise<void> {
    const s = await this.update.save(round);
    saveCheckpoint(paths(this.d.runDir).checkpoint, {
      model: this.config.model,
      train: this.config.train,
      step: s.step,
      dataPosition: { round, mode: this.config.mode },
      tokenizer: this.d.data.manifest.tokenizer,
      history,
      info: { runId: this.d.info.runId, configHash: this.d.configHash, dataDir: this.d.data.dir, savedAt: new Date(this.d.clock.now()).toISOString() },
      manifest: buildManifest(parameterSpecs(this.config.model)),
      params: s.params,
      m: s.m,
      v: s.v,
    });
  }

  /** Validation loss of the global model on the held-out split. */
  async evaluate(): Promise<number> {
    this.update.syncTrainer();
    const c = this.config;
    const tok = this.d.data.tokenizer;
    const spec: BatchSpec = { B: c.train.microBatchSize, T: c.train.seqLen, objective: c.model.objective, maskProb: c.train.maskProb, maskId: tok.maskId, eosId: tok.eosId, vocabSize: c.model.vocabSize };
    return this.trainer.evalLoss(validationBatches(this.d.data.val, spec, c.train.seed, EVAL_BATCHES));
  }

  /** A sample from the global model (causal models; '' for masked ones). */
  async sample(maxNewTokens: number): Promise<string> {
    if (this.config.model.objective !== 'causal') return '';
    this.update.syncTrainer();
    const tok = this.d.data.tokenizer;
    const prompt = heldOutPrompt(this.d.data.val, tok.eosId);
    const ids = await generate(this.config.model, this.trainer.params, prompt, { maxNewTokens, ...SAMPLE }, tok.maskId);
    return tok.decode([...prompt, ...ids]);
  }

  dispose(): void {
    this.trainer.dispose();
  }
}
