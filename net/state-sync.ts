/**
 * State sync over a direct stream: a peer that joins late, fell behind or diverged asks the coordinator for
 * the current parameters (and, in sync mode, the optimizer state) and verifies them against the hash in the
 * header before using any of them.
 *   request  → StateRequest
 *   response ← StateHeader { round, step, paramHash, params, optimizer } then TensorPart frames (phase 'state')
 *              covering params, then optimizer state (first moments, then second moments), in order.
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { hashFloats } from '../engine/averaging.ts';
import { envelope, partsOf, STATE_PROTOCOL, type RejectReason, type ValidationContext } from '../protocol/index.ts';
import { framed } from './framed.ts';
import type { Libp2pLike } from './types.ts';

/** How long serving one state transfer may take (the whole model's parameters and optimizer state). */
const SERVE_TIMEOUT_MS = 300_000;

export interface RunState {
  round: number;
  step: number;
  params: Float32Array;
  /** Optimizer state: AdamW m then v (sync), the outer momentum (diloco); may be empty. */
  optimizer: Float32Array;
  /** The model parts covered ([0, all parts) for a full replica; one stage's range for a pipeline stage peer). */
  stageFrom: number;
  stageTo: number;
}

/** Thrown when a fetched state is incomplete or does not match its hash. */
export class StateSyncError extends Error {
  override name = 'StateSyncError' as const;
}

interface RunIds {
  runId: string;
  configHash: string;
}

/** Serves state to admitted peers; `provide` may wait (the coordinator hands state out between rounds). */
export async function serveState(
  libp2p: Libp2pLike,
  ids: RunIds,
  isAdmitted: (peer: string) => boolean,
  provide: (peer: string) => Promise<RunState>,
  onReject: (reason: RejectReason, from: string, detail: string) => void,
): Promise<void> {
  const me = libp2p.peerId.toString();
  await libp2p.handle(STATE_PROTOCOL, async (stream: Stream, connection: Connection) => {
    const from = connection.remotePeer.toString();
    const io = framed(stream, (): ValidationContext => ({ ...ids, from, isAdmitted }), AbortSignal.timeout(SERVE_TIMEOUT_MS));
    try {
      const req = await io.read();
      if (!req) return;
      if (!req.ok || req.msg.type !== 'state-request') {
        onReject(req.ok ? 'structure' : req.reason, from, req.ok ? `expected a state request, got ${req.msg.type}` : req.detail);
        io.abort(new Error('bad state request'));
        return;
      }
      const s = await provide(from);
      const now = Date.now();
      const base = envelope({ ...ids, sender: me }, now);
      await io.write({ ...base, type: 'state', round: s.round, step: s.step, paramHash: hashFloats(s.params), params: s.params.length, optimizer: s.optimizer.length, stageFrom: s.stageFrom, stageTo: s.stageTo });
      for (const [chunk, values] of [s.params, s.optimizer].entries()) {
        for (const { offset, length } of partsOf(0, values.length)) {
          await io.write({ ...base, type: 'part', round: s.round, attempt: 0, phase: 'state', chunk, offset, total: values.length, weight: 0, values: values.subarray(offset, offset + length) });
        }
      }
      await io.close();
    } catch (err) {
      io.abort(err as Error);
    }
  }, { maxInboundStreams: 64 });
}

/** Fetches and verifies the run state from `from` (the coordinator). */
export async function fetchState(libp2p: Libp2pLike, ids: RunIds, from: string, signal: AbortSignal): Promise<RunState> {
  const stream = await libp2p.dialProtocol(peerIdFromString(from), STATE_PROTOCOL, { signal });
  // Parts of the served round are fresh whatever round we are at: no round check here.
  const io = framed(stream, (): ValidationContext => ({ ...ids, from }), signal);
  try {
    await io.write({ ...envelope({ ...ids, sender: libp2p.peerId.toString() }, Date.now()), type: 'state-request' });
    const head = await io.read();
    if (!head?.ok || head.msg.type !== 'state') throw new StateSyncError(`state sync from ${from}: ${head ? (head.ok ? `unexpected ${head.msg.type}` : `${head.reason}: ${head.detail}`) : 'no header'}`);
    const h = head.msg;
    const arrays = [new Float32Array(h.params), new Float32Array(h.optimizer)];
    const filled = [0, 0];
    while (filled[0] < h.params || filled[1] < h.optimizer) {
      const r = await io.read();
      if (!r) throw new StateSyncError(`state sync from ${from}: stream ended after ${filled[0] + filled[1]} of ${h.params + h.optimizer} values`);
      if (!r.ok) throw new StateSyncError(`state sync from ${from}: ${r.reason}: ${r.detail}`);
      const p = r.msg;
      if (p.type !== 'part' || p.phase !== 'state' || p.chunk > 1 || p.total !== arrays[p.chunk].length) throw new StateSyncError(`state sync from ${from}: unexpected frame`);
      arrays[p.chunk].set(p.values, p.offset);
      filled[p.chunk] += p.values.length;
    }
    const [params, optimizer] = arrays;
    if (hashFloats(params) !== h.paramHash) throw new StateSyncError(`state sync from ${from}: parameters do not match their hash ${h.paramHash}`);
    await io.close();
    return { round: h.round, step: h.step, params, optimizer, stageFrom: h.stageFrom, stageTo: h.stageTo };
  } catch (err) {
    io.abort(err as Error);
    throw err;
  }
}
