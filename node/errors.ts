/** Errors of the Node entry point. Stable `name`s; see engine/errors.ts. */

/** Thrown when no requested backend can start; lists what is supported and what failed. */
export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError' as const;
}

/** Thrown for a bad command line: unknown flag, missing or malformed value. */
export class UsageError extends Error {
  override name = 'UsageError' as const;
}
