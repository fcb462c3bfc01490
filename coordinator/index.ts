/**
 * One shared run, held by its coordinator. coordinator.ts is the composition root over small collaborators:
 * membership (admission, silence, bans), the round book (rounds, attempts, reports), the state server, the
 * model replica (checkpoint, evaluate, sample; a GlobalUpdate per mode), the control channel and the status
 * report — and a RoundDriver per parallelism (data-parallel-driver.ts: sync and DiLoCo; pipeline-driver.ts
 * with pipeline/ for planning). Drivers see the collaborators only through their interfaces (RoundContext).
 *
 *   const coordinator = new Coordinator({ libp2p, store, info, configHash, data, runDir, log, clock });
 *   await coordinator.start();
 *   coordinator.emitter.addEventListener('round:done', (e) => console.log((e as CustomEvent).detail));
 *   // ... later
 *   await coordinator.stop({ checkpoint: true });
 */
export { Coordinator, type CoordinatorDeps, type Member, type RoundRecord } from './coordinator.ts';
export type { RoundContext, RoundDriver } from './round-driver.ts';
export type { GlobalUpdate } from './global-update.ts';
export { RunStore } from './run-store.ts';
export { startHttpServer } from './http-server.ts';
