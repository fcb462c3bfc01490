/**
 * The libp2p services both the coordinator and the peers run, platform-free: framed, validated streams
 * (framed.ts), deadlines that always fire (deadline.ts — never an AbortSignal.timeout inside an
 * AbortSignal.any), cancellable sleeps, state and data sync over request/response streams, the shared libp2p
 * settings, and averaging (averaging/: the stream orchestration of reduce-scatter + all-gather, a pure part
 * buffer, and a Reducer over an Aggregator and a Codec — where robust aggregation and compression plug in).
 *
 *   const limit = deadline(60_000, stopping);
 *   try {
 *     const mean = await allreduce.run(round, attempt, participants, grads, samples, [coordinator], limit.signal);
 *   } finally {
 *     limit.clear();
 *   }
 */
export * from './types.ts';
export * from './deadline.ts';
export * from './sleep.ts';
export * from './framed.ts';
export * from './wait-until.ts';
export * from './state-sync.ts';
export * from './data-sync.ts';
export { AllReduce, AllReduceAbortedError, type AllReduceOptions } from './averaging/allreduce.ts';
