/**
 * The libp2p node of a Node peer or coordinator: TCP and WebSockets listeners (browser tabs join over
 * WebSockets), noise encryption, yamux multiplexing, identify, ping and gossipsub.
 * Settings measured on this project's machines (shared/FACTS.md):
 *  - the connection manager's default admits 5 inbound connections per second per IP; local peers (and every
 *    peer behind one NAT) exceed it, so the threshold is raised;
 *  - the connection monitor aborts a connection when a ping times out, which a large transfer provokes; an
 *    8-peer mesh lost every connection after one round, so a slow ping no longer aborts;
 *  - gossipsub signs every message (StrictSign) so receivers know the author; its payloads stay small (our
 *    GOSSIP_MAX_BYTES), tensors travel over streams.
 */
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { ping } from '@libp2p/ping';
import { gossipsub } from '@libp2p/gossipsub';
import type { PrivateKey } from '@libp2p/interface';
import { GOSSIP_MAX_BYTES } from '../../protocol/index.ts';

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
    connectionManager: { inboundConnectionThreshold: 1000, maxConnections: 512 },
    connectionMonitor: { abortConnectionOnPingFailure: false },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        globalSignaturePolicy: 'StrictSign',
        maxInboundDataLength: GOSSIP_MAX_BYTES + 64 * 1024,
        // Small runs: every peer should hear every announcement even before the mesh forms.
        floodPublish: true,
        doPX: false,
      }),
    },
  });
  return node as unknown as PeertrainLibp2p;
}
