/**
 * Text-quality metrics for evaluation, as pure functions over token lists:
 *  - corpus BLEU-4 (Papineni et al. 2002): geometric mean of clipped n-gram precisions (n = 1..4, counts summed
 *    over the corpus) times the brevity penalty exp(1 - r/c) when the candidates are shorter than the references;
 *  - distinct-n: distinct n-grams / all n-grams over the samples;
 *  - repetition rate: share of n-grams (n = 4 by default) in a sample that already occurred earlier in it.
 */

function ngrams(tokens: string[], n: number): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0001');
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

export interface BleuResult {
  bleu: number;
  precisions: number[];
  brevityPenalty: number;
  candidateLength: number;
  referenceLength: number;
}

/** Corpus BLEU of candidates against one reference each; 0 when some n-gram order has no match. */
export function corpusBleu(candidates: string[][], references: string[][], maxN = 4): BleuResult {
  if (candidates.length !== references.length) throw new Error(`BLEU needs one reference per candidate (${candidates.length} vs ${references.length})`);
  const matches = new Array<number>(maxN).fill(0);
  const totals = new Array<number>(maxN).fill(0);
  let c = 0;
  let r = 0;
  candidates.forEach((cand, i) => {
    const ref = references[i];
    c += cand.length;
    r += ref.length;
    for (let n = 1; n <= maxN; n++) {
      const cg = ngrams(cand, n);
      const rg = ngrams(ref, n);
      for (const [g, count] of cg) matches[n - 1] += Math.min(count, rg.get(g) ?? 0);
      totals[n - 1] += Math.max(0, cand.length - n + 1);
    }
  });
  const precisions = matches.map((m, i) => (totals[i] > 0 ? m / totals[i] : 0));
  const brevityPenalty = c === 0 ? 0 : c > r ? 1 : Math.exp(1 - r / c);
  const bleu = precisions.some((p) => p === 0) ? 0 : brevityPenalty * Math.exp(precisions.reduce((s, p) => s + Math.log(p), 0) / maxN);
  return { bleu, precisions, brevityPenalty, candidateLength: c, referenceLength: r };
}

/** Distinct n-grams over all n-grams of all samples (0 when there are none). */
export function distinctN(samples: string[][], n: number): number {
  const all = new Set<string>();
  let total = 0;
  for (const s of samples) {
    for (const [g, count] of ngrams(s, n)) {
      all.add(g);
      total += count;
    }
  }
  return total === 0 ? 0 : all.size / total;
}

/** Mean over samples of the share of n-grams that repeat an earlier n-gram of the same sample. */
export function repetitionRate(samples: string[][], n = 4): number {
  const rates = samples
    .map((s) => {
      const seen = new Set<string>();
      let repeats = 0;
      let total = 0;
      for (let i = 0; i + n <= s.length; i++) {
        const key = s.slice(i, i + n).join('\u0001');
        if (seen.has(key)) repeats++;
        seen.add(key);
        total++;
      }
      return total ? repeats / total : undefined;
    })
    .filter((x): x is number => x !== undefined);
  return rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : 0;
}

/** Words and punctuation marks: the units BLEU and diversity are counted in, whatever the tokenizer. */
export function wordTokens(text: string): string[] {
  return text.match(/\p{L}+(?:['’]\p{L}+)*|\p{N}+|[^\s\p{L}\p{N}]/gu) ?? [];
}

/** Bits per character from a mean loss in nats per token and the corpus's characters per token. */
export function bitsPerCharacter(lossNatsPerToken: number, tokens: number, characters: number): number {
  return (lossNatsPerToken / Math.LN2) * (tokens / characters);
}
