/** The parts of libp2p and of the host the platform-free peer code needs (Node and browser provide them). */
import type { Libp2p } from '@libp2p/interface';

export type Libp2pLike = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol' | 'dial' | 'getConnections' | 'getMultiaddrs' | 'peerStore' | 'addEventListener' | 'removeEventListener'>;

/** A gossip message as the pubsub service delivers it. */
export interface GossipMessage {
  topic: string;
  data: Uint8Array;
  from?: { toString(): string };
}

/** The parts of gossipsub peertrain uses (the coordinator and every peer subscribe to the run's topics). */
export interface PubSubLike {
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
  publish(topic: string, data: Uint8Array): Promise<unknown>;
  addEventListener(type: 'message', listener: (evt: CustomEvent<GossipMessage>) => void): void;
  removeEventListener(type: 'message', listener: (evt: CustomEvent<GossipMessage>) => void): void;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  debug(message: string): void;
}

/** A logger that prints nothing (tests, quiet mode). */
export const silentLogger: Logger = { info() {}, warn() {}, debug() {} };

/** Clock: injected so rounds and heartbeats can be tested without real waits. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
