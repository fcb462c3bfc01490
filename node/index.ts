/**
 * The Node platform, supplied from the side to the entry points and the coordinator: TF.js backend choice
 * (backend.ts: tensorflow → webgpu via Dawn → wasm → cpu), the libp2p node for Node (p2p/), files
 * (checkpoint-io.ts, data/: readers, prepare, shard datasets, the built-in corpus) and replica workers
 * (cluster/: one engine replica per worker thread). It imports no command.
 *
 *   const backend = await selectBackend('auto');
 *   const libp2p = await createPeertrainLibp2p({ listen: ['/ip4/127.0.0.1/tcp/0'] });
 *   const group = await ReplicaGroup.start({ workers: 2, backend: backend.name, model, train });
 */
export { selectBackend, BACKENDS } from './backend.ts';
export { createPeertrainLibp2p, type PeertrainLibp2p } from './p2p/create-libp2p.ts';
export { parseListen } from './p2p/listen.ts';
export { saveCheckpoint, loadCheckpoint } from './checkpoint-io.ts';
export { ReplicaGroup } from './cluster/replica-group.ts';
export { resolveData } from './data/data-source.ts';
export { openShardDataset, type ShardDataset } from './data/shard-dataset.ts';
