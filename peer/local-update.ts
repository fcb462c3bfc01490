/**
 * What a data-parallel peer contributes to a round and how it takes the averaged result — one part per
 * averaging mode, instead of mode branches: sync computes gradients on its micro-batches and applies the
 * averaged gradient with AdamW; DiLoCo takes H local AdamW steps, contributes its pseudo-gradient (global −
 * local) and takes the outer Nesterov step from the round's exact global parameters.
 */
import { OuterNesterov, pseudoGradient } from '../engine/outer-optimizer.ts';
import type { Batch } from '../engine/trainer.ts';
import type { RunState } from '../net/state-sync.ts';
import type { RunConfig } from '../run/config.ts';
import type { PeerReplica } from './replica.ts';

export interface Contribution {
  values: Float32Array;
  samples: number;
  loss: number;
  /** DiLoCo: the global parameters the round started from. */
  global?: Float32Array;
}

export interface LocalUpdate {
  /** Computes this round's contribution; `batches(inner)` are the micro-batches of inner step `inner`. */
  contribute(replica: PeerReplica, batches: (inner: number) => Batch[]): Promise<Contribution>;
  /** Takes the round's averaged vector. */
  apply(replica: PeerReplica, avg: Float32Array, c: Contribution): Promise<void>;
  /** Adopts the coordinator's state. */
  adopt(replica: PeerReplica, s: RunState): Promise<void>;
}

export function localUpdateFor(config: RunConfig): LocalUpdate {
  return config.mode === 'diloco' ? new DilocoUpdate(config) : new SyncUpdate();
}

class SyncUpdate implements LocalUpdate {
  async contribute(replica: PeerReplica, batches: (inner: number) => Batch[]): Promise<Contribution> {
    const g = await replica.gradients(batches(0));
    return { values: g.grads, samples: g.samples, loss: g.loss };
  }

  async apply(replica: PeerReplica, avg: Float32Array): Promise<void> {
    await replica.apply(avg);
  }

  async adopt(replica: PeerReplica, s: RunState): Promise<void> {
    const n = s.params.length;
    await replica.setState({ step: s.step, params: s.params, m: s.optimizer.subarray(0, n), v: s.optimizer.subarray(n) });
  }
}

class DilocoUpdate implements LocalUpdate {
  private outer?: OuterNesterov;

  constructor(private readonly config: RunConfig) {}

  async contribute(replica: PeerReplica, batches: (inner: number) => Batch[]): Promise<Contribution> {
    const c = this.config;
    const start = await replica.state();
    const global = Float32Array.from(start.params);
    let loss = 0;
    let sequences = 0;
    for (let h = 0; h < c.innerSteps; h++) {
      const b = batches(h);
      sequences += b.reduce((s, x) => s + x.B, 0);
      loss += (await replica.step(b)).loss;
    }
    const local = await replica.state();
    return { values: pseudoGradient(global, local.params), samples: sequences, loss: loss / c.innerSteps, global };
  }

  async apply(replica: PeerReplica, avg: Float32Array, c: Contribution): Promise<void> {
    // The outer step starts from the exact global parameters of the round's start (kept, not rebuilt from
    // local + Δ, which rounds differently on each peer); the inner optimizer state stays local.
    const s = await replica.state();
    const global = Float32Array.from(c.global!);
    this.outer!.step(global, avg);
    await replica.setState({ ...s, params: global });
  }

  async adopt(replica: PeerReplica, s: RunState): Promise<void> {
    const n = s.params.length;
    this.outer = new OuterNesterov(this.config.outer, n, s.optimizer.length === n ? s.optimizer : undefined);
    const mine = await replica.state();
    await replica.setState({ ...mine, params: s.params });
  }
}
