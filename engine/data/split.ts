/** Deterministic train/validation assignment of documents by a hash of their text. */

/** FNV-1a over UTF-16 code units, 32-bit: stable across platforms and runs. */
export function textHash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** 'val' for about valFraction of documents (the same ones on every run and machine), 'train' for the rest. */
export function assignSplit(text: string, valFraction: number): 'train' | 'val' {
  return textHash32(text) % 10_000 < Math.round(valFraction * 10_000) ? 'val' : 'train';
}
