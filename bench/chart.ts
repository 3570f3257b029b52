/*
 * bench/chart: the latency-over-time chart of the benches (docs/bench-latency.svg,
 * docs/bench-ws-latency.svg), one panel per contender: the slowest answer per 10 ms bucket as a
 * line broken where no answer came (a pause), and, on the same time axis, a mark for every
 * connection dropped (▼, red) and every request or message that failed or was lost (✕,
 * orange), with their counts beside the contender's name. Without the marks a contender whose
 * clients reconnect draws a line as smooth as one that kept every connection.
 * Pure: data in, SVG text out.
 */

export type MarkKind = 'dropped' | 'failed';

export interface Panel {
  name: string;
  color: string;
  /** [ms from the update's start, latency ms], one point per 10 ms bucket that had answers. */
  series: Array<[number, number]>;
  /** [ms from the update's start, what happened]. */
  marks?: Array<[number, MarkKind]>;
}

const DROP = '#d62728';
const FAIL = '#ff7f0e';

export function latencyChart(title: string, subtitle: string, panels: Panel[]): string {
  const W = 760;
  const PH = 150;
  const L = 70;
  const R = 20;
  const HEAD = 56;
  const H = HEAD + panels.length * (PH + 40) + 10;
  const x0 = -1000;
  const x1 = Math.max(3000, ...panels.flatMap((p) => p.series.map((s) => s[0])));
  const yMax = Math.max(10, ...panels.flatMap((p) => p.series.map((s) => s[1])));
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${L}" y="18" font-size="13">${esc(title)}</text>`,
    `<text x="${L}" y="34" fill="#555">${esc(subtitle)}</text>`,
    `<text x="${L}" y="48" fill="#555"><tspan fill="${DROP}">▼</tspan> a connection dropped   <tspan fill="${FAIL}">✕</tspan> a request failed or a message was lost   (at the top of a panel, on the time axis)</text>`];
  panels.forEach((p, i) => {
    const top = HEAD + 10 + i * (PH + 40);
    const sx = (t: number): number => L + ((Math.min(Math.max(t, x0), x1) - x0) / (x1 - x0)) * (W - L - R);
    const sy = (v: number): number => top + PH - (Math.log10(Math.max(0.1, v) / 0.1) / Math.log10((yMax * 1.5) / 0.1)) * PH;
    const marks = p.marks ?? [];
    const dropped = marks.filter((m) => m[1] === 'dropped').length;
    const failed = marks.length - dropped;
    out.push(`<text x="${L}" y="${top - 6}" font-weight="bold" fill="${p.color}">${esc(p.name)}<tspan font-weight="normal" fill="${dropped || failed ? DROP : '#555'}">   ${dropped.toLocaleString('en')} dropped, ${failed.toLocaleString('en')} failed</tspan></text>`);
    out.push(`<rect x="${L}" y="${top}" width="${W - L - R}" height="${PH}" fill="none" stroke="#999"/>`);
    for (const v of [0.1, 1, 10, 100, 1000, 10000].filter((v) => v <= yMax * 1.5)) {
      out.push(`<line x1="${L}" x2="${W - R}" y1="${sy(v).toFixed(1)}" y2="${sy(v).toFixed(1)}" stroke="#eee"/><text x="${L - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end">${v} ms</text>`);
    }
    out.push(`<line x1="${sx(0).toFixed(1)}" x2="${sx(0).toFixed(1)}" y1="${top}" y2="${top + PH}" stroke="#555" stroke-dasharray="3,3"/>`);
    let run: string[] = [];
    const flush = (): void => {
      if (run.length > 1) out.push(`<polyline fill="none" stroke="${p.color}" stroke-width="1.2" points="${run.join(' ')}"/>`);
      else if (run.length === 1) out.push(`<circle cx="${run[0]!.split(',')[0]}" cy="${run[0]!.split(',')[1]}" r="1.8" fill="${p.color}"/>`);
      run = [];
    };
    p.series.forEach(([t, l], k) => {
      if (k > 0 && t - p.series[k - 1]![0] > 10) flush();
      run.push(`${sx(t).toFixed(1)},${sy(l).toFixed(1)}`);
    });
    flush();
    // Marks, one per 10 ms bucket and kind (thousands of drops at one instant are one mark; the
    // count is in the panel's title).
    const seen = new Set<string>();
    for (const [t, kind] of marks) {
      const b = `${kind}${Math.floor(t / 10)}`;
      if (seen.has(b)) continue;
      seen.add(b);
      const x = sx(t).toFixed(1);
      if (kind === 'dropped') out.push(`<path d="M${x},${top + 12} l-4,-8 h8 z" fill="${DROP}"/>`);
      else out.push(`<text x="${x}" y="${top + 24}" text-anchor="middle" fill="${FAIL}" font-size="10">✕</text>`);
    }
    for (let t = 0; t <= x1; t += 1000) out.push(`<text x="${sx(t).toFixed(1)}" y="${top + PH + 14}" text-anchor="middle">${t / 1000} s</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
