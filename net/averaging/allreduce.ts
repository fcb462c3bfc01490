/**
 * Bandwidth-optimal averaging over direct libp2p streams (reduce-scatter, then all-gather):
 * the flat vector is cut into one contiguous chunk per participant; participant i owns chunk i. Everyone
 * sends chunk i of its contribution to owner i (reduce), the owner computes the weighted mean of chunk i once
 * every participant's chunk has arrived, and sends the mean back to everyone and to the observers (gather).
 * A participant sends and receives about 2·(P−1)/P of the payload per round, whatever the number of peers.
 * Frames are bounded (protocol MAX_PART_ELEMENTS) and every one is validated on arrival: wrong run, unknown
 * sender, replayed or future round, non-finite values or an absurd norm are rejected and reported.
 *
 * One instance per peer. Parts may arrive before this peer learns of the round: they are kept (bounded) by
 * round and attempt. A round that cannot complete (a participant died) is abandoned by the caller's signal;
 * the coordinator then announces a new attempt with the survivors.
 *
 * This file is only the orchestration (streams, dialling, sending parts, waiting): the buffering and its
 * conflict checks are PartBuffer's (part-buffer.ts), the arithmetic is the Reducer's (reducer.ts), over an
 * Aggregator and a Codec, so a new way to average never touches the round loop.
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ALLREDUCE_PROTOCOL, chunkBounds, envelope, partsOf, type RejectReason, type TensorPart, type ValidationContext } from '../../protocol/index.ts';
import { fanOut, framed } from '../framed.ts';
import { sleep } from '../sleep.ts';
import { waitUntil } from '../wait-until.ts';
import type { Libp2pLike, Logger } from '../types.ts';
import type { Aggregator } from './aggregator.ts';
import type { Codec } from './codec.ts';
import { AllReduceAbortedError } from './errors.ts';
import { PartBuffer, type BufferedPart, type RoundParts } from './part-buffer.ts';
import { Reducer } from './reducer.ts';

export { AllReduceAbortedError };

export interface AllReduceOptions {
  libp2p: Libp2pLike;
  runId: string;
  configHash: string;
  /** Most elements of an averaged vector (the parameter count): a contribution or part claiming more is refused. */
  size: number;
  /** The stream protocol (default ALLREDUCE_PROTOCOL; pipeline stages average on their own group's protocol). */
  protocol?: string;
  /** Whether a peer may send us parts (admitted members of the run). */
  isAdmitted: (peerId: string) => boolean;
  /** The round this peer is at: parts of older rounds are replays ('stale'). */
  currentRound: () => number;
  /** Upper bound on a frame's L2 norm. */
  maxPartNorm: number;
  onReject: (reason: RejectReason, from: string, detail: string) => void;
  log: Logger;
  /** How the owner of a chunk combines contributions (default weightedMean); every participant must agree. */
  aggregator?: Aggregator;
  /** What the wire does to values (default identityCodec); every participant must agree. */
  codec?: Codec;
}

/** How long an unknown sender's stream waits for the announcement that admits it. */
const ADMISSION_GRACE_MS = 5_000;
/** How often such a stream looks again whether the announcement came. */
const ADMISSION_POLL_MS = 25;
/** How long one inbound averaging stream may stay open. */
const INBOUND_STREAM_TIMEOUT_MS = 120_000;
/** Back-off between dials of a participant not reachable yet (doubling up to the maximum). */
const DIAL_RETRY_MS = 100;
const DIAL_RETRY_MAX_MS = 1_000;

export class AllReduce {
  private readonly buffer: PartBuffer;
  private readonly reducer: Reducer;
  private readonly me: string;
  private readonly protocol: string;
  /** Bytes this peer sent in averaging frames (bench and status). */
  bytesSent = 0;
  private stopping = new AbortController();

  constructor(private readonly o: AllReduceOptions) {
    this.me = o.libp2p.peerId.toString();
    this.protocol = o.protocol ?? ALLREDUCE_PROTOCOL;
    this.buffer = new PartBuffer({ size: o.size });
    this.reducer = new Reducer({ aggregator: o.aggregator, codec: o.codec });
  }

  async start(): Promise<void> {
    this.stopping = new AbortController();
    await this.o.libp2p.handle(this.protocol, (stream, connection) => this.onStream(stream, connection), { maxInboundStreams: 256 });
  }

  async stop(): Promise<void> {
    this.stopping.abort(new AllReduceAbortedError('averaging stopped'));
    await this.o.libp2p.unhandle(this.protocol);
    this.buffer.reset();
  }

  /** Drops every buffered part (after a reconnect: the coordinator may have restarted its rounds). */
  reset(): void {
    this.buffer.reset();
  }

  /** Drops buffers of rounds before `round`. */
  forgetBefore(round: number): void {
    this.buffer.forgetBefore(round);
  }

  private ctx(from: string): ValidationContext {
    return {
      runId: this.o.runId,
      configHash: this.o.configHash,
      from,
      isAdmitted: this.o.isAdmitted,
      currentRound: this.o.currentRound(),
      staleRounds: 0,
      maxPartNorm: this.o.maxPartNorm,
    };
  }

  /**
   * A participant's parts can arrive before we have seen the round announcement that admits it: give the
   * announcement a moment before judging the sender (its frames are only read, and counted, after that).
   */
  private async admittedSoon(peer: string, ms: number): Promise<void> {
    for (const start = Date.now(); !this.o.isAdmitted(peer) && Date.now() - start < ms && !this.stopping.signal.aborted; ) await sleep(ADMISSION_POLL_MS, this.stopping.signal);
  }

  private async onStream(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const io = framed(stream, () => this.ctx(from), AbortSignal.timeout(INBOUND_STREAM_TIMEOUT_MS));
    try {
      await this.admittedSoon(from, ADMISSION_GRACE_MS);
      for (;;) {
        const r = await io.read();
        if (!r) break;
        if (!r.ok) {
          this.o.onReject(r.reason, from, r.detail);
          if (r.reason === 'malformed' || r.reason === 'size' || r.reason === 'run' || r.reason === 'unadmitted') break;
          continue;
        }
        if (r.msg.type !== 'part' || (r.msg.phase !== 'reduce' && r.msg.phase !== 'gather')) {
          this.o.onReject('structure', from, `unexpected ${r.msg.type} on the allreduce stream`);
          continue;
        }
        this.accept(r.msg, from);
      }
      await io.close();
    } catch (err) {
      // A frame over the length limit errors the stream before it can be decoded: count it as oversized.
      if ((err as Error).name === 'InvalidDataLengthError') this.o.onReject('size', from, (err as Error).message);
      io.abort(err as Error);
    }
  }

  /** `p` is a reduce or gather part (onStream refuses the rest). */
  private accept(p: TensorPart, from: string): void {
    const verdict = this.buffer.accept(p as BufferedPart, from);
    if (!verdict.ok) this.o.onReject('structure', from, verdict.detail);
  }

  /** Dials, retrying while the peer's addresses are not yet known (its first heartbeat may still be on its way). */
  private async dial(to: string, signal: AbortSignal): Promise<Stream> {
    for (let delay = DIAL_RETRY_MS; ; delay = Math.min(DIAL_RETRY_MAX_MS, delay * 2)) {
      try {
        return await this.o.libp2p.dialProtocol(peerIdFromString(to), this.protocol, { signal });
      } catch (err) {
        if (signal.aborted) throw new AllReduceAbortedError(`could not reach ${to.slice(-8)}: ${(err as Error).message}`);
        this.o.log.debug(`dial ${to.slice(-8)} failed (${(err as Error).name}); retrying`);
        await sleep(delay, signal);
      }
    }
  }

  private async send(to: string, parts: TensorPart[], signal: AbortSignal): Promise<void> {
    const stream = await this.dial(to, signal);
    const io = framed(stream, () => this.ctx(to), signal);
    try {
      for (const p of parts) {
        await io.write(p);
        this.bytesSent += p.values.byteLength;
      }
      await io.close();
    } catch (err) {
      io.abort(err as Error);
      throw err;
    }
  }

  private parts(round: number, attempt: number, phase: 'reduce' | 'gather', chunk: number, values: Float32Array, weight: number): TensorPart[] {
    const now = Date.now();
    return partsOf(0, values.length).map(({ offset, length }) => ({
      ...envelope({ runId: this.o.runId, configHash: this.o.configHash, sender: this.me }, now),
      type: 'part',
      round,
      attempt,
      phase,
      chunk,
      offset,
      total: values.length,
      weight,
      values: values.subarray(offset, offset + length),
    }));
  }

  private wait(s: RoundParts, done: () => boolean, signal: AbortSignal): Promise<void> {
    return waitUntil(s.changed, done, signal, (reason) => new AllReduceAbortedError(`averaging abandoned: ${String((reason as Error | undefined)?.message ?? reason)}`));
  }

  /**
   * Averages `values` (weight `weight`, e.g. samples) with the other participants and returns the weighted
   * mean. `observers` (the coordinator) receive the averaged chunks too. Rejects on `signal`.
   */
  async run(round: number, attempt: number, participants: string[], values: Float32Array, weight: number, observers: string[], signal: AbortSignal): Promise<Float32Array> {
    const P = participants.length;
    const mine = participants.indexOf(this.me);
    if (mine < 0) throw new Error('allreduce: this peer is not a participant');
    if (values.length > this.o.size || values.length < P) throw new Error(`allreduce: contribution has ${values.length} values, expected ${P} to ${this.o.size}`);
    const size = values.length;
    const s = this.buffer.open(round, attempt);
    const result = new Float32Array(size);
    // Reduce: our slice of every other owner's chunk.
    // Sends run in the background; a failure there shows up as a chunk that never completes (and, on the
    // owner's side, as a round the coordinator retries), so it is logged here, never left unhandled.
    const background = (p: Promise<void>, what: string) => p.catch((err) => this.o.log.debug(`${what}: ${(err as Error).message}`));
    const child = fanOut(signal);
    const sends = participants.map((owner, j) => {
      if (j === mine) return Promise.resolve();
      const { start, end } = chunkBounds(size, P, j);
      return background(this.send(owner, this.parts(round, attempt, 'reduce', j, values.subarray(start, end), weight), child()), `reduce to ${owner.slice(-8)}`);
    });
    const own = chunkBounds(size, P, mine);
    const ownLen = own.end - own.start;
    const others = participants.filter((p) => p !== this.me);
    await this.wait(s, () => others.every((p) => s.contribution(p, ownLen)), signal);
    const { mean, weight: total } = this.reducer.reduce(
      { weight, values: values.subarray(own.start, own.end) },
      others.map((p) => s.contribution(p, ownLen)!),
      ownLen,
    );
    result.set(mean, own.start);
    // Gather: our averaged chunk to everyone else and to the observers.
    const gathers = [...others, ...observers.filter((o) => o !== this.me && !participants.includes(o))].map((to) =>
      background(this.send(to, this.parts(round, attempt, 'gather', mine, mean, total), child()), `gather to ${to.slice(-8)}`),
    );
    await this.wait(s, () => participants.every((_, j) => j === mine || s.gathered(j, chunkLength(size, P, j))), signal);
    for (let j = 0; j < P; j++) if (j !== mine) result.set(this.fromOwner(s, participants, j, size), chunkBounds(size, P, j).start);
    await Promise.all([...sends, ...gathers]);
    this.buffer.drop(round, attempt);
    return result;
  }

  /** As an observer (not contributing): waits for every averaged chunk of the round and returns the mean. */
  async observe(round: number, attempt: number, participants: string[], signal: AbortSignal, size = this.o.size): Promise<Float32Array> {
    const P = participants.length;
    const s = this.buffer.open(round, attempt);
    await this.wait(s, () => participants.every((_, j) => s.gathered(j, chunkLength(size, P, j))), signal);
    const result = new Float32Array(size);
    for (let j = 0; j < P; j++) result.set(this.fromOwner(s, participants, j, size), chunkBounds(size, P, j).start);
    this.buffer.drop(round, attempt);
    return result;
  }

  /** Averaged chunk `j` of a complete gather, refusing it unless its owner sent it. */
  private fromOwner(s: RoundParts, participants: string[], j: number, size: number): Float32Array {
    const g = s.gathered(j, chunkLength(size, participants.length, j))!;
    if (g.from !== participants[j]) throw new AllReduceAbortedError(`chunk ${j} came from ${g.from}, not its owner`);
    return g.values;
  }

  /** Which chunks of a round have fully arrived (for the coordinator to find a failed owner). */
  gatheredChunks(round: number, attempt: number, participants: string[], size = this.o.size): number[] {
    return this.buffer.gatheredChunks(round, attempt, participants.length, size);
  }
}

/** What every averaging service of one party (the coordinator, or one peer) shares: all but size and protocol. */
export type AveragingScope = Omit<AllReduceOptions, 'size' | 'protocol'>;

/**
 * The averaging services of one party, made from its scope: one per vector size and protocol (the data-parallel
 * vector, or each pipeline group's). start() each before its first round.
 */
export function averagingFactory(scope: AveragingScope): (size: number, protocol?: string) => AllReduce {
  return (size, protocol) => new AllReduce({ ...scope, size, ...(protocol ? { protocol } : {}) });
}

function chunkLength(size: number, parts: number, index: number): number {
  const { start, end } = chunkBounds(size, parts, index);
  return end - start;
}
