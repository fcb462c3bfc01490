/**
 * The envelope every run-scoped message opens with: protocol version, run id, config hash, sender and time.
 * Built in one place so that no message can forget a field the receiver's validation checks first.
 */
import { PROTOCOL_VERSION } from './constants.ts';

/** Who speaks, in which run: fixed for the life of a peer's (or coordinator's) session. */
export interface RunScope {
  runId: string;
  configHash: string;
  sender: string;
}

export interface Envelope extends RunScope {
  v: typeof PROTOCOL_VERSION;
  ts: number;
}

export function envelope(scope: RunScope, now: number): Envelope {
  return { v: PROTOCOL_VERSION, runId: scope.runId, configHash: scope.configHash, sender: scope.sender, ts: now };
}
