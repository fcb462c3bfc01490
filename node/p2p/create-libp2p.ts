/**
 * The libp2p node of a Node peer or coordinator: TCP and WebSockets listeners (browser tabs join over
 * WebSockets), noise encryption, yamux multiplexing, identify, ping, and the shared peertrain settings and
 * gossipsub (net/libp2p-options.ts).
 */
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { ping } from '@libp2p/ping';
import type { gossipsub } from '@libp2p/gossipsub';
import type { PrivateKey } from '@libp2p/interface';
import { connectionManagerOptions, connectionMonitorOptions, peertrainGossipsub } from '../../net/libp2p-options.ts';

export interface CreateNodeOptions {
  /** Multiaddrs to listen on, e.g. /ip4/127.0.0.1/tcp/0 and /ip4/127.0.0.1/tcp/0/ws. */
  listen: string[];
  /** A persistent identity (the coordinator keeps its peer id across restarts). */
  privateKey?: PrivateKey;
}

export type PeertrainLibp2p = Libp2p<{ identify: unknown; ping: unknown; pubsub: ReturnType<ReturnType<typeof gossipsub>> }>;

export async function createPeertrainLibp2p(o: CreateNodeOptions): Promise<PeertrainLibp2p> {
  const node = await createLibp2p({
    privateKey: o.privateKey,
    addresses: { listen: o.listen },
    transports: [tcp(), webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: connectionManagerOptions,
    connectionMonitor: connectionMonitorOptions,
    services: { identify: identify(), ping: ping(), pubsub: peertrainGossipsub() },
  });
  return node as unknown as PeertrainLibp2p;
}
