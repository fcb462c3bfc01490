/**
 * Errors of averaging, one class each with a stable `name`: callers match on `err.name`, since errors cross
 * worker and bundle boundaries where `instanceof` does not hold.
 */

/** Thrown when a round's averaging is abandoned (deadline or shutdown). */
export class AllReduceAbortedError extends Error {
  override name = 'AllReduceAbortedError' as const;
}

/** Thrown when an Aggregator is asked for something it cannot define (no contributions at all). */
export class AggregationError extends Error {
  override name = 'AggregationError' as const;
}

/** Thrown when a Codec is handed bytes that no encode of it produced (a length that is not whole values). */
export class CodecError extends Error {
  override name = 'CodecError' as const;
}
