/**
 * The shapes every pipeline-planning file shares: a member as the planner sees it, a stage and its peers, the
 * plan. Also the one rule for reading a member's measurements, so that assignment and routing treat an
 * unmeasured peer the same way.
 */

export interface PlanMember {
  id: string;
  /** Measured throughput (tokens/s the peer reported; 0 = not yet measured, treat as the median of the known ones, or 1 if none). */
  tokensPerSec: number;
  /** Memory the peer offers (bytes). */
  memoryBytes: number;
  /** Round-trip time coordinator→peer in ms (0 = unknown). */
  rttMs: number;
}

export interface StagePlan {
  from: number;
  to: number;
  peers: string[];
}

export interface PipelinePlan {
  stages: StagePlan[];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A member's value, or the median of the known ones (unmeasured peers are assumed typical), or `fallback`. */
export function withUnknownsAsMedian(members: Iterable<PlanMember>, value: (m: PlanMember) => number, fallback: number): (m: PlanMember | undefined) => number {
  const known = [...members].map(value).filter((v) => v > 0);
  const typical = known.length > 0 ? median(known) : fallback;
  return (m) => (m && value(m) > 0 ? value(m) : typical);
}
