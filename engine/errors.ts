/**
 * Errors of the training engine. Each has a stable `name`: errors cross worker and bundle boundaries, where
 * `instanceof` fails, so callers match on `err.name`.
 */

/** Thrown when a model or training config is invalid; the message names the offending key. */
export class ConfigError extends Error {
  override name = 'ConfigError' as const;
  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

/** Thrown when a checkpoint cannot be decoded: truncated, corrupt, or of an unknown format version. */
export class CheckpointError extends Error {
  override name = 'CheckpointError' as const;
}

/** Thrown when resuming with a config whose architecture differs from the checkpoint's; names the key. */
export class ArchitectureMismatchError extends Error {
  override name = 'ArchitectureMismatchError' as const;
  constructor(
    readonly key: string,
    readonly expected: unknown,
    readonly actual: unknown,
  ) {
    super(`checkpoint architecture differs: ${key} is ${JSON.stringify(expected)} in the checkpoint but ${JSON.stringify(actual)} in the config`);
  }
}

/** Thrown when training data is unusable: empty, too short for one sequence, or with tokens outside the vocabulary. */
export class DataError extends Error {
  override name = 'DataError' as const;
}

/** Thrown when flat parameter/gradient arrays do not match the manifest they claim to follow. */
export class ManifestError extends Error {
  override name = 'ManifestError' as const;
}
