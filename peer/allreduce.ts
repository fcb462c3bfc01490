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
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ALLREDUCE_PROTOCOL, chunkBounds, partsOf, PROTOCOL_VERSION, type RejectReason, type TensorPart, type ValidationContext } from '../protocol/index.ts';
import { fanOut, framed } from './framed.ts';
import type { Libp2pLike, Logger } from './types.ts';

/** Thrown when a round's averaging is abandoned (deadline or shutdown). */
export class AllReduceAbortedError extends Error {
  override name = 'AllReduceAbortedError' as const;
}

/** Why a frame was dropped; `penalize` is false for honest lateness (a frame of an attempt already over). */
export type RejectHandler = (reason: RejectReason | 'late', from: string, detail: string, penalize?: boolean) => void;

export interface AllReduceOptions {
  libp2p: Libp2pLike;
  runId: string;
  configHash: string;
  /** Elements of the averaged vector (the parameter count). */
  size: number;
  /** Whether a peer may send us parts (admitted members of the run). */
  isAdmitted: (peerId: string) => boolean;
  /** The round this peer is at: parts of older rounds are replays ('stale'). */
  currentRound: () => number;
  /** Upper bound on a frame's L2 norm. */
  maxPartNorm: number;
  onReject: RejectHandler;
  log: Logger;
}

interface Slot {
  values: Float32Array;
  covered: Set<number>;
  filled: number;
}

/**
 * What we expect in one (round, attempt): created only by run() or observe(), never by an incoming frame, so
 * a sender cannot make us allocate or evict anything. A frame is accepted only when it is exactly what the
 * round's participants should send: a reduce part of our chunk from a participant with its announced weight,
 * or a gather part of chunk j from its owner participants[j], with the chunk's true length.
 */
interface Incoming {
  participants: string[];
  /** Our index among the participants (-1 for an observer: no reduce parts expected). */
  mine: number;
  /** Announced weight of each participant's reduce part (undefined: not checked). */
  weights?: number[];
  reduce: Map<string, Slot & { weight: number }>;
  gather: Map<number, Slot>;
  changed: Array<() => void>;
}

/** How long a frame of a (round, attempt) we have not heard of yet waits for its announcement. */
const ADMISSION_GRACE_MS = 15_000;

export class AllReduce {
  private readonly rounds = new Map<string, Incoming>();
  private readonly me: string;
  /** Bytes this peer sent in averaging frames (bench and status). */
  bytesSent = 0;

  constructor(private readonly o: AllReduceOptions) {
    this.me = o.libp2p.peerId.toString();
  }

  async start(): Promise<void> {
    await this.o.libp2p.handle(ALLREDUCE_PROTOCOL, (stream, connection) => this.onStream(stream, connection), { maxInboundStreams: 256 });
  }

  async stop(): Promise<void> {
    await this.o.libp2p.unhandle(ALLREDUCE_PROTOCOL);
    for (const r of this.rounds.values()) for (const w of r.changed) w();
    this.rounds.clear();
  }

  private key(round: number, attempt: number): string {
    return `${round}/${attempt}`;
  }

  /**
   * Registers what a (round, attempt) expects, as soon as the announcement arrives (before the contribution is
   * computed): the other participants' parts can then be accepted while we compute. run() and observe() call it
   * too; a registration with the same participants is kept (with what already arrived).
   */
  expect(round: number, attempt: number, participants: string[], weights?: number[]): Incoming {
    const k = this.key(round, attempt);
    const existing = this.rounds.get(k);
    if (existing && existing.participants.join() === participants.join()) {
      existing.weights ??= weights;
      return existing;
    }
    const s: Incoming = { participants, mine: participants.indexOf(this.me), weights, reduce: new Map(), gather: new Map(), changed: [] };
    const old = this.rounds.get(k);
    this.rounds.set(k, s);
    for (const w of old?.changed ?? []) w();
    return s;
  }

  private chunkLength(s: Incoming, j: number): number {
    const { start, end } = chunkBounds(this.o.size, s.participants.length, j);
    return end - start;
  }

  /** Drops every buffered part (after a reconnect: the coordinator may have restarted its rounds). */
  reset(): void {
    for (const r of this.rounds.values()) for (const w of r.changed.splice(0)) w();
    this.rounds.clear();
  }

  /** Drops buffers of rounds before `round`. */
  forgetBefore(round: number): void {
    for (const k of [...this.rounds.keys()]) if (Number(k.split('/')[0]) < round) this.rounds.delete(k);
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
   * A participant's parts can arrive before we have seen the round announcement (which admits it and tells
   * us who takes part): wait a moment for it before judging the sender or the frame.
   */
  private async admittedSoon(peer: string, ms: number): Promise<void> {
    for (const start = Date.now(); !this.o.isAdmitted(peer) && Date.now() - start < ms; ) await new Promise((r) => setTimeout(r, 25));
  }

  private async expectedSoon(round: number, attempt: number, ms: number): Promise<Incoming | undefined> {
    const k = this.key(round, attempt);
    for (const start = Date.now(); !this.rounds.has(k) && Date.now() - start < ms; ) await new Promise((r) => setTimeout(r, 25));
    return this.rounds.get(k);
  }

  private async onStream(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const io = framed(stream, () => this.ctx(from), AbortSignal.timeout(120_000));
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
        const s = await this.expectedSoon(r.msg.round, r.msg.attempt, ADMISSION_GRACE_MS);
        if (!s) {
          // An attempt we do not take part in: over already, or one we were left out of. Not the sender's fault.
          this.o.onReject('late', from, `no averaging ${r.msg.round}/${r.msg.attempt} here`, false);
          break;
        }
        this.accept(s, r.msg, from);
      }
      await io.close();
    } catch (err) {
      // A frame over the length limit errors the stream before it can be decoded: count it as oversized.
      if ((err as Error).name === 'InvalidDataLengthError') this.o.onReject('size', from, (err as Error).message);
      io.abort(err as Error);
    }
  }

  private accept(s: Incoming, p: TensorPart, from: string): void {
    const bad = (detail: string) => this.o.onReject('structure', from, `${p.phase} part of chunk ${p.chunk}: ${detail}`);
    let slot: Slot | undefined;
    if (p.phase === 'reduce') {
      const sender = s.participants.indexOf(from);
      if (s.mine < 0) return bad('this peer owns no chunk in the round');
      if (sender < 0) return bad('the sender does not take part in the round');
      if (p.chunk !== s.mine || p.total !== this.chunkLength(s, s.mine)) return bad('not the chunk this peer owns');
      if (s.weights && p.weight !== s.weights[sender]) return bad(`weight ${p.weight}, announced ${s.weights[sender]}`);
      let r = s.reduce.get(from);
      if (!r) s.reduce.set(from, (r = { weight: p.weight, values: new Float32Array(p.total), covered: new Set(), filled: 0 }));
      if (r.weight !== p.weight) return bad('weight changed between parts');
      slot = r;
    } else {
      if (!(p.chunk < s.participants.length) || s.participants[p.chunk] !== from) return bad('the sender does not own this chunk');
      if (p.total !== this.chunkLength(s, p.chunk)) return bad(`total ${p.total}, the chunk has ${this.chunkLength(s, p.chunk)}`);
      let g = s.gather.get(p.chunk);
      if (!g) s.gather.set(p.chunk, (g = { values: new Float32Array(p.total), covered: new Set(), filled: 0 }));
      slot = g;
    }
    if (slot.covered.has(p.offset)) return bad(`offset ${p.offset} sent twice`);
    slot.covered.add(p.offset);
    slot.values.set(p.values, p.offset);
    slot.filled += p.values.length;
    for (const w of s.changed.splice(0)) w();
  }

  /** Dials, retrying while the peer's addresses are not yet known (its first heartbeat may still be on its way). */
  private async dial(to: string, signal: AbortSignal): Promise<Stream> {
    for (let delay = 100; ; delay = Math.min(1_000, delay * 2)) {
      try {
        return await this.o.libp2p.dialProtocol(peerIdFromString(to), ALLREDUCE_PROTOCOL, { signal });
      } catch (err) {
        if (signal.aborted) throw new AllReduceAbortedError(`could not reach ${to.slice(-8)}: ${(err as Error).message}`);
        this.o.log.debug(`dial ${to.slice(-8)} failed (${(err as Error).name}); retrying`);
        await new Promise((r) => setTimeout(r, delay));
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
      v: PROTOCOL_VERSION,
      type: 'part',
      runId: this.o.runId,
      configHash: this.o.configHash,
      sender: this.me,
      ts: now,
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

  private wait(s: Incoming, done: () => boolean, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (signal.aborted) return reject(new AllReduceAbortedError(`averaging abandoned: ${String(signal.reason?.message ?? signal.reason)}`));
        if (done()) return resolve();
        s.changed.push(check);
      };
      signal.addEventListener('abort', check, { once: true });
      check();
    });
  }

  /**
   * Averages `values` (weight `weight`, e.g. samples) with the other participants and returns the weighted
   * mean. `observers` (the coordinator) receive the averaged chunks too. Rejects on `signal`.
   */
  async run(round: number, attempt: number, participants: string[], values: Float32Array, weight: number, observers: string[], signal: AbortSignal, weights?: number[]): Promise<Float32Array> {
    const P = participants.length;
    const mine = participants.indexOf(this.me);
    if (mine < 0) throw new Error('allreduce: this peer is not a participant');
    if (values.length !== this.o.size) throw new Error(`allreduce: contribution has ${values.length} values, expected ${this.o.size}`);
    const s = this.expect(round, attempt, participants, weights);
    const result = new Float32Array(this.o.size);
    // Reduce: our slice of every other owner's chunk.
    // Sends run in the background; a failure there shows up as a chunk that never completes (and, on the
    // owner's side, as a round the coordinator retries), so it is logged here, never left unhandled.
    const background = (p: Promise<void>, what: string) => p.catch((err) => this.o.log.debug(`${what}: ${(err as Error).message}`));
    const child = fanOut(signal);
    const sends = participants.map((owner, j) => {
      if (j === mine) return Promise.resolve();
      const { start, end } = chunkBounds(this.o.size, P, j);
      return background(this.send(owner, this.parts(round, attempt, 'reduce', j, values.subarray(start, end), weight), child()), `reduce to ${owner.slice(-8)}`);
    });
    const own = chunkBounds(this.o.size, P, mine);
    const ownLen = own.end - own.start;
    const others = participants.filter((p) => p !== this.me);
    await this.wait(s, () => others.every((p) => s.reduce.get(p)?.filled === ownLen), signal);
    // Weighted mean of our chunk in float64: the order of arrival does not change the result.
    const acc = new Float64Array(ownLen);
    let total = weight;
    const mySlice = values.subarray(own.start, own.end);
    for (let i = 0; i < ownLen; i++) acc[i] = weight * mySlice[i];
    for (const p of others) {
      const c = s.reduce.get(p)!;
      total += c.weight;
      for (let i = 0; i < ownLen; i++) acc[i] += c.weight * c.values[i];
    }
    const mean = new Float32Array(ownLen);
    for (let i = 0; i < ownLen; i++) mean[i] = acc[i] / total;
    result.set(mean, own.start);
    // Gather: our averaged chunk to everyone else and to the observers.
    const gathers = [...others, ...observers.filter((o) => o !== this.me && !participants.includes(o))].map((to) =>
      background(this.send(to, this.parts(round, attempt, 'gather', mine, mean, total), child()), `gather to ${to.slice(-8)}`),
    );
    await this.wait(
      s,
      () => participants.every((_, j) => j === mine || s.gather.get(j)?.filled === chunkBounds(this.o.size, P, j).end - chunkBounds(this.o.size, P, j).start),
      signal,
    );
    for (let j = 0; j < P; j++) if (j !== mine) result.set(s.gather.get(j)!.values, chunkBounds(this.o.size, P, j).start);
    await Promise.all([...sends, ...gathers]);
    this.rounds.delete(this.key(round, attempt));
    return result;
  }

  /** As an observer (not contributing): waits for every averaged chunk of the round and returns the mean. */
  async observe(round: number, attempt: number, participants: string[], signal: AbortSignal): Promise<Float32Array> {
    const P = participants.length;
    const s = this.expect(round, attempt, participants);
    const len = (j: number) => chunkBounds(this.o.size, P, j).end - chunkBounds(this.o.size, P, j).start;
    await this.wait(s, () => participants.every((_, j) => s.gather.get(j)?.filled === len(j)), signal);
    const result = new Float32Array(this.o.size);
    for (let j = 0; j < P; j++) result.set(s.gather.get(j)!.values, chunkBounds(this.o.size, P, j).start);
    this.rounds.delete(this.key(round, attempt));
    return result;
  }

  /** Which chunks of a round have fully arrived (for the coordinator to find a failed owner). */
  gatheredChunks(round: number, attempt: number, participants: string[]): number[] {
    const s = this.rounds.get(this.key(round, attempt));
    if (!s) return [];
    const P = participants.length;
    return participants
      .map((_, j) => j)
      .filter((j) => s.gather.get(j)?.filled === chunkBounds(this.o.size, P, j).end - chunkBounds(this.o.size, P, j).start);
  }
}
