/** Learning-rate schedule: linear warmup, then cosine decay to a floor. A pure function of the step. */
export interface ScheduleConfig {
  lr: number;
  minLrRatio: number;
  warmupSteps: number;
  totalSteps: number;
}

/** Learning rate for optimizer step `step` (0-based). */
export function learningRate(step: number, s: ScheduleConfig): number {
  const minLr = s.lr * s.minLrRatio;
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  if (step >= s.totalSteps) return minLr;
  const decaySteps = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = (step - s.warmupSteps) / decaySteps; // in [0, 1)
  return minLr + 0.5 * (1 + Math.cos(Math.PI * progress)) * (s.lr - minLr);
}
