/**
 * A stage peer's outbound links: a micro-batch's activations go to the route's peer of the next stage over a
 * pipeline stream, and its gradient comes back on the same stream. A hop that stalls past its share of the
 * round's deadline names the peer behind it, so the coordinator can leave that one out.
 */
import type { Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { StageInput } from '../../engine/stage-trainer.ts';
import { deadline } from '../../net/deadline.ts';
import { framed } from '../../net/framed.ts';
import { sleep } from '../../net/sleep.ts';
import type { Libp2pLike } from '../../net/types.ts';
import { PIPELINE_PROTOCOL, type ActivationHeader } from '../../protocol/index.ts';
import type { RunConfig } from '../../run/config.ts';
import { PipelineStreamError, readHeader, readValues, writeTensor, type RunScope } from './activation-io.ts';
import type { Attempt } from './stage-attempt.ts';

/** Share of the round's deadline one hop (and all the route beyond it) may take. */
const HOP_SHARE_OF_DEADLINE = 0.5;
/** A hop gets at least this long, however short the round's deadline. */
const MIN_HOP_MS = 5_000;
/** How long a hop keeps trying to reach the next stage's peer before the micro-batch fails. */
const DIAL_PATIENCE_MS = 10_000;
/** Back-off between dials of a peer not reachable yet (doubling up to the maximum). */
const DIAL_RETRY_MS = 100;
const DIAL_RETRY_MAX_MS = 1_000;

export interface ActivationLinksOptions {
  libp2p: Libp2pLike;
  runId: string;
  configHash: string;
  config: RunConfig;
  isAdmitted: (peer: string) => boolean;
  scope: RunScope;
}

export class ActivationLinks {
  constructor(private readonly o: ActivationLinksOptions) {}

  /** Sends activations to the route's peer of `stage` and waits for the gradient coming back. */
  async hop(att: Attempt, m: number, stage: number, activations: Float32Array, input: StageInput, targets: Int32Array, weights: Float32Array, signal: AbortSignal): Promise<{ gradient: Float32Array; loss: number }> {
    const to = att.a.participants[att.a.routes[m][stage]];
    // A hop that takes most of the round's deadline has a stalled peer behind it: give up in time to say so.
    const limit = deadline(Math.max(MIN_HOP_MS, att.a.deadlineMs * HOP_SHARE_OF_DEADLINE), signal);
    try {
      return await this.hopWithin(att, m, stage, to, activations, input, targets, weights, limit.signal);
    } finally {
      limit.clear();
    }
  }

  private async hopWithin(att: Attempt, m: number, stage: number, to: string, activations: Float32Array, input: StageInput, targets: Int32Array, weights: Float32Array, hopSignal: AbortSignal): Promise<{ gradient: Float32Array; loss: number }> {
    const io = framed(await this.dial(to, stage, hopSignal), () => ({ runId: this.o.runId, configHash: this.o.configHash, from: to, isAdmitted: this.o.isAdmitted }), hopSignal);
    try {
      const head = this.header(att, m, stage, 'forward', input.B, input.T, 0, targets, weights);
      att.bytes += await writeTensor(io, this.o.scope, head, activations);
      const back = await readHeader(io);
      if (back.direction !== 'backward' || back.micro !== m || back.round !== att.a.round || back.attempt !== att.a.attempt || back.B !== input.B || back.T !== input.T || back.C !== this.o.config.model.nEmbd) {
        throw new PipelineStreamError(`stage ${stage} answered micro-batch ${back.micro} (${back.direction}), expected ${m} (backward)`, to);
      }
      const { values } = await readValues(io, back);
      await io.close().catch(() => {});
      return { gradient: values, loss: back.loss };
    } catch (err) {
      io.abort(err as Error);
      if (err instanceof PipelineStreamError) throw new PipelineStreamError(err.message, err.failed || to);
      throw new PipelineStreamError(`stage ${stage} peer ${to.slice(-8)}: ${(err as Error).message}`, to);
    }
  }

  /**
   * Dials the next stage's peer, retrying for a while: right after it joined, its addresses may not have
   * reached us yet (they come with its heartbeats). A peer that stays unreachable fails the micro-batch.
   */
  private async dial(to: string, stage: number, signal: AbortSignal): Promise<Stream> {
    const giveUp = Date.now() + DIAL_PATIENCE_MS;
    for (let delay = DIAL_RETRY_MS; ; delay = Math.min(DIAL_RETRY_MAX_MS, delay * 2)) {
      try {
        return await this.o.libp2p.dialProtocol(peerIdFromString(to), PIPELINE_PROTOCOL, { signal });
      } catch (err) {
        if (signal.aborted || Date.now() > giveUp) throw new PipelineStreamError(`stage ${stage} peer ${to.slice(-8)} unreachable: ${(err as Error).message}`, to);
        await sleep(delay, signal);
      }
    }
  }

  header(att: Attempt, m: number, stage: number, direction: 'forward' | 'backward', B: number, T: number, loss: number, targets: Int32Array, weights: Float32Array): Omit<ActivationHeader, 'v' | 'type' | 'runId' | 'configHash' | 'sender' | 'ts'> {
    return { round: att.a.round, attempt: att.a.attempt, micro: m, stage, direction, B, T, C: this.o.config.model.nEmbd, dtype: this.o.config.pipeline!.activationDtype, loss, targets, weights };
  }
}
