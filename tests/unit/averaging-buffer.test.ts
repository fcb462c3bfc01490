/**
 * The part buffer on its own, no network: every refusal reason, completion, the bound on buffered rounds,
 * forgetting, reset, and the waiters waitUntil relies on.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PENDING_ROUNDS, PartBuffer, type BufferedPart } from '../../net/averaging/part-buffer.ts';
import { waitUntil } from '../../net/wait-until.ts';
import { MAX_PARTICIPANTS } from '../../protocol/index.ts';

const SIZE = 100;

function part(over: Partial<BufferedPart> = {}): BufferedPart {
  return { round: 3, attempt: 0, phase: 'reduce', chunk: 0, offset: 0, total: 4, weight: 2, values: Float32Array.from([1, 2]), ...over };
}

describe('PartBuffer', () => {
  it('assembles a contribution from frames and reports it complete only when every value arrived', () => {
    const b = new PartBuffer({ size: SIZE });
    expect(b.accept(part(), 'a')).toEqual({ ok: true });
    const s = b.open(3, 0);
    expect(s.contribution('a', 4)).toBeUndefined();
    expect(b.accept(part({ offset: 2, values: Float32Array.from([3, 4]) }), 'a')).toEqual({ ok: true });
    const c = s.contribution('a', 4)!;
    expect(Array.from(c.values)).toEqual([1, 2, 3, 4]);
    expect(c.weight).toBe(2);
    expect(c.from).toBe('a');
  });

  it('keeps reduce parts by sender and gather parts by chunk', () => {
    const b = new PartBuffer({ size: SIZE });
    b.accept(part({ total: 2 }), 'a');
    b.accept(part({ total: 2, values: Float32Array.from([5, 6]) }), 'b');
    b.accept(part({ phase: 'gather', chunk: 1, total: 2, values: Float32Array.from([7, 8]) }), 'c');
    const s = b.open(3, 0);
    expect(Array.from(s.contribution('b', 2)!.values)).toEqual([5, 6]);
    expect(Array.from(s.gathered(1, 2)!.values)).toEqual([7, 8]);
    expect(s.gathered(0, 2)).toBeUndefined();
  });

  const refusals: Array<{ reason: string; first?: [BufferedPart, string]; then: [BufferedPart, string] }> = [
    { reason: 'total', then: [part({ total: SIZE + 1 }), 'a'] },
    { reason: 'chunk', then: [part({ chunk: MAX_PARTICIPANTS }), 'a'] },
    { reason: 'length', first: [part(), 'a'], then: [part({ offset: 2, total: 6 }), 'a'] },
    { reason: 'weight', first: [part(), 'a'], then: [part({ offset: 2, weight: 3 }), 'a'] },
    { reason: 'duplicate', first: [part(), 'a'], then: [part(), 'a'] },
    { reason: 'sender', first: [part({ phase: 'gather' }), 'a'], then: [part({ phase: 'gather', offset: 2 }), 'b'] },
  ];
  for (const { reason, first, then } of refusals) {
    it(`refuses with '${reason}' and keeps the earlier parts`, () => {
      const b = new PartBuffer({ size: SIZE });
      if (first) expect(b.accept(...first)).toEqual({ ok: true });
      const verdict = b.accept(...then);
      expect(verdict.ok).toBe(false);
      if (!verdict.ok) {
        expect(verdict.reason).toBe(reason);
        expect(verdict.detail).toMatch(/chunk/);
      }
      const s = b.peek(3, 0);
      if (first) {
        const slot = first[0].phase === 'reduce' ? s!.reduce.get(first[1]) : s!.gather.get(first[0].chunk);
        expect(slot!.filled).toBe(2);
        expect(Array.from(slot!.values)).toEqual([1, 2, 0, 0]);
      } else expect(s).toBeUndefined(); // refused before anything was allocated
    });
  }

  it('lets a gather chunk and a reduce contribution differ in weight (only reduce weights must agree)', () => {
    const b = new PartBuffer({ size: SIZE });
    b.accept(part({ phase: 'gather' }), 'a');
    expect(b.accept(part({ phase: 'gather', offset: 2, weight: 9 }), 'a')).toEqual({ ok: true });
  });

  it('buffers at most MAX_PENDING_ROUNDS rounds, forgetting the oldest', () => {
    const b = new PartBuffer({ size: SIZE });
    for (let r = 0; r <= MAX_PENDING_ROUNDS; r++) b.accept(part({ round: r }), 'a');
    expect(b.peek(0, 0)).toBeUndefined();
    for (let r = 1; r <= MAX_PENDING_ROUNDS; r++) expect(b.peek(r, 0)).toBeDefined();
    b.accept(part({ round: 1, attempt: 1 }), 'a');
    expect(b.peek(1, 0)).toBeUndefined();
    expect(b.peek(1, 1)).toBeDefined();
  });

  it('forgetBefore drops older rounds, every attempt of them, and keeps the rest', () => {
    const b = new PartBuffer({ size: SIZE });
    for (const [round, attempt] of [[1, 0], [2, 0], [2, 1], [3, 0]]) b.accept(part({ round, attempt }), 'a');
    b.forgetBefore(3);
    expect([b.peek(1, 0), b.peek(2, 0), b.peek(2, 1)]).toEqual([undefined, undefined, undefined]);
    expect(b.peek(3, 0)).toBeDefined();
  });

  it('gatheredChunks lists the complete chunks of a round, and opens none', () => {
    const b = new PartBuffer({ size: SIZE });
    // 10 values in 3 chunks: lengths 4, 3, 3.
    b.accept(part({ phase: 'gather', chunk: 0, total: 4, values: new Float32Array(4) }), 'a');
    b.accept(part({ phase: 'gather', chunk: 1, total: 3, values: new Float32Array(2) }), 'b');
    b.accept(part({ phase: 'gather', chunk: 2, total: 3, values: new Float32Array(3) }), 'c');
    expect(b.gatheredChunks(3, 0, 3, 10)).toEqual([0, 2]);
    expect(b.gatheredChunks(4, 0, 3, 10)).toEqual([]);
    expect(b.peek(4, 0)).toBeUndefined();
  });

  it('wakes waiters on every accepted part, so waitUntil resolves when the round completes', async () => {
    const b = new PartBuffer({ size: SIZE });
    const s = b.open(3, 0);
    const signal = new AbortController().signal;
    const done = waitUntil(s.changed, () => s.contribution('a', 4) !== undefined, signal, () => new Error('aborted'));
    b.accept(part(), 'a');
    expect(s.changed.length).toBe(1); // re-checked, not done, waiting again
    b.accept(part({ offset: 2 }), 'a');
    await done;
    expect(s.changed.length).toBe(0);
  });

  it('does not wake waiters for a refused part', () => {
    const b = new PartBuffer({ size: SIZE });
    b.accept(part(), 'a');
    const s = b.open(3, 0);
    let woken = 0;
    s.changed.push(() => woken++);
    b.accept(part(), 'a');
    expect(woken).toBe(0);
  });

  it('reset drops everything and wakes the waiters, which then end by their signal', async () => {
    const b = new PartBuffer({ size: SIZE });
    const s = b.open(3, 0);
    const ac = new AbortController();
    const waiting = waitUntil(s.changed, () => s.contribution('a', 4) !== undefined, ac.signal, () => new Error('aborted'));
    b.reset();
    expect(b.peek(3, 0)).toBeUndefined();
    // Parts of the same round now land in a fresh buffer, not in the one the old wait holds.
    b.accept(part(), 'a');
    b.accept(part({ offset: 2 }), 'a');
    expect(s.contribution('a', 4)).toBeUndefined();
    ac.abort();
    await expect(waiting).rejects.toThrow('aborted');
  });

  it('drop forgets one round', () => {
    const b = new PartBuffer({ size: SIZE });
    b.accept(part(), 'a');
    b.accept(part({ attempt: 1 }), 'a');
    b.drop(3, 0);
    expect(b.peek(3, 0)).toBeUndefined();
    expect(b.peek(3, 1)).toBeDefined();
  });
});
