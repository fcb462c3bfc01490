/**
 * The coordinator's page: the run's dashboard (fed live from /api/status) and the volunteer's controls. The
 * Contribute button starts a peer in a Web Worker; Pause and Stop end it cleanly (it tells the run it leaves),
 * and so does closing the tab. As BOINC offers: a usage limit (the worker contributes for a while, then rests),
 * pause while the tab is hidden, pause on battery where the browser reports it.
 */
import uPlot from 'uplot';
import type { StatusReport as Status } from '../../run/status-report.ts';
import type { WorkerCommand, WorkerStatus } from '../worker/messages.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const fmt = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0));

/** What the page knows of its own peer; tests read it (window.peertrain). `hashes`: round → parameter hash. */
const me: { worker?: Worker; status: WorkerStatus; paused: boolean; log: string[]; backend: string; hashes: Record<number, string> } = {
  status: { type: 'status', state: 'idle' },
  hashes: {},
  paused: false,
  log: [],
  backend: new URLSearchParams(location.search).get('backend') ?? 'auto',
};
(window as unknown as { peertrain: typeof me }).peertrain = me;

/** Runs the worker's backend self-test (a fixed model and batch) in a fresh worker; resolves with its report. */
(window as unknown as { peertrainSelftest: (backend: string, fixture: unknown) => Promise<unknown> }).peertrainSelftest = (backend, fixture) =>
  new Promise((resolve) => {
    const w = new Worker('/worker.js', { type: 'module' });
    w.onmessage = (e) => {
      resolve(e.data);
      w.terminate();
    };
    w.onerror = (e) => resolve({ error: e.message });
    w.postMessage({ type: 'selftest', backend, fixture });
  });

function log(line: string): void {
  me.log.push(`${new Date().toLocaleTimeString()} ${line}`);
  if (me.log.length > 200) me.log.shift();
  $('log').textContent = me.log.slice(-60).join('\n');
}

function dl(el: HTMLElement, rows: Array<[string, string]>): void {
  el.replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      return [dt, dd];
    }),
  );
}

// ------------------------------------------------------------------ the dashboard

let chart: uPlot | undefined;

function renderChart(s: Status): void {
  const rounds = s.history.map((h) => h.round);
  const loss = s.history.map((h) => h.loss);
  const val = s.history.map((h) => h.valLoss ?? null);
  const data: uPlot.AlignedData = [rounds, loss, val];
  if (!chart) {
    chart = new uPlot(
      {
        width: Math.min(1040, $('chart').clientWidth || 800),
        height: 260,
        scales: { x: { time: false } },
        axes: [{ label: 'round' }, { label: 'loss' }],
        series: [{ label: 'round' }, { label: 'training loss', stroke: '#4b5fd6', spanGaps: true }, { label: 'validation loss', stroke: '#d65f4b', spanGaps: true, points: { show: true } }],
      },
      data,
      $('chart'),
    );
  } else chart.setData(data);
}

function renderStatus(s: Status): void {
  const last = [...s.history].reverse().find((h) => h.loss !== null);
  const lastVal = [...s.history].reverse().find((h) => h.valLoss !== undefined);
  dl($('run'), [
    ['model', `GPT ${s.model.nLayer} layers × ${s.model.nEmbd} wide, ${s.model.nHead} heads, context ${s.model.blockSize} (${s.model.objective})`],
    ['data', `${s.data.name} — ${s.data.tokenizer} tokenizer, ${fmt(s.data.trainTokens)} training tokens`],
    ['averaging', s.mode],
    ['round', String(s.round)],
    ['tokens trained', fmt(s.tokensTrained)],
    ['loss', last?.loss != null ? last.loss.toFixed(4) : '—'],
    ['validation loss', lastVal?.valLoss !== undefined ? lastVal.valLoss.toFixed(4) : '—'],
    ['rejected messages', Object.entries(s.rejected).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'],
  ]);
  const body = $('peers').querySelector('tbody')!;
  body.replaceChildren(
    ...s.peers.map((p) => {
      const tr = document.createElement('tr');
      const you = p.id === me.status.peerId ? ' (you)' : '';
      for (const v of [`…${p.id.slice(-8)}${you}`, p.kind, p.backend, fmt(p.tokensPerSec), String(p.roundsContributed)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    }),
  );
  const p = s.pipeline;
  $('stages').textContent = p
    ? [
        ...p.stages.map((st) => `stage ${st.stage + 1}: ${st.parts[0]}…${st.parts[st.parts.length - 1]} — ${st.peers.map((id) => `…${id.slice(-6)}${id === me.status.peerId ? ' (you)' : ''}`).join(', ') || 'no peer yet'}`),
        p.waiting ? `waiting: ${p.waiting}` : `${p.activationDtype} activations; ${p.failedAttempts} failed attempt(s), ${p.reroutedMicroBatches} micro-batch(es) re-routed`,
      ].join('\n')
    : 'One stage: every peer holds the whole model (data-parallel run).';
  renderChart(s);
}

async function poll(): Promise<void> {
  try {
    const r = await fetch('/api/status', { cache: 'no-store' });
    if (r.ok) renderStatus((await r.json()) as Status);
  } catch {
    // the coordinator may be restarting: keep polling
  }
}

// ------------------------------------------------------------------ contributing

function renderMine(): void {
  const s = me.status;
  const rows: Array<[string, string]> = [['state', me.paused ? 'paused' : s.state]];
  if (s.backend) rows.push(['backend', `${s.backend}${s.backendDetail ? ` (${s.backendDetail})` : ''}`]);
  if (s.round !== undefined) rows.push(['round', String(s.round)]);
  if (s.loss !== undefined) rows.push(['loss', s.loss.toFixed(4)]);
  if (s.tokensPerSec !== undefined) rows.push(['speed', `${fmt(s.tokensPerSec)} tokens/s`]);
  rows.push(['contributed', `${s.roundsContributed ?? 0} rounds, ${fmt(s.tokensContributed ?? 0)} tokens`]);
  dl($('mine'), rows);
  $<HTMLButtonElement>('contribute').disabled = Boolean(me.worker) && !me.paused;
  $<HTMLButtonElement>('pause').disabled = !me.worker || me.paused;
  $<HTMLButtonElement>('stop').disabled = !me.worker && !me.paused;
}

async function startWorker(): Promise<void> {
  const join = (await (await fetch('/api/join', { cache: 'no-store' })).json()) as { multiaddrs: string[]; token: string };
  const worker = new Worker('/worker.js', { type: 'module', name: 'peertrain-peer' });
  me.worker = worker;
  const kept = { roundsContributed: me.status.roundsContributed ?? 0, tokensContributed: me.status.tokensContributed ?? 0 };
  worker.onmessage = (evt: MessageEvent<WorkerStatus>) => {
    const s = evt.data;
    // Counters add up across pauses (each resume is a new worker).
    me.status = { ...me.status, ...s, roundsContributed: kept.roundsContributed + (s.roundsContributed ?? 0), tokensContributed: kept.tokensContributed + (s.tokensContributed ?? 0) };
    if (s.message) log(s.message);
    if (s.paramHash && s.round !== undefined) me.hashes[s.round] = s.paramHash;
    if (s.state === 'error' || s.state === 'stopped') {
      worker.terminate();
      if (me.worker === worker) me.worker = undefined;
    }
    renderMine();
  };
  worker.onerror = (e) => log(`worker error: ${e.message}`);
  worker.postMessage({ type: 'start', multiaddrs: join.multiaddrs, token: join.token, backend: me.backend } satisfies WorkerCommand);
  renderMine();
}

function stopWorker(reason: string): void {
  const w = me.worker;
  if (!w) return;
  w.postMessage({ type: 'stop', reason } satisfies WorkerCommand);
  // If it cannot say goodbye in time, it is ended anyway (the run drops silent peers).
  setTimeout(() => w.terminate(), 3_000);
  me.worker = undefined;
}

function pause(why: string): void {
  if (!me.worker || me.paused) return;
  me.paused = true;
  log(`paused: ${why}`);
  stopWorker(`paused: ${why}`);
  renderMine();
}

function resume(why: string): void {
  if (!me.paused) return;
  me.paused = false;
  log(`resumed: ${why}`);
  void startWorker();
}

$('contribute').onclick = () => (me.paused ? resume('by you') : void startWorker());
$('pause').onclick = () => pause('by you');
$('stop').onclick = () => {
  me.paused = false;
  stopWorker('stopped by the volunteer');
  renderMine();
};
window.addEventListener('pagehide', () => stopWorker('tab closed'));
document.addEventListener('visibilitychange', () => {
  if (!$<HTMLInputElement>('pause-hidden').checked) return;
  if (document.hidden) pause('tab hidden');
  else if (me.paused && me.log.at(-1)?.includes('tab hidden')) resume('tab visible');
});
const battery = (navigator as Navigator & { getBattery?: () => Promise<{ charging: boolean; addEventListener(t: string, f: () => void): void }> }).getBattery;
if (battery) {
  void battery.call(navigator).then((b) => {
    const check = () => {
      if (!$<HTMLInputElement>('pause-battery').checked) return;
      if (!b.charging) pause('on battery');
      else if (me.paused && me.log.at(-1)?.includes('on battery')) resume('charging');
    };
    b.addEventListener('chargingchange', check);
    check();
  });
}
// Usage limit: within every 60 s, contribute for the chosen share and rest for the remainder.
setInterval(() => {
  const share = Number($<HTMLSelectElement>('usage').value) / 100;
  if (share >= 1 || (!me.worker && !me.paused)) return;
  const second = Math.floor(Date.now() / 1000) % 60;
  if (second >= share * 60) pause('usage limit');
  else if (me.log.at(-1)?.includes('usage limit')) resume('usage limit');
}, 1_000);

renderMine();
void poll();
setInterval(() => void poll(), 2_000);
