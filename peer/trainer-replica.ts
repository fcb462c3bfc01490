/**
 * A PeerReplica over one in-thread engine Trainer: what a browser worker trains with (a Node peer uses its
 * replica workers instead). Tensors never leave this module: the peer runtime sees flat arrays.
 */
import * as tf from '@tensorflow/tfjs-core';
import { flattenTensors, sliceFlat } from '../engine/flat.ts';
import { Trainer, type Batch } from '../engine/trainer.ts';
import type { RunConfig } from '../run/config.ts';
import type { PeerReplica } from './peer.ts';

export function trainerReplica(config: RunConfig): PeerReplica & { trainer: Trainer } {
  const trainer = new Trainer(config.model, config.train);
  const toTensors = (flat: Float32Array) => {
    const views = sliceFlat(flat, trainer.manifest);
    return Object.fromEntries(trainer.manifest.entries.map((e) => [e.name, tf.tensor(views.get(e.name)!, e.shape, 'float32')]));
  };
  return {
    trainer,
    async gradients(batches: Batch[]) {
      const { loss, grads } = await trainer.computeGradients(batches);
      try {
        return { loss, grads: await flattenTensors(grads, trainer.manifest), samples: batches.reduce((s, b) => s + b.B, 0) };
      } finally {
        tf.dispose(Object.values(grads));
      }
    },
    async apply(grads: Float32Array) {
      return trainer.applyGradients(toTensors(grads));
    },
    async step(batches: Batch[]) {
      return trainer.trainStep(batches);
    },
    async state() {
      const { step, m, v } = await trainer.optimizer.exportState();
      return { step, params: await trainer.exportParams(), m, v };
    },
    async setState(s) {
      trainer.importParams(s.params);
      trainer.optimizer.importState(s);
    },
    async stop() {
      trainer.dispose();
    },
  };
}
