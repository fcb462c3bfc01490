/**
 * One compute at a time on a stage peer (its backend is single-threaded), with backward passes served before
 * forward ones: that is what makes the schedule 1F1B-like — a micro-batch's gradient moves on as soon as it
 * arrives, so few activations wait in memory and the first stages are not starved while the last drain.
 * It also measures how long the stage was busy, for the bench's bubble fraction.
 */

export type Priority = 'forward' | 'backward';

export class ComputeQueue {
  private busy = false;
  private readonly waiting: Record<Priority, Array<() => void>> = { forward: [], backward: [] };
  /** Milliseconds spent computing since the last reset. */
  busyMs = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  async run<T>(priority: Priority, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.busy) {
      await new Promise<void>((resolve, reject) => {
        const go = () => {
          signal?.removeEventListener('abort', cancel);
          resolve();
        };
        const cancel = () => {
          const list = this.waiting[priority];
          const i = list.indexOf(go);
          if (i >= 0) list.splice(i, 1);
          reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'));
        };
        this.waiting[priority].push(go);
        signal?.addEventListener('abort', cancel, { once: true });
      });
    } else this.busy = true;
    const start = this.now();
    try {
      signal?.throwIfAborted();
      return await task();
    } finally {
      this.busyMs += this.now() - start;
      const next = this.waiting.backward.shift() ?? this.waiting.forward.shift();
      if (next) next();
      else this.busy = false;
    }
  }

  resetStats(): void {
    this.busyMs = 0;
  }
}
