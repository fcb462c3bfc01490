/**
 * everyoneRouted: after the greedy router, every stage peer gets at least one micro-batch where its stage has
 * enough of them (a peer with none could not average), taken from the stage's busiest peer, last one first.
 */
import { describe, expect, it } from 'vitest';
import type { PipelinePlan } from '../../coordinator/pipeline/plan-types.ts';
import { everyoneRouted } from '../../coordinator/pipeline/routing.ts';

// Two stages: stage 0 served by a and b, stage 1 by c and d.
const PLAN: PipelinePlan = {
  stages: [
    { from: 0, to: 3, peers: ['a', 'b'] },
    { from: 3, to: 6, peers: ['c', 'd'] },
  ],
};
const PARTICIPANTS = ['a', 'b', 'c', 'd'];

describe('everyoneRouted', () => {
  it('leaves routes alone when every stage peer already has a micro-batch', () => {
    const routes = [
      [0, 2],
      [1, 3],
    ];
    expect(everyoneRouted(PLAN, PARTICIPANTS, routes)).toEqual(routes);
  });

  it("moves the busiest peer's last micro-batch to a peer that has none", () => {
    // b (1) and d (3) got nothing; a and c carry all three micro-batches.
    const routes = [
      [0, 2],
      [0, 2],
      [0, 2],
    ];
    expect(everyoneRouted(PLAN, PARTICIPANTS, routes)).toEqual([
      [0, 2],
      [0, 2],
      [1, 3],
    ]);
  });

  it('takes from the busiest of several peers', () => {
    const plan: PipelinePlan = { stages: [{ from: 0, to: 6, peers: ['a', 'b', 'c'] }] };
    const routes = [[0], [1], [1], [1], [0]];
    // c (2) has none; b has three, a two: b's last micro-batch (index 3) moves.
    expect(everyoneRouted(plan, ['a', 'b', 'c'], routes)).toEqual([[0], [1], [1], [2], [0]]);
  });

  it('never leaves the busiest peer without a micro-batch (too few micro-batches for the stage)', () => {
    const routes = [[0, 2]];
    expect(everyoneRouted(PLAN, PARTICIPANTS, routes)).toEqual([[0, 2]]);
  });

  it('ignores stage peers that are not participating this round', () => {
    const routes = [
      [0, 1],
      [0, 1],
    ];
    // b and d sit out: only a and c participate, and they already carry everything.
    expect(everyoneRouted(PLAN, ['a', 'c'], routes)).toEqual(routes);
  });

  it('does not mutate the routes it is given', () => {
    const routes = [
      [0, 2],
      [0, 2],
    ];
    const copy = routes.map((r) => [...r]);
    everyoneRouted(PLAN, PARTICIPANTS, routes);
    expect(routes).toEqual(copy);
  });
});
