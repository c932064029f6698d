// A person: programmes and next due dates, referrals, charts over time, visit timeline.
import { h, clear } from '../dom.js';
import { t, day, num } from '../i18n.js';
import { get } from '../api.js';
import { nameOf, facts } from '../people.js';
import { lineChart } from '../chart.js';
import { definitions, title, code, components, BP, SBP, DBP, BMI, GLUCOSE, glucoseMmol, dayOf, interpretation } from '../defs.js';

export async function render(main, { params: [id] }) {
  const [bundle, status, defs] = await Promise.all([
    get(`/fhir/Patient/${encodeURIComponent(id)}/$everything?_count=1000`),
    get(`/api/people/${encodeURIComponent(id)}/programmes`), definitions()]);
  const all = (bundle.entry || []).map((e) => e.resource);
  const of = (type) => all.filter((r) => r.resourceType === type);
  const patient = of('Patient').find((p) => p.id === id) || of('Patient')[0];
  const obs = of('Observation').filter((o) => o.status !== 'entered-in-error');
  document.title = `${nameOf(patient)} – ${t('app.name')}`;

  const programmes = status.status.filter((s) => s.kind === 'care' ? s.enrolled : true);
  const referrals = of('ServiceRequest').filter((s) => s.status === 'active')
    .sort((a, b) => (b.authoredOn || '').localeCompare(a.authoredOn || ''));
  const flags = of('Flag').filter((f) => f.status === 'active');
  const visits = of('Encounter').sort((a, b) => ((b.period || {}).start || '').localeCompare((a.period || {}).start || ''));

  clear(main,
    h('h1', {}, nameOf(patient)),
    h('p', { class: 'muted' }, facts(patient)),
    h('div', { class: 'row no-print' },
      h('a', { class: 'button primary', href: `/app/people/${id}/checkup`, id: 'start-checkup' }, t('person.checkup'))),
    flags.length > 0 && h('section', { 'aria-labelledby': 'flags' }, h('h2', { id: 'flags' }, t('person.flags')),
      h('ul', { class: 'list' }, flags.map((f) => h('li', {}, h('span', { class: 'badge H' }, f.code.text), ' ', h('span', { class: 'muted' }, day((f.period || {}).start)))))),
    h('section', { 'aria-labelledby': 'referrals' }, h('h2', { id: 'referrals' }, t('person.referrals')),
      referrals.length ? h('ul', { class: 'list', id: 'referral-list' }, referrals.map(referralItem)) : h('p', { class: 'muted' }, t('person.noReferrals'))),
    h('section', { 'aria-labelledby': 'programmes' }, h('h2', { id: 'programmes' }, t('person.programmes')),
      h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, t('person.programme')), h('th', {}, t('person.lastVisit')), h('th', {}, t('person.nextDue')))),
        h('tbody', {}, programmes.map((s) => h('tr', {},
          h('td', {}, title(defs, s.programme), s.kind === 'care' ? h('span', { class: 'badge' }, t('person.enrolled')) : null),
          h('td', {}, day(s.last_visit)),
          h('td', {}, s.next_due ? day(s.next_due) : '–', s.referral_due ? h('div', { class: 'muted' }, `${t('person.referralDue')} ${day(s.referral_due)}`) : null))))))),
    h('section', { 'aria-labelledby': 'charts' }, h('h2', { id: 'charts' }, t('person.charts')), charts(obs)),
    h('section', { 'aria-labelledby': 'visits' }, h('h2', { id: 'visits' }, t('person.visits')),
      visits.length ? h('ol', { class: 'list' }, visits.map((v) => visitItem(v, obs, defs, id))) : h('p', { class: 'muted' }, t('person.noVisits'))));
}

export function referralItem(s) {
  const window = s.occurrencePeriod || {};
  return h('li', {}, h('span', { class: `badge ${s.priority === 'stat' ? 'stat' : 'H'}` }, t(`priority.${s.priority || 'routine'}`)), ' ',
    h('strong', {}, s.code && s.code.text), h('div', { class: 'muted' },
      [s.authoredOn && `${t('person.referred')} ${day(s.authoredOn)}`, window.end && `${t('person.referralDue')} ${day(window.end)}`,
        s.performerType && t(`level.${s.performerType.text}`)].filter(Boolean).join(' · ')));
}

function charts(obs) {
  const fmtX = (x) => day(new Date(x).toISOString());
  const bp = obs.filter((o) => code(o) === BP).map((o) => [dayOf(o), components(o)]).sort();
  const glu = obs.filter((o) => GLUCOSE.includes(code(o))).map((o) => [dayOf(o), glucoseMmol(o)]).sort();
  const bmi = obs.filter((o) => code(o) === BMI).map((o) => [dayOf(o), o.valueQuantity && o.valueQuantity.value]).sort();
  const out = [];
  const legend = (names) => h('div', { class: 'legend', 'aria-hidden': 'true' }, names.map((n, i) => h('span', {}, h('i', { class: `s${i}` }), n)));
  if (bp.length) {
    out.push(h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, t('chart.bp')), ' (mmHg)'),
      legend([t('chart.sbp'), t('chart.dbp')]),
      lineChart({ title: t('chart.bpTitle', { sbp: bp.at(-1)[1][SBP], dbp: bp.at(-1)[1][DBP], date: day(bp.at(-1)[0]) }), fmtX, fmtY: (v) => num(v, 0), min: 40, max: Math.max(200, ...bp.map((b) => b[1][SBP] || 0)),
        series: [{ name: t('chart.sbp'), points: bp.map(([d, c]) => [d, c[SBP]]) }, { name: t('chart.dbp'), points: bp.map(([d, c]) => [d, c[DBP]]) }],
        bands: [{ from: 140, cls: 'band-high' }, { from: 130, to: 140, cls: 'band-mid' }, { from: 90, to: 130, cls: 'band-ok' }] })));
  }
  if (glu.length) {
    out.push(h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, t('chart.glucose')), ' (mmol/L)'),
      lineChart({ title: t('chart.lastValue', { what: t('chart.glucose'), value: num(glu.at(-1)[1]), date: day(glu.at(-1)[0]) }), fmtX, fmtY: (v) => num(v), min: 2, max: Math.max(12, ...glu.map((g) => g[1] || 0)),
        series: [{ name: t('chart.glucose'), points: glu }],
        bands: [{ from: 7, cls: 'band-high' }, { from: 5.6, to: 7, cls: 'band-mid' }, { to: 5.6, cls: 'band-ok' }] })));
  }
  if (bmi.length) {
    out.push(h('figure', { class: 'card' }, h('figcaption', {}, h('strong', {}, 'BMI'), ' (kg/m²)'),
      lineChart({ title: t('chart.lastValue', { what: 'BMI', value: num(bmi.at(-1)[1]), date: day(bmi.at(-1)[0]) }), fmtX, fmtY: (v) => num(v), min: 14, max: Math.max(35, ...bmi.map((b) => b[1] || 0)),
        series: [{ name: 'BMI', points: bmi }],
        bands: [{ from: 25, cls: 'band-high' }, { from: 23, to: 25, cls: 'band-mid' }, { from: 18.5, to: 23, cls: 'band-ok' }] })));
  }
  return out.length ? h('div', { class: 'two' }, out) : h('p', { class: 'muted' }, t('person.noData'));
}

export function valueText(o, defs) {
  const c = code(o);
  if (c === BP) { const v = components(o); return `${v[SBP] ?? '–'}/${v[DBP] ?? '–'} mmHg`; }
  if (o.valueQuantity) return `${num(o.valueQuantity.value, 2)} ${o.valueQuantity.unit || ''}`.trim();
  if (o.valueCodeableConcept) {
    const cc = o.valueCodeableConcept;
    for (const v of [cc.text, ...(cc.coding || []).map((c) => c.code)]) if (v && t(`val.${v}`) !== `val.${v}`) return t(`val.${v}`);
    return cc.text || cc.coding?.[0]?.display || cc.coding?.[0]?.code || '';
  }
  if (o.valueBoolean != null) return t(o.valueBoolean ? 'val.yes' : 'val.no');
  return '';
}

export function obsLabel(o) {
  const c = code(o);
  const known = t(`loinc.${c}`);
  return known !== `loinc.${c}` ? known : (o.code && o.code.text) || (o.code.coding || [])[0]?.display || c;
}

function visitItem(v, obs, defs, id) {
  const date = ((v.period || {}).start || '').slice(0, 10);
  const mine = obs.filter((o) => o.encounter && o.encounter.reference === `Encounter/${v.id}`);
  const type = (v.type || [])[0] || {};
  return h('li', {}, h('strong', {}, day(date)), ' · ', type.text || type.coding?.[0]?.display || '',
    ' · ', h('a', { href: `/app/people/${id}/result/${date}` }, t('person.resultSheet')),
    mine.length > 0 && h('div', { class: 'muted' }, mine.map((o) => {
      const i = interpretation(o);
      return `${obsLabel(o)}: ${valueText(o, defs)}${i && i.level !== 'N' ? ` (${i.text})` : ''}`;
    }).join(' · ')));
}
