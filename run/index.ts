/**
 * What a run is — the contract between the coordinator and its peers: the config and its validation
 * (config.ts), the config hash every message carries, the defaults in one place (defaults.ts), how work and
 * data are shared by speed (shares.ts), the averaging groups of a pipeline announcement, and the shape of
 * /api/status (status-report.ts). Pure: no network, no tensors.
 *
 *   const config = validateRunConfig(JSON.parse(text));
 *   const hash = await configHash(config);
 *   const micro = splitMicroBatches(config.train.batchSize / config.train.microBatchSize, [1200, 800]);
 */
export * from './config.ts';
export * from './defaults.ts';
export * from './shares.ts';
export * from './pipeline-groups.ts';
export type * from './status-report.ts';
