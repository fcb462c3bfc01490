/**
 * The peer runtime, the same in a Node process and a browser tab's worker: peer.ts (lifecycle, heartbeat,
 * gossip routing, one work queue, reconnects), join.ts (handshake, welcome checks, data), and a PeerMode per
 * parallelism — data-parallel-mode.ts (a whole-model replica; a LocalUpdate per mode, sync or DiLoCo) and
 * pipeline/stage-mode.ts (one stage: stage-peer.ts, its attempts and activation links). Platform-free: the
 * entry point supplies libp2p, the pubsub service and the replica.
 *
 *   const peer = new PeerRuntime({ libp2p, pubsub: libp2p.services.pubsub, coordinatorAddrs, token,
 *     kind: 'node', backend: 'wasm', makeReplica: async (config) => trainerReplica(config), log, clock });
 *   await peer.start();
 */
export { PeerRuntime, JoinRefusedError, type PeerOptions, type PeerProgress } from './peer.ts';
export type { PeerMode, PeerModeContext } from './peer-mode.ts';
export type { PeerReplica } from './replica.ts';
export { trainerReplica } from './trainer-replica.ts';
