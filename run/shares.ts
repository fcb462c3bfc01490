/**
 * How a round's work and a run's data are shared among peers: both in proportion to measured speed, both
 * deterministic (the same inputs give the same shares on every machine), so anyone can recompute who trained
 * on what.
 */

/** Micro-batches per participant for one round: the run's total split in proportion to speed, at least 1 each. */
export function splitMicroBatches(total: number, speeds: number[]): number[] {
  const n = speeds.length;
  if (n === 0) return [];
  const sum = speeds.reduce((a, b) => a + Math.max(b, 1e-9), 0);
  const raw = speeds.map((s) => (Math.max(s, 1e-9) / sum) * total);
  const out = raw.map((x) => Math.max(1, Math.floor(x)));
  // Hand out what rounding left to the largest remainders (deterministic: ties go to the lower index)...
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = raw.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; left > 0; k = (k + 1) % n, left--) out[order[k][1]]++;
  // ...or take back what the minimum of one gave too much, from the largest shares (never below one: with
  // fewer micro-batches than participants, each still gets one).
  while (left < 0) {
    let big = 0;
    for (let i = 1; i < n; i++) if (out[i] > out[big]) big = i;
    if (out[big] <= 1) break;
    out[big]--;
    left++;
  }
  return out;
}

/**
 * The training shards a peer gets, in proportion to its speed among the peers online: its share of the
 * training sequences, rounded up to whole shards (at least one), taken round-robin from an offset given by its
 * slot so that peers spread over the data. Deterministic: the same inputs give the same assignment.
 */
export function assignShards(shards: Array<{ file: string; sequences: number }>, slot: number, speed: number, othersSpeeds: number[]): string[] {
  if (shards.length === 0) return [];
  const total = shards.reduce((a, s) => a + s.sequences, 0);
  const sum = othersSpeeds.reduce((a, b) => a + Math.max(b, 0), 0) + Math.max(speed, 0);
  // A peer whose speed is not yet known counts as average.
  const share = sum > 0 && speed > 0 ? speed / sum : 1 / (othersSpeeds.length + 1);
  const target = share * total;
  const out: string[] = [];
  let got = 0;
  for (let k = 0; k < shards.length && (out.length === 0 || got < target); k++) {
    const s = shards[(slot + k) % shards.length];
    out.push(s.file);
    got += s.sequences;
  }
  return out;
}
