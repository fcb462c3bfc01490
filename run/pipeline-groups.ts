/**
 * Who averages with whom in a pipeline round, derived from the announcement alone so that every stage peer
 * and the coordinator (which observes every group) agree without talking: stage s's group is its peers that
 * were routed at least one micro-batch (a peer with none has nothing to contribute, and a zero weight is
 * not a valid contribution); the tied-embedding group (index S) joins the first and the last stage's groups.
 */
import type { PipelineAnnounce } from '../protocol/index.ts';

export interface AveragingGroups {
  /** Peer ids per stage, in participant order. */
  stages: string[][];
  /** The tied-embedding group (empty with one stage, where the embedding and the head share a peer). */
  tied: string[];
}

type Plan = Pick<PipelineAnnounce, 'participants' | 'stages' | 'routes'>;

export function averagingGroups(a: Plan): AveragingGroups {
  const S = a.stages.length;
  const routed = (s: number, p: number) => a.routes.some((r) => r[s] === p);
  const indices = a.stages.map((st, s) => st.peers.filter((p) => routed(s, p)).sort((x, y) => x - y));
  const stages = indices.map((ix) => ix.map((i) => a.participants[i]));
  const tied = S > 1 ? [...indices[0], ...indices[S - 1]].sort((x, y) => x - y).map((i) => a.participants[i]) : [];
  return { stages, tied };
}

/** The micro-batches routed through participant `me` at stage `s`. */
export function microBatchesOf(a: Plan, s: number, me: number): number[] {
  const out: number[] = [];
  a.routes.forEach((r, m) => {
    if (r[s] === me) out.push(m);
  });
  return out;
}
