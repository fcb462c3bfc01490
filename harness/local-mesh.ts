/** Real libp2p nodes on 127.0.0.1 for multi-peer tests, connected in a full mesh and stopped afterwards. */
import { createPeertrainLibp2p, type PeertrainLibp2p } from '../node/p2p/create-libp2p.ts';

export async function startNodes(n: number): Promise<PeertrainLibp2p[]> {
  const nodes = await Promise.all(Array.from({ length: n }, () => createPeertrainLibp2p({ listen: ['/ip4/127.0.0.1/tcp/0'] })));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      await nodes[i].peerStore.merge(nodes[j].peerId, { multiaddrs: nodes[j].getMultiaddrs() });
      await nodes[j].peerStore.merge(nodes[i].peerId, { multiaddrs: nodes[i].getMultiaddrs() });
    }
  }
  return nodes;
}

export async function stopNodes(nodes: PeertrainLibp2p[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.stop()));
}
