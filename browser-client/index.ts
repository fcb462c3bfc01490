/**
 * The browser side: page/ (the run's dashboard and the volunteer's controls) and worker/ (the Web Worker peer:
 * backend choice webgpu → webgl → wasm, libp2p over WebSockets, the shared peer runtime and engine). esbuild
 * bundles both into dist/browser (build.ts), which the coordinator serves cross-origin isolated.
 *
 *   if (browserBuildStale()) await buildBrowser();
 *   startHttpServer({ ..., staticDir: BROWSER_DIST });
 */
export { BROWSER_DIST, browserBuildStale, buildBrowser } from './build.ts';
