// Line charts drawn as SVG, with threshold bands shaded behind the lines.
// lineChart({ title, unit, series: [{ name, points: [[Date|ms|iso, y]] }], bands: [{ from, to, cls }], min, max, fmtX, fmtY })
const NS = 'http://www.w3.org/2000/svg';
const W = 420, H = 190, L = 40, R = 8, T = 8, B = 24;

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

const ms = (x) => (typeof x === 'number' ? x : new Date(x).getTime());

export function lineChart({ title, series, bands = [], min, max, fmtX = String, fmtY = String, categories }) {
  const pts = series.flatMap((s) => s.points.map(([x, y]) => [categories ? x : ms(x), y])).filter((p) => p[1] != null);
  const xs = pts.map((p) => p[0]);
  let x0 = categories ? 0 : Math.min(...xs), x1 = categories ? categories.length - 1 : Math.max(...xs);
  if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
  const ys = pts.map((p) => p[1]);
  let y0 = min ?? Math.min(...ys), y1 = max ?? Math.max(...ys);
  if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08;
  if (min == null) y0 -= pad;
  if (max == null) y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0)) * (H - T - B);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  svg.append(el('title', {}, title));
  for (const b of bands) {
    const top = sy(Math.min(b.to ?? y1, y1)), bottom = sy(Math.max(b.from ?? y0, y0));
    if (bottom > top) svg.append(el('rect', { x: L, y: top, width: W - L - R, height: bottom - top, class: b.cls }));
  }
  for (let i = 0; i <= 4; i += 1) {
    const v = y0 + ((y1 - y0) * i) / 4;
    svg.append(el('text', { x: L - 4, y: sy(v) + 4, 'text-anchor': 'end' }, fmtY(Math.round(v * 10) / 10)));
  }
  svg.append(el('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  svg.append(el('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  const ticks = categories ? categories.map((c, i) => [i, c]).filter((_, i, a) => a.length < 8 || i % Math.ceil(a.length / 6) === 0 || i === a.length - 1)
    : [...new Set([x0, (x0 + x1) / 2, x1])].map((x) => [x, fmtX(x)]);
  for (const [x, text] of ticks) {
    const anchor = x === x0 ? 'start' : x === x1 ? 'end' : 'middle'; // keep the ends inside
    svg.append(el('text', { x: sx(x), y: H - 8, 'text-anchor': anchor }, text));
  }
  series.forEach((s, i) => {
    const p = s.points.filter(([, y]) => y != null).map(([x, y]) => [sx(categories ? x : ms(x)), sy(y), y, x]);
    if (p.length > 1) svg.append(el('polyline', { class: `line s${i}`, points: p.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ') }));
    for (const [x, y, v, raw] of p) {
      const c = el('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 3.5, class: `s${i}` });
      c.append(el('title', {}, `${s.name}: ${fmtY(v)} (${categories ? categories[raw] : fmtX(ms(raw))})`));
      svg.append(c);
    }
  });
  return svg;
}
