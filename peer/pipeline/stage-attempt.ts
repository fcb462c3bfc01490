/**
 * One attempt of a pipeline round as a stage peer sees it: the announcement, which micro-batches pass us, which
 * arrived and which are through, and its own cancellation — abandoned whole when superseded, never restarted.
 */
import type { PipelineAnnounce } from '../../protocol/index.ts';
import { microBatchesOf } from '../../run/pipeline-groups.ts';

export interface Attempt {
  a: PipelineAnnounce;
  me: number;
  stage: number;
  expected: Set<number>;
  received: Set<number>;
  processed: Set<number>;
  abort: AbortController;
  started: number;
  busyAtStart: number;
  bytes: number;
  changed: Array<() => void>;
}

/** A new attempt for announcement `a`, in which this peer (index `me`) serves stage `stage`. */
export function newAttempt(a: PipelineAnnounce, me: number, stage: number, busyAtStart: number): Attempt {
  return {
    a,
    me,
    stage,
    expected: new Set(microBatchesOf(a, stage, me)),
    received: new Set(),
    processed: new Set(),
    abort: new AbortController(),
    started: performance.now(),
    busyAtStart,
    bytes: 0,
    changed: [],
  };
}

/** Wakes whoever waits on the attempt's state. */
export function attemptChanged(att: Attempt): void {
  for (const w of att.changed.splice(0)) w();
}
