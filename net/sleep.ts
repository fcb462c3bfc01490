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

/**
 * A sleep that `wake()` ends early: a loop polls at its pace, and reacts at once when something changes. No
 * AbortSignal.any per sleep: an idle loop sleeps four times a second, and each composite would hang on the
 * long-lived stop signal.
 */
export class Wakeup {
  private readonly waiters = new Set<() => void>();

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
