/**
 * Pipeline planning: optimal stage cuts, stage counts chosen by memory, stable re-planning as members come
 * and go, and micro-batch routing that follows speed and latency.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TRAIN, type ModelConfig } from '../../engine/config.ts';
import { partNames } from '../../engine/model.ts';
import type { StageRange } from '../../engine/stages.ts';
import { planPipeline } from '../../coordinator/pipeline/assignment.ts';
import { stageMemoryBytes } from '../../coordinator/pipeline/memory.ts';
import { balancedStageRanges, chooseStageCount, describePlan, partCosts } from '../../coordinator/pipeline/partition.ts';
import type { PipelinePlan, PlanMember } from '../../coordinator/pipeline/plan-types.ts';
import { routeMicroBatches } from '../../coordinator/pipeline/routing.ts';

const MODEL: ModelConfig = { vocabSize: 65, blockSize: 32, nLayer: 4, nHead: 4, nEmbd: 64, objective: 'causal' };
const TRAIN = { ...DEFAULT_TRAIN, seqLen: 32 };
const PARTS = partNames(MODEL).length;
const GIB = 2 ** 30;

const member = (id: string, overrides: Partial<PlanMember> = {}): PlanMember => ({ id, tokensPerSec: 100, memoryBytes: GIB, rttMs: 10, ...overrides });

const largestStageCost = (costs: number[], ranges: StageRange[]): number =>
  Math.max(...ranges.map((r) => costs.slice(r.from, r.to).reduce((a, b) => a + b, 0)));

/** Every way to cut `n` parts into `S` contiguous non-empty ranges. */
function allSplits(n: number, S: number, from = 0): StageRange[][] {
  if (S === 1) return [[{ from, to: n }]];
  const out: StageRange[][] = [];
  for (let to = from + 1; to <= n - S + 1; to++) {
    for (const rest of allSplits(n, S - 1, to)) out.push([{ from, to }, ...rest]);
  }
  return out;
}

/** Memory that holds every stage of the balanced S-stage split, and no more. */
function memoryForStages(S: number): number {
  const ranges = balancedStageRanges(partCosts(MODEL), S);
  return Math.max(...ranges.map((r) => stageMemoryBytes(MODEL, TRAIN, r)));
}

function stageOf(plan: PipelinePlan, id: string): number {
  return plan.stages.findIndex((s) => s.peers.includes(id));
}

describe('partCosts', () => {
  it('has one cost per part, blocks equal and dominant, embed smallest', () => {
    const costs = partCosts(MODEL);
    expect(costs).toHaveLength(PARTS);
    const blocks = costs.slice(1, -1);
    expect(new Set(blocks).size).toBe(1);
    expect(costs[0]).toBeLessThan(costs[PARTS - 1]);
    expect(costs[PARTS - 1]).toBeLessThan(blocks[0]);
    expect(costs.every((x) => x > 0)).toBe(true);
  });

  it('makes the head dominant for a large vocabulary', () => {
    const costs = partCosts({ ...MODEL, vocabSize: 50257 });
    expect(costs[costs.length - 1]).toBeGreaterThan(costs[1]);
  });
});

describe('balancedStageRanges', () => {
  const cases: Array<[string, number[]]> = [
    ['uniform', [1, 1, 1, 1, 1, 1]],
    ['model-like', [1, 10, 10, 10, 10, 4]],
    ['heavy tail', [1, 2, 3, 4, 5, 30]],
    ['heavy head', [30, 1, 1, 1, 1, 1, 1]],
    ['mixed', [7, 2, 9, 4, 4, 1, 8, 3]],
    ['single', [5]],
  ];
  for (const [name, costs] of cases) {
    it(`is optimal, contiguous and complete: ${name}`, () => {
      for (let S = 1; S <= costs.length; S++) {
        const ranges = balancedStageRanges(costs, S);
        expect(ranges).toHaveLength(S);
        expect(ranges[0].from).toBe(0);
        expect(ranges[S - 1].to).toBe(costs.length);
        ranges.forEach((r, i) => {
          expect(r.to).toBeGreaterThan(r.from);
          if (i > 0) expect(r.from).toBe(ranges[i - 1].to);
        });
        const bruteForce = Math.min(...allSplits(costs.length, S).map((split) => largestStageCost(costs, split)));
        expect(largestStageCost(costs, ranges)).toBe(bruteForce);
      }
    });
  }

  it('is deterministic', () => {
    const costs = [3, 1, 4, 1, 5, 9, 2, 6];
    expect(balancedStageRanges(costs, 3)).toEqual(balancedStageRanges([...costs], 3));
  });

  it.each([0, -1, 1.5, 7])('rejects %s stages for 6 parts', (S) => {
    expect(() => balancedStageRanges([1, 1, 1, 1, 1, 1], S)).toThrow(expect.objectContaining({ name: 'ConfigError', key: 'stages' }));
  });
});

describe('stageMemoryBytes', () => {
  it('grows with the parts held, and the head stage pays for logits', () => {
    const one = stageMemoryBytes(MODEL, TRAIN, { from: 1, to: 2 });
    const two = stageMemoryBytes(MODEL, TRAIN, { from: 1, to: 3 });
    expect(two).toBeGreaterThan(one);
    const lastBlock = stageMemoryBytes(MODEL, TRAIN, { from: PARTS - 2, to: PARTS - 1 });
    const lastBlockAndHead = stageMemoryBytes(MODEL, TRAIN, { from: PARTS - 2, to: PARTS });
    const tokens = TRAIN.microBatchSize * TRAIN.seqLen;
    expect(lastBlockAndHead - lastBlock).toBeGreaterThan(tokens * MODEL.vocabSize * 4 * 3);
  });

  it('counts parameter state as 16 bytes per parameter', () => {
    const smallBatch = { ...TRAIN, microBatchSize: 1, seqLen: 1 };
    const embedOnly = stageMemoryBytes(MODEL, smallBatch, { from: 0, to: 1 });
    const params = (MODEL.vocabSize + MODEL.blockSize) * MODEL.nEmbd;
    expect(embedOnly).toBe(params * 16 + MODEL.nEmbd * 4 * 16);
  });
});

describe('chooseStageCount', () => {
  it('picks one stage when memory is ample', () => {
    expect(chooseStageCount(MODEL, TRAIN, [member('a'), member('b'), member('c')], 'auto')).toBe(1);
  });

  it('picks more stages when members are small', () => {
    const memory = memoryForStages(3);
    expect(memoryForStages(2)).toBeGreaterThan(memory); // precondition: two stages would not fit
    const members = ['a', 'b', 'c', 'd'].map((id) => member(id, { memoryBytes: memory }));
    expect(chooseStageCount(MODEL, TRAIN, members, 'auto')).toBe(3);
  });

  it('uses a big member for the biggest stage', () => {
    const big = memoryForStages(1);
    const small = memoryForStages(3);
    expect(chooseStageCount(MODEL, TRAIN, [member('big', { memoryBytes: big }), member('s', { memoryBytes: small })], 'auto')).toBe(1);
  });

  it('respects a requested number even beyond the members', () => {
    expect(chooseStageCount(MODEL, TRAIN, [member('a')], 4)).toBe(4);
    expect(() => chooseStageCount(MODEL, TRAIN, [member('a')], PARTS + 1)).toThrow(expect.objectContaining({ name: 'ConfigError' }));
  });

  it('falls back to the finest split members allow when none fits everything', () => {
    const memory = memoryForStages(3);
    const members = ['a', 'b'].map((id) => member(id, { memoryBytes: memory }));
    expect(chooseStageCount(MODEL, TRAIN, members, 'auto')).toBe(2);
    expect(chooseStageCount(MODEL, TRAIN, [], 'auto')).toBe(1);
  });
});

describe('planPipeline', () => {
  const FOUR = ['a', 'b', 'c', 'd'].map((id) => member(id));

  it('assigns everyone, covers every stage, and reports all as moved on a first plan', () => {
    const r = planPipeline(MODEL, TRAIN, FOUR, 2);
    expect(r.plan.stages).toHaveLength(2);
    expect(r.plan.stages.flatMap((s) => s.peers).sort()).toEqual(['a', 'b', 'c', 'd']);
    expect(r.plan.stages.every((s) => s.peers.length === 2)).toBe(true);
    expect(r.moved).toEqual(['a', 'b', 'c', 'd']);
    expect(r.unassigned).toEqual([]);
    expect(r.waiting).toBeUndefined();
  });

  it('keeps assignments stable when a member joins', () => {
    const first = planPipeline(MODEL, TRAIN, FOUR, 2).plan;
    const r = planPipeline(MODEL, TRAIN, [...FOUR, member('e')], 2, first);
    for (const id of ['a', 'b', 'c', 'd']) expect(stageOf(r.plan, id)).toBe(stageOf(first, id));
    expect(r.moved).toEqual(['e']);
  });

  it('sends a newcomer to the stage with the least throughput per cost', () => {
    const ranges = balancedStageRanges(partCosts(MODEL), 2);
    const previous: PipelinePlan = { stages: [{ ...ranges[0], peers: ['a', 'b'] }, { ...ranges[1], peers: ['c'] }] };
    const r = planPipeline(MODEL, TRAIN, [member('a'), member('b'), member('c'), member('d')], 2, previous);
    expect(r.plan.stages.map((s) => s.peers)).toEqual([['a', 'b'], ['c', 'd']]);
    expect(r.moved).toEqual(['d']);
  });

  it("fills a stage whose only peer left by moving a member, and lists it in moved", () => {
    const ranges = balancedStageRanges(partCosts(MODEL), 2);
    const previous: PipelinePlan = { stages: [{ ...ranges[0], peers: ['a', 'b', 'c'] }, { ...ranges[1], peers: ['gone'] }] };
    const members = [member('a', { tokensPerSec: 50 }), member('b', { tokensPerSec: 300 }), member('c', { tokensPerSec: 100 })];
    const r = planPipeline(MODEL, TRAIN, members, 2, previous);
    expect(r.waiting).toBeUndefined();
    expect(r.plan.stages.every((s) => s.peers.length > 0)).toBe(true);
    expect(r.moved).toHaveLength(1);
    expect(stageOf(r.plan, r.moved[0])).toBe(1);
    // The move that leaves the slowest stage fastest: b alone outpaces a + c; a + c beat b on the other side.
    expect(r.plan.stages.map((s) => s.peers)).toEqual([['a', 'c'], ['b']]);
    expect(r.plan.stages.flatMap((s) => s.peers)).not.toContain('gone');
  });

  it('sets waiting when members are fewer than stages', () => {
    const r = planPipeline(MODEL, TRAIN, [member('a'), member('b')], 3);
    expect(r.plan.stages).toHaveLength(3);
    expect(r.plan.stages.filter((s) => s.peers.length === 0)).toHaveLength(1);
    expect(r.waiting).toMatch(/stage \d .*needs a peer/);
  });

  it('leaves out members with too little memory', () => {
    const r = planPipeline(MODEL, TRAIN, [member('a'), member('b'), member('tiny', { memoryBytes: 1024 })], 'auto');
    expect(r.unassigned).toEqual(['tiny']);
    expect(r.plan.stages.flatMap((s) => s.peers)).not.toContain('tiny');
  });

  it('puts a big member on the stage only it can hold', () => {
    const ranges = balancedStageRanges(partCosts(MODEL), 2);
    const needs = ranges.map((r) => stageMemoryBytes(MODEL, TRAIN, r));
    const hungry = needs[0] > needs[1] ? 0 : 1;
    const members = [member('a', { memoryBytes: Math.max(...needs) }), member('b', { memoryBytes: Math.min(...needs) })];
    const r = planPipeline(MODEL, TRAIN, members, 2);
    expect(r.plan.stages[hungry].peers).toEqual(['a']);
    expect(r.waiting).toBeUndefined();
  });

  it('reassigns everyone when the stage count changes', () => {
    const first = planPipeline(MODEL, TRAIN, FOUR, 2).plan;
    const r = planPipeline(MODEL, TRAIN, FOUR, 3, first);
    expect(r.plan.stages).toHaveLength(3);
    expect(r.plan.stages.every((s) => s.peers.length > 0)).toBe(true);
    const unchangedRange = (id: string) => {
      const before = first.stages[stageOf(first, id)];
      const after = r.plan.stages[stageOf(r.plan, id)];
      return before.from === after.from && before.to === after.to;
    };
    expect(r.moved).toEqual(['a', 'b', 'c', 'd'].filter((id) => !unchangedRange(id)));
  });

  it('is deterministic whatever the member order', () => {
    const members = [member('d', { tokensPerSec: 30 }), member('a', { tokensPerSec: 0 }), member('c', { tokensPerSec: 90 }), member('b')];
    const r1 = planPipeline(MODEL, TRAIN, members, 3);
    const r2 = planPipeline(MODEL, TRAIN, [...members].reverse(), 3);
    expect(r2).toEqual(r1);
  });
});

describe('routeMicroBatches', () => {
  const COSTS = partCosts(MODEL);
  const ranges = balancedStageRanges(COSTS, 2);
  const counts = (routes: number[][], stage: number, participants: string[]) => {
    const out: Record<string, number> = {};
    for (const route of routes) out[participants[route[stage]]] = (out[participants[route[stage]]] ?? 0) + 1;
    return out;
  };

  it.each([
    ['equal speeds', 100, 100, 10, [5, 5]],
    ['equal speeds, odd count', 100, 100, 11, [6, 5]],
    ['twice as fast', 200, 100, 30, [20, 10]],
    ['three times as fast', 300, 100, 40, [30, 10]],
  ])('balances by speed: %s', (_name, fast, slow, microBatches, [expectedFast, expectedSlow]) => {
    const plan: PipelinePlan = { stages: [{ from: 0, to: PARTS, peers: ['p', 'q'] }] };
    const members = new Map([member('p', { tokensPerSec: fast }), member('q', { tokensPerSec: slow })].map((m) => [m.id, m]));
    const c = counts(routeMicroBatches(plan, ['p', 'q'], members, COSTS, microBatches, 512), 0, ['p', 'q']);
    expect(Math.abs(c.p - expectedFast)).toBeLessThanOrEqual(1);
    expect(Math.abs(c.q - expectedSlow)).toBeLessThanOrEqual(1);
  });

  it('prefers the lower-latency peer when speeds are equal', () => {
    const plan: PipelinePlan = { stages: [{ from: 0, to: PARTS, peers: ['far', 'near'] }] };
    const members = new Map([member('far', { rttMs: 80 }), member('near', { rttMs: 5 })].map((m) => [m.id, m]));
    const participants = ['far', 'near'];
    const routes = routeMicroBatches(plan, participants, members, COSTS, 5, 512);
    expect(participants[routes[0][0]]).toBe('near');
    expect(counts(routes, 0, participants)).toEqual({ near: 3, far: 2 });
  });

  it('charges each hop its latency', () => {
    const plan: PipelinePlan = { stages: [{ ...ranges[0], peers: ['a'] }, { ...ranges[1], peers: ['x', 'y'] }] };
    // x is far: the hop a → x costs more than a → y at equal speed.
    const members = new Map([member('a', { rttMs: 5 }), member('x', { rttMs: 200 }), member('y', { rttMs: 5 })].map((m) => [m.id, m]));
    const routes = routeMicroBatches(plan, ['a', 'x', 'y'], members, COSTS, 1, 512);
    expect(routes).toEqual([[0, 2]]);
  });

  it('is deterministic and routes each stage to one of its own participating peers', () => {
    const plan: PipelinePlan = {
      stages: [
        { ...ranges[0], peers: ['a', 'b', 'c'] },
        { ...ranges[1], peers: ['d', 'e', 'gone'] },
      ],
    };
    const members = new Map(
      [member('a', { tokensPerSec: 50 }), member('b', { tokensPerSec: 0 }), member('c', { rttMs: 0 }), member('d', { rttMs: 40 }), member('e')].map((m) => [m.id, m]),
    );
    const participants = ['e', 'd', 'c', 'b', 'a'];
    const routes = routeMicroBatches(plan, participants, members, COSTS, 17, 512);
    expect(routes).toEqual(routeMicroBatches(plan, participants, members, COSTS, 17, 512));
    expect(routes).toHaveLength(17);
    for (const route of routes) {
      expect(route).toHaveLength(2);
      route.forEach((p, s) => expect(plan.stages[s].peers).toContain(participants[p]));
    }
  });

  it('refuses a stage with no participating peer', () => {
    const plan: PipelinePlan = { stages: [{ ...ranges[0], peers: ['a'] }, { ...ranges[1], peers: ['gone'] }] };
    expect(() => routeMicroBatches(plan, ['a'], new Map(), COSTS, 2, 512)).toThrow(/stage 1/);
  });
});

describe('describePlan', () => {
  it('names the parts of each stage', () => {
    const plan: PipelinePlan = { stages: [{ from: 0, to: 2, peers: ['a'] }, { from: 2, to: PARTS, peers: ['b', 'c'] }] };
    expect(describePlan(plan, MODEL)).toEqual([
      { stage: 0, parts: ['embed', 'block0'], peers: ['a'] },
      { stage: 1, parts: ['block1', 'block2', 'block3', 'head'], peers: ['b', 'c'] },
    ]);
  });
});
