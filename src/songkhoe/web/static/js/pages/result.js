// The check-up result sheet for the citizen, in Vietnamese, printable (app.css @media print).
import { h, clear } from '../dom.js';
import { t, day, current, load } from '../i18n.js';
import { get } from '../api.js';
import { nameOf, cccdOf } from '../people.js';
import { definitions, dayOf } from '../defs.js';
import { outcomeView } from '../outcome.js';

export async function render(main, { params: [id, date], app }) {
  const [bundle, status, defs] = await Promise.all([
    get(`/fhir/Patient/${encodeURIComponent(id)}/$everything?_count=1000`),
    get(`/api/people/${encodeURIComponent(id)}/programmes?date=${date}`), definitions()]);
  const shown = current();
  if (shown !== 'vi') await load('vi'); // the sheet is the citizen's: always Vietnamese
  try {
    const all = (bundle.entry || []).map((e) => e.resource);
    const patient = all.find((r) => r.resourceType === 'Patient' && r.id === id);
    const on = (r) => [r.occurrenceDateTime, r.authoredOn, (r.period || {}).start, r.effectiveDateTime].some((d) => d && d.slice(0, 10) === date);
    const observations = all.filter((r) => r.resourceType === 'Observation' && dayOf(r) === date && r.status !== 'entered-in-error');
    const outputs = all.filter((r) => ['RiskAssessment', 'ServiceRequest', 'Flag', 'EpisodeOfCare'].includes(r.resourceType) && on(r));
    document.title = `${t('sheet.title')} – ${nameOf(patient)}`;
    const address = ((patient.address || [])[0] || {}).text;
    clear(main, h('article', { class: 'sheet', lang: 'vi', id: 'result-sheet' },
      h('p', { class: 'muted' }, app.me && app.me.org_name),
      h('h1', {}, t('sheet.title')),
      h('table', {}, h('tbody', {},
        row(t('sheet.name'), nameOf(patient)),
        row(t('sheet.born'), day(patient.birthDate)),
        row(t('sheet.sex'), t(`gender.${patient.gender}`)),
        cccdOf(patient) && row('CCCD', cccdOf(patient)),
        address && row(t('sheet.address'), address),
        row(t('sheet.date'), day(date)))),
      observations.length ? outcomeView({ observations, outputs, status: status.status }, defs)
        : h('p', { class: 'alert warn' }, t('sheet.none')),
      h('p', { class: 'muted' }, t('sheet.note')),
      h('div', { class: 'signature only-print' }, h('div', {}, t('sheet.citizen')), h('div', {}, t('sheet.worker'))),
      h('div', { class: 'row no-print' },
        h('button', { class: 'primary', type: 'button', onclick: () => window.print(), id: 'print' }, t('sheet.print')),
        h('a', { class: 'button', href: `/app/people/${id}` }, t('checkup.person')))));
  } finally {
    if (shown !== 'vi') await load(shown);
  }
}

const row = (k, v) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v));
