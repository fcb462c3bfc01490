import { describe, expect, it } from 'vitest';
import { architectureDifference, countParams, DEFAULT_TRAIN, modelConfigFromPreset, validateModelConfig, validateTrainConfig } from '../../engine/config.ts';
import { parameterSpecs } from '../../engine/model.ts';

describe('model config', () => {
  it('presets have the advertised sizes', () => {
    expect(countParams(modelConfigFromPreset('tiny', 96))).toBeGreaterThan(0.75e6);
    expect(countParams(modelConfigFromPreset('tiny', 96))).toBeLessThan(0.9e6);
    expect(countParams(modelConfigFromPreset('small', 96))).toBeGreaterThan(10e6);
    expect(countParams(modelConfigFromPreset('small', 96))).toBeLessThan(12e6);
    // GPT-2 small: 124,439,808 parameters with its 50257-token vocabulary.
    expect(countParams(modelConfigFromPreset('gpt2', 50257))).toBe(124_439_808);
  });

  it('countParams agrees with the parameter list', () => {
    const c = modelConfigFromPreset('tiny', 85);
    const total = parameterSpecs(c).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
    expect(countParams(c)).toBe(total);
  });

  it.each([
    [{ nLayer: 4, nHead: 3, nEmbd: 128, blockSize: 64, vocabSize: 10 }, /nHead \(3\) must divide nEmbd \(128\)/],
    [{ nLayer: 0, nHead: 4, nEmbd: 128, blockSize: 64, vocabSize: 10 }, /nLayer must be an integer/],
    [{ nLayer: 2, nHead: 4, nEmbd: 128, blockSize: 64, vocabSize: 0 }, /vocabSize/],
    [{ nLayer: 2, nHead: 4, nEmbd: 128.5, blockSize: 64, vocabSize: 10 }, /nEmbd/],
    [{ nLayer: 2, nHead: 4, nEmbd: 128, blockSize: 64, vocabSize: 10, objective: 'prefix' }, /objective/],
    ['tiny', /model config must be an object/],
  ])('rejects %j', (raw, message) => {
    expect(() => validateModelConfig(raw)).toThrow(message);
  });

  it('rejects unknown presets naming the known ones', () => {
    expect(() => modelConfigFromPreset('huge', 10)).toThrow(/unknown preset "huge" \(known: tiny, small, gpt2\)/);
  });

  it('names the first differing architecture key', () => {
    const a = modelConfigFromPreset('tiny', 85);
    expect(architectureDifference(a, { ...a })).toBeUndefined();
    expect(architectureDifference(a, { ...a, nHead: 8 })).toEqual({ key: 'nHead', a: 4, b: 8 });
  });
});

describe('train config', () => {
  const model = modelConfigFromPreset('tiny', 85);
  it.each([
    [{ lr: -1 }, /lr must be a number in \(0, 10\]/],
    [{ lr: 0 }, /lr must be a number/],
    [{ batchSize: 10, microBatchSize: 4 }, /multiple of microBatchSize/],
    [{ seqLen: 129 }, /seqLen must be an integer in \[1, 128\]/],
    [{ beta2: 1 }, /beta2 must be below 1/],
    [{ eps: 0 }, /eps/],
    [{ warmupSteps: 1.5 }, /warmupSteps must be an integer/],
  ])('rejects %j', (over, message) => {
    expect(() => validateTrainConfig({ ...DEFAULT_TRAIN, ...over }, model)).toThrow(message);
  });
});
