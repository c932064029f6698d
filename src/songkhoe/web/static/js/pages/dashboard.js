// Managers' dashboards: coverage, the hypertension cascade and control over time, by unit,
// drill-down nation → province → commune → worklist, CSV export (GET /api/indicators).
import { h, clear } from '../dom.js';
import { t, num, pct, current } from '../i18n.js';
import { get } from '../api.js';
import { lineChart } from '../chart.js';

const COLUMNS = [['name', 'text'], ['adults', 'n'], ['screened', 'n'], ['coverage', 'p'], ['raised', 'p'],
  ['htn_registered', 'n'], ['controlled', 'p'], ['htn_no_visit', 'n'], ['referrals_open', 'n']];

export async function render(main, { query, app }) {
  const period = ['month', 'quarter', 'year'].includes(query.get('period')) ? query.get('period') : 'quarter';
  const org = query.get('org') || '';
  const qs = new URLSearchParams({ period, ...(org ? { org } : {}) });
  const data = await get(`/api/indicators?${qs}`);
  const o = data.org;
  const last = o.series.at(-1);
  document.title = `${t('dash.title')}: ${o.name} – ${t('app.name')}`;
  const link = (more) => `/app/dashboard?${new URLSearchParams({ period, ...more })}`;
  const drill = (u) => (u.level === 'commune' || u.id === o.id
    ? `/app/worklists/overdue?${new URLSearchParams({ org: u.id })}` : link({ org: u.id }));

  let sortKey = 'name', sortUp = true;
  const tbody = h('tbody', {});
  const heads = COLUMNS.map(([key, kind]) => h('th', { scope: 'col', class: kind === 'text' ? null : 'num', 'aria-sort': key === sortKey ? 'ascending' : 'none' },
    h('button', { type: 'button', onclick: () => { sortUp = sortKey === key ? !sortUp : kind === 'text'; sortKey = key; fill(); } }, t(`ind.${key}`))));
  const value = (u, key) => (key === 'name' ? u.name : key === 'referrals_open' ? u.referrals_open : u.series.at(-1)[key]);
  function fill() {
    const rows = [...data.units].sort((a, b) => {
      const x = value(a, sortKey), y = value(b, sortKey);
      const c = typeof x === 'string' ? x.localeCompare(y, current()) : (x ?? -1) - (y ?? -1);
      return sortUp ? c : -c;
    });
    heads.forEach((th, i) => th.setAttribute('aria-sort', COLUMNS[i][0] === sortKey ? (sortUp ? 'ascending' : 'descending') : 'none'));
    clear(tbody, rows.map((u) => h('tr', {}, COLUMNS.map(([key, kind]) => (kind === 'text'
      ? h('th', { scope: 'row' }, h('a', { href: drill(u) }, u.name))
      : h('td', { class: 'num' }, kind === 'p' ? pct(value(u, key)) : num(value(u, key), 0)))))));
  }
  fill();

  const cats = data.periods.map((p) => p.key);
  const cascade = [['adults', last.adults], ['screened', last.screened], ['bp_raised', last.bp_raised],
    ['htn_registered', last.htn_registered], ['htn_controlled', last.htn_controlled]];
  const top = Math.max(1, ...cascade.map((c) => c[1]));
  const parentLink = o.parent && h('a', { href: link({ org: o.parent }) }, `↑ ${t('dash.up')}`);
  const csv = `/api/indicators?${new URLSearchParams({ ...Object.fromEntries(qs), format: 'csv', lang: current() })}`;

  clear(main,
    h('h1', {}, `${t('dash.title')}: ${o.name}`),
    h('div', { class: 'row no-print' }, parentLink,
      h('span', {}, t(`level.${o.level}`)),
      h('label', { for: 'period', class: 'muted', style: 'margin:0' }, t('dash.period')),
      h('select', { id: 'period', style: 'width:auto', onchange: (e) => app.navigate(link({ ...(org ? { org } : {}), period: e.target.value })) },
        ['month', 'quarter', 'year'].map((p) => h('option', { value: p, selected: p === period }, t(`dash.${p}`)))),
      h('a', { class: 'button', href: csv, download: '', id: 'csv' }, t('dash.csv'))),
    h('p', { class: 'muted' }, t('dash.asOf', { period: cats.at(-1) })),
    h('div', { class: 'kpis', id: 'kpis' },
      kpi('coverage', pct(last.coverage), t('dash.of', { a: num(last.screened, 0), b: num(last.adults, 0) })),
      kpi('raised', pct(last.raised), t('dash.of', { a: num(last.bp_raised, 0), b: num(last.bp_measured, 0) })),
      kpi('controlled', pct(last.controlled), t('dash.of', { a: num(last.htn_controlled, 0), b: num(last.htn_registered, 0) })),
      kpi('referrals_open', num(o.referrals_open, 0), o.level === 'commune' ? h('a', { href: `/app/worklists/referral?${new URLSearchParams({ org: o.id })}` }, t('dash.openList')) : '')),
    h('div', { class: 'two' },
      h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, t('dash.trend'))),
        h('div', { class: 'legend', 'aria-hidden': 'true' }, ['coverage', 'raised', 'controlled'].map((k, i) => h('span', {}, h('i', { class: `s${i}` }), t(`ind.${k}`)))),
        lineChart({ title: t('dash.trendTitle'), categories: cats, min: 0, max: 100, fmtY: (v) => `${num(v, 0)}%`,
          series: ['coverage', 'raised', 'controlled'].map((k) => ({ name: t(`ind.${k}`), points: o.series.map((s, i) => [i, s[k]]) })) })),
      h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, t('dash.cascade'))),
        h('table', { id: 'cascade' }, h('tbody', {}, cascade.map(([k, n]) => h('tr', {},
          h('th', { scope: 'row' }, t(`ind.${k}`)),
          h('td', { class: 'num' }, num(n, 0)),
          h('td', { style: 'width:40%' }, h('div', { style: `background:#0b5d3b;height:.8rem;width:${(100 * n) / top}%`, 'aria-hidden': 'true' })))))))),
    h('h2', {}, t(o.level === 'commune' ? 'dash.commune' : 'dash.units')),
    h('div', { class: 'scroll' }, h('table', { id: 'units' }, h('thead', {}, h('tr', {}, heads)), tbody)),
    h('p', { class: 'muted' }, t('dash.definitions')));
}

const kpi = (key, big, small) => h('div', { class: 'kpi', 'data-kpi': key }, h('span', {}, t(`ind.${key}`)), h('b', {}, big), h('span', { class: 'muted' }, small));
