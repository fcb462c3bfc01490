/**
 * Local data parallelism: N replica workers (one per CPU core by default) train one model. Each step, every
 * worker computes gradients on its share of the micro-batches; the group averages them (weighted by
 * sequences) and sends the mean back; every worker applies the same update, so replicas stay bit-identical.
 * The WASM backend runs on one thread in Node, so this is how a CPU peer uses all its cores.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { weightedMean } from '../../engine/averaging.ts';
import type { ModelConfig, TrainConfig } from '../../engine/config.ts';
import type { SampleOptions } from '../../engine/generate.ts';
import type { Batch } from '../../engine/trainer.ts';
import { prepareProcessForBackend } from '../backend.ts';
import type { Envelope, ReplicaReply, ReplicaRequest, ReplicaState } from './messages.ts';

/** Thrown when a replica worker fails, exits, or answers with an error. */
export class ReplicaError extends Error {
  override name = 'ReplicaError' as const;
}

type ReplyOf<K extends ReplicaReply['op']> = Extract<ReplicaReply, { op: K }>;

const REGISTER = fileURLToPath(new URL('../../bin/register.js', import.meta.url));
const WORKER = new URL('./replica-worker.ts', import.meta.url);

class ReplicaHandle {
  private nextId = 1;
  private pending = new Map<number, { resolve: (r: ReplicaReply) => void; reject: (e: Error) => void }>();
  private dead?: Error;

  constructor(
    readonly index: number,
    private readonly worker: Worker,
  ) {
    worker.on('message', (msg: Envelope<ReplicaReply>) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.body.op === 'error') p.reject(new ReplicaError(`replica ${index}: ${msg.body.name}: ${msg.body.message}`));
      else p.resolve(msg.body);
    });
    const fail = (err: Error) => {
      this.dead = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', (err) => fail(new ReplicaError(`replica ${index} crashed: ${err.message}`)));
    worker.on('exit', (code) => fail(new ReplicaError(`replica ${index} exited with code ${code}`)));
  }

  call<K extends ReplicaRequest['op']>(body: Extract<ReplicaRequest, { op: K }>, transfer: ArrayBuffer[] = []): Promise<ReplyOf<K>> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: ReplicaReply) => void, reject });
      this.worker.postMessage({ id, body }, transfer);
    });
  }

  async terminate(): Promise<void> {
    this.dead ??= new ReplicaError(`replica ${this.index} was stopped`);
    await this.worker.terminate();
  }
}

export interface ReplicaGroupOptions {
  workers: number;
  backend: string;
  model: ModelConfig;
  train: TrainConfig;
  /** Parameters and optimizer state to start from (a checkpoint); fresh init from the seed when absent. */
  state?: ReplicaState;
}

export interface GroupStepResult {
  loss: number;
  gradNorm: number;
  lr: number;
  step: number;
  /** Live tensors in replica 0 after the step (constant across steps when nothing leaks). */
  numTensors: number;
}

export class ReplicaGroup {
  private constructor(
    private readonly replicas: ReplicaHandle[],
    readonly backend: string,
    readonly backendDetail: string,
  ) {}

  get size(): number {
    return this.replicas.length;
  }

  static async start(o: ReplicaGroupOptions): Promise<ReplicaGroup> {
    if (!Number.isInteger(o.workers) || o.workers < 1) throw new ReplicaError(`workers must be a positive integer, got ${o.workers}`);
    prepareProcessForBackend(o.backend);
    const replicas = Array.from({ length: o.workers }, (_, i) => {
      const worker = new Worker(WORKER, { execArgv: ['--import', REGISTER], stdout: false, stderr: false });
      return new ReplicaHandle(i, worker);
    });
    try {
      const inits = await Promise.all(replicas.map((r) => r.call({ op: 'init', model: o.model, train: o.train, backend: o.backend, state: o.state })));
      return new ReplicaGroup(replicas, inits[0].backend, inits[0].detail);
    } catch (err) {
      await Promise.all(replicas.map((r) => r.terminate()));
      throw err;
    }
  }

  /**
   * Mean gradient of the micro-batches, computed in parallel: micro-batches are dealt round-robin and the
   * workers' means are averaged weighted by sequences. Nothing is applied.
   */
  async gradients(microBatches: Batch[]): Promise<{ loss: number; grads: Float32Array; samples: number }> {
    if (microBatches.length === 0) throw new ReplicaError('gradients need at least one micro-batch');
    const shares: Batch[][] = this.replicas.map(() => []);
    microBatches.forEach((b, i) => shares[i % shares.length].push(b));
    const busy = this.replicas.filter((_, i) => shares[i].length > 0);
    const results = await Promise.all(busy.map((r) => r.call({ op: 'grads', batches: shares[r.index] })));
    const grads = weightedMean(results.map((r) => ({ values: r.grads, weight: r.sequences })));
    const samples = results.reduce((s, r) => s + r.sequences, 0);
    const loss = results.reduce((s, r) => s + r.loss * r.sequences, 0) / samples;
    return { loss, grads, samples };
  }

  /** Every worker applies the same (averaged) gradient: clipping, AdamW at the schedule's learning rate. */
  async apply(grads: Float32Array): Promise<{ gradNorm: number; lr: number; step: number; numTensors: number }> {
    // Each worker gets its own copy (the last one takes a copy by transfer too: the caller keeps `grads`).
    const applied = await Promise.all(
      this.replicas.map((r) => {
        const copy = grads.slice();
        return r.call({ op: 'apply', grads: copy }, [copy.buffer as ArrayBuffer]);
      }),
    );
    return applied[0];
  }

  /** One synchronous data-parallel step over the micro-batches. */
  async step(microBatches: Batch[]): Promise<GroupStepResult> {
    const { loss, grads } = await this.gradients(microBatches);
    const a = await this.apply(grads);
    return { loss, gradNorm: a.gradNorm, lr: a.lr, step: a.step, numTensors: a.numTensors };
  }

  /** Replaces every worker's parameters and optimizer state (a state sync or a DiLoCo outer step). */
  async setState(state: ReplicaState): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.call({ op: 'setState', state })));
  }

  /** Mean loss over batches, computed in parallel. */
  async evalLoss(batches: Batch[]): Promise<number> {
    const shares: Batch[][] = this.replicas.map(() => []);
    batches.forEach((b, i) => shares[i % shares.length].push(b));
    const results = await Promise.all(this.replicas.filter((r) => shares[r.index].length).map((r) => r.call({ op: 'eval', batches: shares[r.index] })));
    const total = results.reduce((s, r) => s + r.sequences, 0);
    return results.reduce((s, r) => s + r.loss * r.sequences, 0) / Math.max(1, total);
  }

  async state(): Promise<ReplicaState> {
    return (await this.replicas[0].call({ op: 'state' })).state;
  }

  /** Parameter hash of every replica (all equal while replicas are in sync). */
  async hashes(): Promise<string[]> {
    return Promise.all(this.replicas.map(async (r) => (await r.call({ op: 'hash' })).hash));
  }

  async generate(prompt: number[], options: SampleOptions, exclude = -1): Promise<number[]> {
    return (await this.replicas[0].call({ op: 'generate', prompt, options, exclude })).ids;
  }

  async memory(): Promise<ReplyOf<'memory'>[]> {
    return Promise.all(this.replicas.map((r) => r.call({ op: 'memory' })));
  }

  async stop(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.terminate()));
  }
}
