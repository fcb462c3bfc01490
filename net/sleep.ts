/**
 * Waiting that honours cancellation: every sleep in a long-lived part ends early when its signal aborts (a
 * stopping coordinator or peer never sits out a timer), and a Wakeup lets an event cut a poll short.
 */

/** Resolves after `ms`, or at once (resolving, not rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A sleep that `wake()` ends early: a loop polls at its pace, and reacts at once when something changes. */
export class Wakeup {
  private waiters = new Set<() => void>();

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const early = new AbortController();
      const done = () => {
        this.waiters.delete(wake);
        resolve();
      };
      const wake = () => early.abort();
      this.waiters.add(wake);
      void sleep(ms, signal ? AbortSignal.any([signal, early.signal]) : early.signal).then(done);
    });
  }

  wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
