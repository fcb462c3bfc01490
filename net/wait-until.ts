/**
 * Waits until `done()` holds, re-checking each time something calls the functions pushed on `waiters` (the
 * owner calls and empties them when its state changes), or rejects once `signal` aborts. One listener on the
 * signal per wait, removed when the wait ends, so a long-lived signal does not collect them.
 */
export function waitUntil(waiters: Array<() => void>, done: () => boolean, signal: AbortSignal, onAbort: (reason: unknown) => Error): Promise<void> {
  return new Promise((resolve, reject) => {
    const abort = () => reject(onAbort(signal.reason));
    const check = () => {
      if (signal.aborted) return abort();
      if (done()) {
        signal.removeEventListener('abort', check);
        return resolve();
      }
      waiters.push(check);
    };
    signal.addEventListener('abort', check, { once: true });
    check();
  });
}
