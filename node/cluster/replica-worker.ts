/**
 * A replica worker: one thread, one TF.js backend, one full copy of the model and optimizer. It computes
 * gradients on the batches it is given and applies the averaged gradients it is sent, so every replica takes
 * the identical step. Requests are answered in order; errors are replies, never crashes.
 */
import { parentPort } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import { hashFloats } from '../../engine/averaging.ts';
import { generate } from '../../engine/generate.ts';
import { Trainer } from '../../engine/trainer.ts';
import { selectBackend } from '../backend.ts';
import type { Envelope, ReplicaReply, ReplicaRequest } from './messages.ts';

let trainer: Trainer | undefined;

function need(): Trainer {
  if (!trainer) throw new Error('replica is not initialised');
  return trainer;
}

async function handle(req: ReplicaRequest): Promise<{ reply: ReplicaReply; transfer?: ArrayBuffer[] }> {
  switch (req.op) {
    case 'init': {
      const choice = await selectBackend(req.backend);
      trainer?.dispose();
      trainer = new Trainer(req.model, req.train, req.state?.params);
      if (req.state) trainer.optimizer.importState(req.state);
      return { reply: { op: 'init', backend: choice.name, detail: choice.detail } };
    }
    case 'grads': {
      const t = need();
      const { loss, grads: flat, samples: sequences } = await t.flatGradients(req.batches);
      return { reply: { op: 'grads', loss, grads: flat, sequences }, transfer: [flat.buffer as ArrayBuffer] };
    }
    case 'apply': {
      const t = need();
      const { gradNorm, lr } = await t.applyFlatGradients(req.grads);
      return { reply: { op: 'apply', gradNorm, lr, step: t.step, numTensors: tf.memory().numTensors } };
    }
    case 'eval': {
      const sequences = req.batches.reduce((s, b) => s + b.B, 0);
      return { reply: { op: 'eval', loss: await need().evalLoss(req.batches), sequences } };
    }
    case 'state': {
      const t = need();
      const { step, params, m, v } = await t.exportState();
      return { reply: { op: 'state', state: { step, params, m, v } }, transfer: [params.buffer as ArrayBuffer, m.buffer as ArrayBuffer, v.buffer as ArrayBuffer] };
    }
    case 'setState': {
      const t = need();
      t.importState(req.state);
      return { reply: { op: 'setState' } };
    }
    case 'hash':
      return { reply: { op: 'hash', hash: hashFloats(await need().exportParams()) } };
    case 'generate': {
      const t = need();
      return { reply: { op: 'generate', ids: await generate(t.model, t.params, req.prompt, req.options, req.exclude) } };
    }
    case 'memory': {
      const m = tf.memory() as tf.MemoryInfo & { numBytesInGPU?: number };
      return { reply: { op: 'memory', numTensors: m.numTensors, numBytes: m.numBytes, heapBytes: process.memoryUsage().rss } };
    }
  }
}

if (!parentPort) throw new Error('replica-worker must run in a worker thread');
const port = parentPort;
// One request at a time, in arrival order: a step's grads must finish before its apply.
let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: Envelope<ReplicaRequest>) => {
  queue = queue.then(async () => {
    try {
      const { reply, transfer } = await handle(msg.body);
      port.postMessage({ id: msg.id, body: reply }, transfer ?? []);
    } catch (err) {
      const e = err as Error;
      port.postMessage({ id: msg.id, body: { op: 'error', name: e.name ?? 'Error', message: e.message ?? String(err) } });
    }
  });
});
