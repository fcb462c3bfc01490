/**
 * Messages between the training process and its replica workers (worker_threads, structured clone; large
 * arrays are transferred, not copied). In-process only: peers on the network speak protocol/.
 */
import type { ModelConfig, TrainConfig } from '../../engine/config.ts';
import type { SampleOptions } from '../../engine/generate.ts';
import type { Batch } from '../../engine/trainer.ts';

export interface ReplicaState {
  step: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export type ReplicaRequest =
  | { op: 'init'; model: ModelConfig; train: TrainConfig; backend: string; state?: ReplicaState }
  | { op: 'grads'; batches: Batch[] }
  | { op: 'apply'; grads: Float32Array }
  | { op: 'eval'; batches: Batch[] }
  | { op: 'state' }
  | { op: 'setState'; state: ReplicaState }
  | { op: 'hash' }
  | { op: 'generate'; prompt: number[]; options: SampleOptions; exclude: number }
  | { op: 'memory' };

export type ReplicaReply =
  | { op: 'init'; backend: string; detail: string }
  | { op: 'grads'; loss: number; grads: Float32Array; sequences: number }
  | { op: 'apply'; gradNorm: number; lr: number; step: number; numTensors: number }
  | { op: 'eval'; loss: number; sequences: number }
  | { op: 'state'; state: ReplicaState }
  | { op: 'setState' }
  | { op: 'hash'; hash: string }
  | { op: 'generate'; ids: number[] }
  | { op: 'memory'; numTensors: number; numBytes: number; heapBytes: number }
  | { op: 'error'; name: string; message: string };

export interface Envelope<T> {
  id: number;
  body: T;
}
