/**
 * Training a byte-level BPE vocabulary: count the corpus's pieces (streaming, memory ∝ distinct pieces), then
 * repeatedly merge the most frequent adjacent pair, ties broken by the smaller pair key (deterministic).
 * Pair counts are updated only in the pieces that contain the merged pair, with a max-heap of (count, pair)
 * whose stale entries are skipped on pop — fast enough for tens of thousands of merges.
 */
import { DataError } from '../../errors.ts';
import { BpeTokenizer, bpePieces, pairKey } from './bpe.ts';

const encoder = new TextEncoder();

export class PieceCounter {
  readonly counts = new Map<string, number>();
  add(text: string): void {
    for (const p of bpePieces(text)) this.counts.set(p, (this.counts.get(p) ?? 0) + 1);
  }
}

/** Smallest vocabulary a byte-level BPE can have: 256 bytes and the two specials. */
export const MIN_BPE_VOCAB = 258;

class MaxHeap {
  private items: Array<[number, number]> = []; // [count, key]
  get size(): number {
    return this.items.length;
  }
  private above(i: number, j: number): boolean {
    const a = this.items[i];
    const b = this.items[j];
    return a[0] > b[0] || (a[0] === b[0] && a[1] < b[1]);
  }
  push(item: [number, number]): void {
    const h = this.items;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }
  pop(): [number, number] | undefined {
    const h = this.items;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.above(l, m)) m = l;
        if (r < h.length && this.above(r, m)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

export function trainBpe(counter: PieceCounter, vocabSize: number, onProgress?: (merges: number, target: number) => void): BpeTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_BPE_VOCAB) {
    throw new DataError(`--vocab-size ${vocabSize} is too small for byte-level BPE (at least ${MIN_BPE_VOCAB}: 256 bytes and 2 special tokens)`);
  }
  const target = vocabSize - MIN_BPE_VOCAB;
  const words: number[][] = [];
  const freq: number[] = [];
  for (const [piece, count] of counter.counts) {
    words.push(Array.from(encoder.encode(piece)));
    freq.push(count);
  }
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: 1 | -1) => {
    const ids = words[w];
    for (let i = 0; i + 1 < ids.length; i++) {
      const k = pairKey(ids[i], ids[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[w]);
      if (sign > 0) {
        let s = pairWords.get(k);
        if (!s) pairWords.set(k, (s = new Set()));
        s.add(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);
  const heap = new MaxHeap();
  for (const [k, c] of pairCount) heap.push([c, k]);

  const merges: Array<[number, number]> = [];
  while (merges.length < target) {
    const top = heap.pop();
    if (!top) break; // every piece is a single token: nothing left to merge
    const [count, key] = top;
    if (count <= 0 || pairCount.get(key) !== count) continue; // stale entry
    const a = Math.floor(key / 16777216);
    const b = key % 16777216;
    const id = 256 + merges.length;
    merges.push([a, b]);
    const touched = new Set<number>();
    for (const w of pairWords.get(key) ?? []) {
      const ids = words[w];
      let has = false;
      for (let i = 0; i + 1 < ids.length; i++) if (ids[i] === a && ids[i + 1] === b) has = true;
      if (!has) continue;
      addPairs(w, -1);
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
          next.push(id);
          i++;
        } else next.push(ids[i]);
      }
      words[w] = next;
      addPairs(w, 1);
      for (let i = 0; i + 1 < next.length; i++) touched.add(pairKey(next[i], next[i + 1]));
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of touched) {
      const c = pairCount.get(k) ?? 0;
      if (c > 0) heap.push([c, k]);
    }
    onProgress?.(merges.length, target);
  }
  return new BpeTokenizer(merges);
}
