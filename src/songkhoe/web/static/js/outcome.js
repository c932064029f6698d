// What a check-up found: each result with its classification, risk scores, referrals, flags,
// enrolments and next visits — shown at once after saving, and on the printable result sheet.
import { h } from './dom.js';
import { t, day, pct, today } from './i18n.js';
import { interpretation, title } from './defs.js';
import { obsLabel, valueText, referralItem } from './pages/person.js';

export function outcomeView({ observations, outputs, status }, defs) {
  const of = (type) => outputs.filter((r) => r.resourceType === type && r.status !== 'entered-in-error');
  const risks = of('RiskAssessment'), referrals = of('ServiceRequest'), flags = of('Flag'),
    episodes = of('EpisodeOfCare');
  const urgent = referrals.some((r) => r.priority === 'stat' || r.priority === 'urgent');
  return h('div', { class: 'outcome' },
    referrals.length > 0 && h('div', { class: urgent ? 'alert' : 'alert warn', role: 'alert', id: 'outcome-referral' },
      h('strong', {}, t(urgent ? 'outcome.referUrgent' : 'outcome.refer')),
      h('ul', { class: 'list' }, referrals.map(referralItem))),
    h('h2', {}, t('outcome.results')),
    h('div', { class: 'scroll' }, h('table', { id: 'outcome-results' },
      h('thead', {}, h('tr', {}, h('th', {}, t('outcome.item')), h('th', {}, t('outcome.value')), h('th', {}, t('outcome.class')))),
      h('tbody', {}, observations.map((o) => {
        const i = interpretation(o);
        return h('tr', {}, h('td', {}, obsLabel(o)), h('td', {}, valueText(o)),
          h('td', {}, i ? h('span', { class: `badge ${i.level}` }, i.text) : ''));
      })))),
    risks.length > 0 && h('section', {}, h('h2', {}, t('outcome.risks')), h('ul', { class: 'list', id: 'outcome-risks' }, risks.map((r) => {
      const p = (r.prediction || [])[0] || {};
      return h('li', {}, h('strong', {}, (p.outcome || {}).text || (r.method.coding || [])[0]?.display), ': ',
        p.probabilityDecimal != null ? pct(p.probabilityDecimal * 100) : '', ' ',
        p.qualitativeRisk && h('span', { class: 'badge H' }, p.qualitativeRisk.text));
    }))),
    flags.length > 0 && h('section', {}, h('h2', {}, t('person.flags')), h('ul', { class: 'list' }, flags.map((f) => h('li', {}, f.code.text)))),
    episodes.length > 0 && h('p', { class: 'alert ok' }, t('outcome.enrolled', { what: episodes.map((e) => e.type[0].text).join(', ') })),
    status && status.length > 0 && h('section', {}, h('h2', {}, t('outcome.next')), h('ul', { class: 'list', id: 'outcome-next' },
      status.filter((s) => s.next_due && (s.kind !== 'care' || s.enrolled)).map((s) => h('li', {}, `${title(defs, s.programme)}: `,
        h('strong', {}, s.next_due <= today() ? t('outcome.dueNow') : day(s.next_due)))))));
}

