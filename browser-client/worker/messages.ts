/** Messages between the page and the peer's Web Worker (structured clone, same origin). */

/** Worker → page: where the peer stands. */
export interface WorkerStatus {
  type: 'status';
  state: 'idle' | 'starting' | 'joined' | 'training' | 'stopped' | 'error';
  message?: string;
  peerId?: string;
  backend?: string;
  backendDetail?: string;
  round?: number;
  loss?: number;
  tokensPerSec?: number;
  roundsContributed?: number;
  tokensContributed?: number;
  /** Hash of the peer's parameters after its last round (equal on every peer of the run). */
  paramHash?: string;
}

/** Page → worker. */
export type WorkerCommand =
  | { type: 'start'; multiaddrs: string[]; token: string; backend: string }
  | { type: 'stop'; reason: string }
  | { type: 'selftest'; backend: string; fixture: SelftestFixture };

/** A fixed model and batch whose loss a backend must reproduce. */
export interface SelftestFixture {
  config: unknown;
  params: number[];
  idx: number[][];
  targets: number[][];
}
