// The end-of-run report: one self-contained HTML page (inline SVG, no external assets) with the loss and accuracy
// curves and a timeline of rounds, failures, checkpoints and restarts, drawn from the run's history.

import { computeGoodput } from './goodput.js';
import type { HistoryEvent } from './history.js';

interface Series {
  readonly name: string;
  readonly color: string;
  readonly points: readonly (readonly [number, number])[];
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

function lineChart(title: string, xLabel: string, series: readonly Series[], yRange?: [number, number]): string {
  const W = 640;
  const H = 300;
  const L = 56;
  const R = 16;
  const T = 28;
  const B = 40;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<p>${esc(title)}: no data recorded.</p>`;
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  let [y0, y1] = yRange ?? [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  if (x0 > 0 && x0 < (x1 - x0) * 0.2) x0 = 0;
  const sx = (x: number): number => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number): number => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">`);
  parts.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    const x = x0 + ((x1 - x0) * i) / 4;
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end" font-size="11">${fmt(y)}</text>`);
    parts.push(`<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${fmt(x)}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`);
  parts.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`);
  series.forEach((s, k) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`);
    if (s.points.length < 40) {
      for (const p of s.points) {
        parts.push(`<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
      }
    }
    parts.push(`<rect x="${L + 10}" y="${T + 8 + k * 16}" width="10" height="10" fill="${s.color}"/>`);
    parts.push(`<text x="${L + 26}" y="${T + 17 + k * 16}" font-size="12">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

function timeline(events: readonly HistoryEvent[]): string {
  const rounds = events.filter((e): e is Extract<HistoryEvent, { type: 'round' }> => e.type === 'round');
  if (rounds.length === 0) return '<p>No rounds recorded.</p>';
  const t0 = Math.min(...events.map((e) => e.timeMs));
  const t1 = Math.max(...events.map((e) => e.timeMs), t0 + 1);
  const W = 900;
  const L = 20;
  const R = 20;
  const H = 130;
  const sx = (t: number): number => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const colors = ['#4e79a7', '#59a14f', '#9c755f', '#76b7b2', '#edc948', '#b07aa1'];
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">`,
    `<text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">Rounds, failures and checkpoints (wall time)</text>`,
  ];
  rounds.forEach((r, i) => {
    const next = i + 1 < rounds.length ? rounds[i + 1]!.timeMs : t1;
    // A round ends at its first failure; the gap up to the next round is the restart (drawn grey).
    const failed = events.find((e) => e.type === 'failure' && e.timeMs >= r.timeMs && e.timeMs <= next);
    const end = failed !== undefined ? failed.timeMs : next;
    if (end < next) {
      const nextRound = rounds[i + 1]?.round;
      const live = events.some((e) => e.type === 'recovery' && e.round === nextRound);
      const what = live ? 'live recovery' : 'restarting';
      parts.push(
        `<rect x="${sx(end).toFixed(1)}" y="30" width="${Math.max(1, sx(next) - sx(end)).toFixed(1)}" height="34" fill="#ccc"><title>${what}: ${((next - end) / 1000).toFixed(2)} s</title></rect>`,
      );
      parts.push(
        `<text x="${(sx(end) + 4).toFixed(1)}" y="51" font-size="11" fill="#555">${live ? 'live' : 'restart'}</text>`,
      );
    }
    const x = sx(r.timeMs);
    const w = Math.max(2, sx(end) - x);
    parts.push(
      `<rect x="${x.toFixed(1)}" y="30" width="${w.toFixed(1)}" height="34" fill="${colors[i % colors.length]}"><title>round ${r.round}, restart ${r.restartCount}, world size ${r.worldSize}, resumed at step ${r.resumedStep}</title></rect>`,
    );
    const label =
      w > 130 ? `r${r.round} · ws ${r.worldSize} · from step ${r.resumedStep}` : w > 24 ? `r${r.round}` : '';
    if (label !== '') parts.push(`<text x="${(x + 4).toFixed(1)}" y="51" font-size="11" fill="#fff">${label}</text>`);
  });
  for (const e of events) {
    if (e.type === 'failure') {
      const x = sx(e.timeMs).toFixed(1);
      parts.push(
        `<line x1="${x}" x2="${x}" y1="24" y2="100" stroke="#e15759" stroke-width="2"><title>rank ${e.rank} failed at step ${e.step}: ${esc(e.message)}</title></line>`,
      );
      parts.push(`<text x="${x}" y="112" font-size="11" fill="#e15759" text-anchor="middle">✗ rank ${e.rank}</text>`);
    } else if (e.type === 'checkpoint') {
      const x = sx(e.timeMs).toFixed(1);
      parts.push(
        `<circle cx="${x}" cy="76" r="4" fill="#f28e2b"><title>checkpoint at step ${e.step} (${esc(e.reason)}): ${esc(e.file)}</title></circle>`,
      );
    }
  }
  parts.push(`<text x="${L}" y="${H - 4}" font-size="11">0 s</text>`);
  parts.push(
    `<text x="${W - R}" y="${H - 4}" font-size="11" text-anchor="end">${((t1 - t0) / 1000).toFixed(1)} s</text>`,
  );
  parts.push(`<circle cx="${W / 2 - 60}" cy="${H - 8}" r="4" fill="#f28e2b"/>`);
  parts.push(`<text x="${W / 2 - 52}" y="${H - 4}" font-size="11">checkpoint</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

/** The goodput timeline: productive time green, outages red (live recovery or restart), lost work orange. */
function goodputTimeline(events: readonly HistoryEvent[]): string {
  const g = computeGoodput(events);
  if (g.wallMs <= 0) return '<p>Goodput: no wall time recorded yet.</p>';
  const W = 900;
  const L = 20;
  const R = 20;
  const H = 96;
  const sx = (t: number): number => L + ((t - g.startMs) / g.wallMs) * (W - L - R);
  const secs = (ms: number): string => (ms >= 10_000 ? (ms / 1000).toFixed(1) + ' s' : ms.toFixed(0) + ' ms');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">`,
    `<text x="${W / 2}" y="16" text-anchor="middle" font-weight="bold">Goodput ${(100 * g.goodput).toFixed(1)}% (wall time)</text>`,
    `<rect x="${L}" y="28" width="${W - L - R}" height="28" fill="#59a14f"><title>training</title></rect>`,
  ];
  for (const o of g.outages) {
    const x = sx(o.startMs);
    const w = Math.max(2, sx(o.endMs) - x);
    const lost = o.stepsLost === null ? 'steps lost unknown' : `${o.stepsLost} steps lost`;
    const what = o.kind === 'live' ? 'live recovery' : 'restart';
    parts.push(
      `<rect x="${x.toFixed(1)}" y="28" width="${w.toFixed(1)}" height="28" fill="#e15759"><title>${what} into round ${o.round}: ${secs(o.endMs - o.startMs)} down, ${lost}</title></rect>`,
    );
    if (o.lostWorkMs > 0) {
      parts.push(
        `<rect x="${sx(o.endMs).toFixed(1)}" y="28" width="${Math.max(1, (o.lostWorkMs / g.wallMs) * (W - L - R)).toFixed(1)}" height="28" fill="#f28e2b"><title>${lost}: about ${secs(o.lostWorkMs)} of training repeated</title></rect>`,
      );
    }
    parts.push(
      `<text x="${x.toFixed(1)}" y="70" font-size="11" fill="#e15759">${o.kind === 'live' ? '⟳' : '↻'} ${secs(o.endMs - o.startMs)}</text>`,
    );
  }
  parts.push(`<text x="${L}" y="${H - 4}" font-size="11">0 s</text>`);
  parts.push(
    `<text x="${W - R}" y="${H - 4}" font-size="11" text-anchor="end">${(g.wallMs / 1000).toFixed(1)} s</text>`,
  );
  parts.push(
    `<text x="${W / 2}" y="${H - 4}" font-size="11" text-anchor="middle">green: training · red: down (⟳ live recovery, ↻ restart) · orange: repeated steps</text>`,
  );
  parts.push('</svg>');
  const rows = g.outages
    .map(
      (o) =>
        `<tr><td>${o.round}</td><td style="text-align:left">${o.kind === 'live' ? 'live recovery' : 'restart'}</td><td>${secs(o.endMs - o.startMs)}</td><td>${o.stepsLost ?? '?'}</td></tr>`,
    )
    .join('\n');
  return `<h2>Goodput</h2>
<p>Goodput <b>${(100 * g.goodput).toFixed(1)}%</b>: ${(g.wallMs / 1000).toFixed(1)} s wall time, ${secs(g.downtimeMs)} down in ${g.outages.length} outage(s), ${secs(g.lostWorkMs)} of repeated steps${g.medianStepMs !== null ? ` (median step ${g.medianStepMs.toFixed(1)} ms)` : ''}.</p>
${parts.join('\n')}
${g.outages.length === 0 ? '' : `<table><tr><th>into round</th><th>how</th><th>down</th><th>steps lost</th></tr>\n${rows}\n</table>`}`;
}

/** Renders the whole report page from the run's history. Pure: no I/O. */
export function renderReport(events: readonly HistoryEvent[], meta: { title: string; source: string }): string {
  const steps = events.filter((e): e is Extract<HistoryEvent, { type: 'step' }> => e.type === 'step');
  const epochs = events.filter((e): e is Extract<HistoryEvent, { type: 'epoch' }> => e.type === 'epoch');
  const failures = events.filter((e): e is Extract<HistoryEvent, { type: 'failure' }> => e.type === 'failure');
  const rounds = events.filter((e): e is Extract<HistoryEvent, { type: 'round' }> => e.type === 'round');
  const done = events.filter((e): e is Extract<HistoryEvent, { type: 'done' }> => e.type === 'done').at(-1);
  const rows = epochs
    .map(
      (e) =>
        `<tr><td>${e.epoch}</td><td>${e.step}</td><td>${e.loss.toFixed(4)}</td><td>${(e.trainAccuracy * 100).toFixed(2)}%</td><td>${(e.testAccuracy * 100).toFixed(2)}%</td><td>${e.samplesPerSec.toFixed(0)}</td><td>${e.worldSize}</td><td>${e.restartCount}</td></tr>`,
    )
    .join('\n');
  const failureItems = failures
    .map((f) => `<li>round ${f.round}: rank ${f.rank} failed at step ${f.step}: ${esc(f.message)}</li>`)
    .join('\n');
  const summary = done
    ? `Final held-out accuracy <b>${(done.testAccuracy * 100).toFixed(2)}%</b> (target ${(done.target * 100).toFixed(0)}%: ${done.reached ? 'reached' : '<span style="color:#e15759">not reached</span>'}) after ${done.step} steps.`
    : 'The run has not finished.';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(meta.title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}svg{display:block;margin:1em 0;font-family:system-ui,sans-serif}</style>
</head><body>
<h1>${esc(meta.title)}</h1>
<p>Data: ${esc(meta.source)}. ${summary}</p>
<p>${rounds.length} round(s), ${failures.length} failure(s), ${events.filter((e) => e.type === 'checkpoint').length} checkpoint(s).</p>
${timeline(events)}
${goodputTimeline(events)}
${lineChart('Training loss', 'step', [{ name: 'loss (rank 0 batch)', color: '#4e79a7', points: steps.map((s) => [s.step, s.loss]) }])}
${lineChart(
  'Accuracy',
  'epoch',
  [
    { name: 'train', color: '#59a14f', points: epochs.map((e) => [e.epoch + 1, e.trainAccuracy]) },
    { name: 'held-out', color: '#e15759', points: epochs.map((e) => [e.epoch + 1, e.testAccuracy]) },
  ],
  [0, 1],
)}
<h2>Epochs</h2>
<table><tr><th>epoch</th><th>step</th><th>loss</th><th>train acc</th><th>held-out acc</th><th>samples/s</th><th>world size</th><th>restarts</th></tr>
${rows}
</table>
<h2>Failures</h2>
${failures.length === 0 ? '<p>None.</p>' : `<ul>${failureItems}</ul>`}
</body></html>
`;
}
