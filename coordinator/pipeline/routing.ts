/**
 * Routing: which stage peer each micro-batch of a round visits. Work follows speed and, less strongly,
 * latency; then every stage peer is given at least one micro-batch, since a peer without one could not
 * take part in its stage's averaging.
 */
import { ConfigError } from '../../engine/errors.ts';
import { prefixSums, rangeCost } from './partition.ts';
import { withUnknownsAsMedian, type PipelinePlan, type PlanMember } from './plan-types.ts';

/**
 * How much a hop's latency counts against compute time when choosing a peer. Below 1 because in a full
 * pipeline transfers overlap other micro-batches' compute; only part of the latency shows on the critical path.
 */
const LATENCY_WEIGHT = 0.25;

/**
 * Routes for one round: micro-batch m goes through route[m][s] = index into `participants` of the peer
 * serving stage s. Greedy and deterministic: each (micro-batch, stage) in order goes to the stage peer that
 * would finish it first given the work already routed to it, plus a small charge for the hop's latency, so
 * work spreads in proportion to speed and equal peers are split by latency.
 */
export function routeMicroBatches(
  plan: PipelinePlan,
  participants: string[],
  members: Map<string, PlanMember>,
  costs: number[],
  microBatches: number,
  tokensPerMicro: number,
): number[][] {
  const indexOf = new Map(participants.map((id, i) => [id, i]));
  const candidates = plan.stages.map((stage, s) => {
    const present = stage.peers.map((id) => indexOf.get(id)).filter((i): i is number => i !== undefined);
    if (present.length === 0) throw new ConfigError(`stage ${s} has no participating peer this round`, 'participants');
    return present;
  });
  const prefix = prefixSums(costs);
  const modelCost = prefix[prefix.length - 1];
  const stageWork = plan.stages.map((r) => rangeCost(prefix, r) * tokensPerMicro);
  const known = [...members.values()];
  const tokensPerSecOf = withUnknownsAsMedian(known, (m) => m.tokensPerSec, 1);
  const rttOf = withUnknownsAsMedian(known, (m) => m.rttMs, 0);
  // tokensPerSec is whole-model throughput, so a peer does `modelCost` cost units per token it could process.
  const speed = participants.map((id) => tokensPerSecOf(members.get(id)) * modelCost);
  const rttSeconds = participants.map((id) => rttOf(members.get(id)) / 1000);
  const load = new Array<number>(participants.length).fill(0);

  const routes: number[][] = [];
  for (let m = 0; m < microBatches; m++) {
    const route: number[] = [];
    for (let s = 0; s < plan.stages.length; s++) {
      const prev = s > 0 ? route[s - 1] : undefined;
      // The first hop comes from the coordinator's side: half a round trip; later hops average both ends.
      const hop = (p: number) => (prev === undefined ? rttSeconds[p] / 2 : (rttSeconds[prev] + rttSeconds[p]) / 2);
      const finish = (p: number) => (load[p] + stageWork[s]) / speed[p] + LATENCY_WEIGHT * hop(p);
      const chosen = candidates[s].reduce((best, p) => (finish(p) < finish(best) ? p : best));
      load[chosen] += stageWork[s];
      route.push(chosen);
    }
    routes.push(route);
  }
  return routes;
}

/**
 * Gives every stage peer at least one micro-batch where the stage has enough of them, taking one from the
 * stage's busiest peer (the greedy router may leave a slow peer out): a peer with none could not average, so
 * it would have to sit the round out and fetch the state again.
 */
export function everyoneRouted(plan: PipelinePlan, participants: string[], routes: number[][]): number[][] {
  const out = routes.map((r) => [...r]);
  plan.stages.forEach((stage, s) => {
    const peers = stage.peers.map((id) => participants.indexOf(id)).filter((i) => i >= 0);
    for (const p of peers) {
      const count = (q: number) => out.filter((r) => r[s] === q).length;
      if (count(p) > 0) continue;
      const busiest = peers.reduce((a, b) => (count(b) > count(a) ? b : a));
      if (count(busiest) < 2) continue;
      // The last micro-batch of the busiest peer moves: routes stay in order for everyone else.
      const m = out.map((r, i) => [r, i] as const).filter(([r]) => r[s] === busiest).at(-1)![1];
      out[m][s] = p;
    }
  });
  return out;
}
