import { describe, expect, it } from 'vitest';
import { learningRate } from '../../engine/schedule.ts';

const s = { lr: 1e-3, minLrRatio: 0.1, warmupSteps: 10, totalSteps: 110 };

describe('learning-rate schedule', () => {
  it('warms up linearly to the peak', () => {
    expect(learningRate(0, s)).toBeCloseTo(1e-4, 12);
    expect(learningRate(4, s)).toBeCloseTo(5e-4, 12);
    expect(learningRate(9, s)).toBeCloseTo(1e-3, 12);
  });
  it('decays along a cosine to the floor', () => {
    expect(learningRate(10, s)).toBeCloseTo(1e-3, 12);
    expect(learningRate(60, s)).toBeCloseTo(1e-4 + 0.5 * 9e-4, 12); // half-way: mean of peak and floor
    expect(learningRate(109, s)).toBeGreaterThan(1e-4);
    expect(learningRate(110, s)).toBeCloseTo(1e-4, 12);
    expect(learningRate(5000, s)).toBeCloseTo(1e-4, 12);
  });
  it('is monotone after warmup', () => {
    for (let t = 10; t < 120; t++) expect(learningRate(t + 1, s)).toBeLessThanOrEqual(learningRate(t, s));
  });
  it('handles no warmup', () => {
    expect(learningRate(0, { ...s, warmupSteps: 0 })).toBeCloseTo(1e-3, 12);
  });
});
