/**
 * A PeerReplica over one in-thread engine Trainer: what a browser worker trains with (a Node peer uses its
 * replica workers instead). The peer runtime sees flat arrays only (the engine's flat façade).
 */
import { Trainer, type Batch } from '../engine/trainer.ts';
import type { RunConfig } from '../run/config.ts';
import type { PeerReplica } from './replica.ts';

export function trainerReplica(config: RunConfig): PeerReplica & { trainer: Trainer } {
  const trainer = new Trainer(config.model, config.train);
  return {
    trainer,
    gradients: (batches: Batch[]) => trainer.flatGradients(batches),
    apply: (grads: Float32Array) => trainer.applyFlatGradients(grads),
    step: (batches: Batch[]) => trainer.trainStep(batches),
    state: () => trainer.exportState(),
    async setState(s) {
      trainer.importState(s);
    },
    async stop() {
      trainer.dispose();
    },
  };
}
