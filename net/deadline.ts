/**
 * A deadline as a signal, combined with others. Not `AbortSignal.any([AbortSignal.timeout(ms), …])`: Node
 * holds the sources of `any` weakly, and a timeout signal nothing else references can be collected before it
 * fires, leaving a round that never times out. Here the timer holds its controller, so it always fires;
 * `clear()` stops the timer once the work is done.
 */
export interface Deadline {
  signal: AbortSignal;
  clear(): void;
}

export function deadline(ms: number, ...signals: AbortSignal[]): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException(`deadline of ${ms} ms passed`, 'TimeoutError')), ms);
  return { signal: AbortSignal.any([controller.signal, ...signals]), clear: () => clearTimeout(timer) };
}
