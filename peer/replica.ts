/**
 * What a peer trains with, as flat arrays: a Node peer uses its replica workers (node/cluster), a browser tab
 * its in-thread Trainer (trainer-replica.ts). The peer runtime never touches a tensor.
 */
import type { Batch, TrainerState } from '../engine/trainer.ts';

export interface PeerReplica {
  gradients(batches: Batch[]): Promise<{ loss: number; grads: Float32Array; samples: number }>;
  apply(grads: Float32Array): Promise<unknown>;
  /** One local optimizer step (DiLoCo's inner steps). */
  step(batches: Batch[]): Promise<{ loss: number }>;
  state(): Promise<TrainerState>;
  setState(s: TrainerState): Promise<void>;
  stop(): Promise<void>;
}
