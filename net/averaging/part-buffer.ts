/**
 * Where averaging parts wait until a round can use them. Parts routinely arrive before this peer has heard of
 * the round (a fast peer's reduce parts overtake the announcement), so they are kept by round and attempt,
 * boundedly, and every part is checked against the ones before it: a sender that changes its story mid-chunk
 * (another length, another weight, the same frame twice, someone else's chunk) is refused, not merged.
 *
 * Pure bookkeeping, no libp2p: the orchestration (allreduce.ts) feeds it validated frames and reports the
 * verdicts, which lets every refusal be unit-tested without a network.
 */
import { chunkBounds, MAX_PARTICIPANTS, type TensorPart } from '../../protocol/index.ts';

/** Rounds (round/attempt pairs) buffered at once: older ones are forgotten first, so a flood costs bounded memory. */
export const MAX_PENDING_ROUNDS = 8;

/** The fields of a reduce or gather frame the buffer needs (a validated TensorPart has them all). */
export type BufferedPart = Pick<TensorPart, 'round' | 'attempt' | 'chunk' | 'offset' | 'total' | 'weight' | 'values'> & { phase: 'reduce' | 'gather' };

/**
 * Why a part was refused. 'total': longer than the whole vector; 'chunk': an index no run can have; 'length',
 * 'weight': disagrees with the sender's earlier parts of the chunk; 'duplicate': that offset already arrived;
 * 'sender': a gather part of a chunk another peer has begun sending.
 */
export type PartRejection = 'total' | 'chunk' | 'length' | 'weight' | 'duplicate' | 'sender';

export type PartVerdict = { ok: true } | { ok: false; reason: PartRejection; detail: string };

/** A contribution or averaged chunk being assembled from frames. */
export interface Slot {
  /** The sender that opened the slot (for gather chunks: who claims to own it). */
  readonly from: string;
  readonly weight: number;
  readonly values: Float32Array;
  /** Elements received so far (the sum of frame lengths). */
  readonly filled: number;
}

interface MutableSlot extends Slot {
  filled: number;
  covered: Set<number>;
}

/** The parts of one round and attempt. Waits hold on to this object, so a reset leaves them with a dead one. */
export class RoundParts {
  /** Reduce contributions to the chunk we own, by sender. */
  readonly reduce = new Map<string, MutableSlot>();
  /** Averaged chunks from their owners, by chunk index. */
  readonly gather = new Map<number, MutableSlot>();
  /** Called (and emptied) on every accepted part: the waiters of waitUntil (net/wait-until.ts). */
  readonly changed: Array<() => void> = [];

  /** A sender's reduce contribution, once it is complete at `length` elements. */
  contribution(from: string, length: number): Slot | undefined {
    const c = this.reduce.get(from);
    return c?.filled === length ? c : undefined;
  }

  /** An averaged chunk, once it is complete at `length` elements. */
  gathered(chunk: number, length: number): Slot | undefined {
    const g = this.gather.get(chunk);
    return g?.filled === length ? g : undefined;
  }

  wake(): void {
    for (const w of this.changed.splice(0)) w();
  }
}

export interface PartBufferOptions {
  /** Most elements of an averaged vector: a part claiming a longer chunk is refused. */
  size: number;
  maxRounds?: number;
}

export class PartBuffer {
  private readonly rounds = new Map<string, RoundParts>();
  private readonly size: number;
  private readonly maxRounds: number;

  constructor(o: PartBufferOptions) {
    this.size = o.size;
    this.maxRounds = o.maxRounds ?? MAX_PENDING_ROUNDS;
  }

  private key(round: number, attempt: number): string {
    return `${round}/${attempt}`;
  }

  /** The round's parts, opening (and bounding) its buffer if this is the first we hear of it. */
  open(round: number, attempt: number): RoundParts {
    const k = this.key(round, attempt);
    let s = this.rounds.get(k);
    if (!s) {
      s = new RoundParts();
      this.rounds.set(k, s);
      while (this.rounds.size > this.maxRounds) this.rounds.delete(this.rounds.keys().next().value!);
    }
    return s;
  }

  /** The round's parts if any are buffered; never opens one (a query must not evict a live round). */
  peek(round: number, attempt: number): RoundParts | undefined {
    return this.rounds.get(this.key(round, attempt));
  }

  /** Forgets a finished round. */
  drop(round: number, attempt: number): void {
    this.rounds.delete(this.key(round, attempt));
  }

  /**
   * Files one frame from `from` (the transport-authenticated sender). Checked before anything is allocated:
   * no chunk is longer than the whole vector and no run has more chunks than participants allowed.
   */
  accept(p: BufferedPart, from: string): PartVerdict {
    if (p.total > this.size) return reject('total', `part of chunk ${p.chunk} claims ${p.total} values (the vector has ${this.size})`);
    if (p.chunk >= MAX_PARTICIPANTS) return reject('chunk', `part of chunk ${p.chunk} claims ${p.total} values (the vector has ${this.size})`);
    const s = this.open(p.round, p.attempt);
    const target: Map<string | number, MutableSlot> = p.phase === 'reduce' ? s.reduce : s.gather;
    const key = p.phase === 'reduce' ? from : p.chunk;
    let slot = target.get(key);
    if (!slot) {
      slot = { from, weight: p.weight, values: new Float32Array(p.total), covered: new Set(), filled: 0 };
      target.set(key, slot);
    }
    const conflict = `part ${p.phase} chunk ${p.chunk} offset ${p.offset} conflicts with earlier parts`;
    if (slot.values.length !== p.total) return reject('length', conflict);
    if (p.phase === 'reduce' && slot.weight !== p.weight) return reject('weight', conflict);
    if (slot.covered.has(p.offset)) return reject('duplicate', conflict);
    if (p.phase === 'gather' && slot.from !== from) return reject('sender', conflict);
    slot.covered.add(p.offset);
    slot.values.set(p.values, p.offset);
    slot.filled += p.values.length;
    s.wake();
    return { ok: true };
  }

  /** Which chunks of a round have fully arrived, when `size` values are cut into `chunks` (to find a failed owner). */
  gatheredChunks(round: number, attempt: number, chunks: number, size: number): number[] {
    const s = this.peek(round, attempt);
    if (!s) return [];
    const done: number[] = [];
    for (let j = 0; j < chunks; j++) {
      const { start, end } = chunkBounds(size, chunks, j);
      if (s.gathered(j, end - start)) done.push(j);
    }
    return done;
  }

  /** Drops buffers of rounds before `round`. */
  forgetBefore(round: number): void {
    for (const k of [...this.rounds.keys()]) if (Number(k.split('/')[0]) < round) this.rounds.delete(k);
  }

  /**
   * Drops every buffered part (after a reconnect: the coordinator may have restarted its rounds). Waiters are
   * woken to re-check; they hold the old round objects, which never fill again, so they end by their signal.
   */
  reset(): void {
    for (const r of this.rounds.values()) r.wake();
    this.rounds.clear();
  }
}

function reject(reason: PartRejection, detail: string): PartVerdict {
  return { ok: false, reason, detail };
}
