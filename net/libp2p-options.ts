/**
 * The libp2p settings every peertrain node shares, Node and browser alike (each platform adds its transports):
 * written once so a browser tab and a node can never disagree on a limit. Measured on this project's machines
 * (shared/FACTS.md):
 *  - the connection manager's default admits 5 inbound connections per second per IP; local peers (and every
 *    peer behind one NAT) exceed it, so the threshold is raised;
 *  - the connection monitor aborts a connection when a ping times out, which a large transfer provokes; an
 *    8-peer mesh lost every connection after one round, so a slow ping no longer aborts;
 *  - gossipsub signs every message (StrictSign) so receivers know the author; every peer must accept the same
 *    frame size (a frame over a receiver's limit breaks that peer's whole inbound gossip stream), and payloads
 *    stay small (GOSSIP_MAX_BYTES): tensors travel over streams.
 */
import { gossipsub } from '@libp2p/gossipsub';
import { GOSSIP_MAX_BYTES } from '../protocol/index.ts';

/** Inbound connections accepted per second from one IP address (libp2p's default is 5). */
export const INBOUND_CONNECTION_THRESHOLD = 1000;
/** Connections one node keeps open at most. */
export const MAX_CONNECTIONS = 512;
/** Slack above our own largest gossip message for gossipsub's envelope (signature, topic, protobuf framing). */
const GOSSIP_FRAME_SLACK_BYTES = 64 * 1024;

export const connectionManagerOptions = { inboundConnectionThreshold: INBOUND_CONNECTION_THRESHOLD, maxConnections: MAX_CONNECTIONS };
export const connectionMonitorOptions = { abortConnectionOnPingFailure: false };

/** The gossipsub service of every peertrain node. */
export function peertrainGossipsub(): ReturnType<typeof gossipsub> {
  return gossipsub({
    emitSelf: false,
    allowPublishToZeroTopicPeers: true,
    globalSignaturePolicy: 'StrictSign',
    maxInboundDataLength: GOSSIP_MAX_BYTES + GOSSIP_FRAME_SLACK_BYTES,
    // Small runs: every peer should hear every announcement even before the mesh forms.
    floodPublish: true,
    doPX: false,
  });
}
