// Worklists: due, overdue, missed visits (lost to follow-up) with one-tap call outcomes, and
// positive screens without follow-up (GET /api/worklists/{kind}, POST /api/calls).
import { h, clear, toast } from '../dom.js';
import { t, day, age, today } from '../i18n.js';
import { get, post } from '../api.js';
import { definitions, title } from '../defs.js';

const KINDS = ['overdue', 'referral', 'due', 'lost'];
const OUTCOMES = ['agreed-to-return', 'call-later', 'wrong-number', 'moved-away', 'died'];

export async function render(main, { params: [kind], query, app }) {
  const defs = await definitions();
  const fit = defs.programmes.filter((p) => (kind === 'lost' ? p.kind === 'care' : true));
  const programme = fit.find((p) => p.id === query.get('programme'))?.id ||
    (kind === 'lost' ? 'hypertension-care' : 'hypertension-screening');
  const org = query.get('org');
  const qs = (more) => new URLSearchParams({ programme, ...(org ? { org } : {}), ...more });
  document.title = `${t(`worklist.${kind}`)} – ${t('app.name')}`;
  const canCall = app.me && ['health_worker', 'doctor', 'administrator'].includes(app.me.role);
  const list = h('ul', { class: 'list', id: 'worklist' });
  const more = h('div', {});
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const select = h('select', { id: 'programme' }, fit.map((p) => h('option', { value: p.id, selected: p.id === programme }, title(defs, p.id))));
  select.addEventListener('change', () => app.navigate(`/app/worklists/${kind}?${new URLSearchParams({ programme: select.value, ...(org ? { org } : {}) })}`, true));

  async function page(cursor) {
    const data = await get(`/api/worklists/${kind}?${qs({ count: '50', ...(cursor ? { cursor } : {}) })}`);
    count.textContent = t('worklist.count', { n: data.total });
    list.append(...data.entries.map((e) => entry(e)));
    clear(more, data.next && h('button', { type: 'button', onclick: () => page(data.next) }, t('worklist.more')));
  }

  function entry(e) {
    const a = age(e.birth_date);
    const status = h('p', { class: 'muted', 'aria-live': 'polite' });
    const li = h('li', { 'data-patient': e.patient },
      h('a', { href: `/app/people/${e.patient}` }, h('strong', {}, e.name)),
      h('span', { class: 'muted' }, ` · ${[e.gender && t(`gender.${e.gender}`), a != null && t('person.age', { n: a })].filter(Boolean).join(', ')}`),
      h('div', {}, [
        e.last_visit ? e.next_due && `${t('person.nextDue')}: ${day(e.next_due)}` : t('worklist.never'),
        e.days_overdue != null && t('worklist.daysOverdue', { n: e.days_overdue }),
        e.last_visit && `${t('person.lastVisit')}: ${day(e.last_visit)}`,
        e.referral_due && `${t('person.referralDue')} ${day(e.referral_due)}`,
        e.call_outcome && `${t('worklist.lastCall')}: ${t(`call.${e.call_outcome}`)} (${day(e.call_day)})`,
      ].filter(Boolean).join(' · ')),
      h('div', { class: 'row' },
        e.phone && h('a', { class: 'button', href: `tel:${e.phone}` }, `☎ ${e.phone}`),
        h('a', { class: 'button', href: `/app/people/${e.patient}/checkup` }, t('person.checkup'))),
      canCall && h('div', { class: 'calls', role: 'group', 'aria-label': t('worklist.callOutcome', { name: e.name }) },
        OUTCOMES.map((o) => h('button', { type: 'button', 'data-outcome': o, onclick: () => call(e, o, li, status) }, t(`call.${o}`)))),
      status);
    return li;
  }

  async function call(e, outcome, li, status) {
    if ((outcome === 'died' || outcome === 'moved-away') && !window.confirm(t('worklist.confirm', { what: t(`call.${outcome}`), name: e.name }))) return;
    const body = { patient: e.patient, programme, outcome };
    if (outcome === 'call-later') {
      const d = new Date(`${today()}T00:00:00Z`);
      d.setUTCDate(d.getUTCDate() + 7);
      body.call_again = d.toISOString().slice(0, 10);
    }
    for (const b of li.querySelectorAll('.calls button')) b.disabled = true;
    try {
      await post('/api/calls', body);
      status.textContent = `${t('worklist.recorded')}: ${t(`call.${outcome}`)}${body.call_again ? ` → ${day(body.call_again)}` : ''}`;
      li.classList.add('done');
      toast(status.textContent);
    } catch (err) {
      status.textContent = err.message;
      for (const b of li.querySelectorAll('.calls button')) b.disabled = false;
    }
  }

  clear(main, h('h1', {}, t('worklist.title')),
    h('nav', { class: 'tabs', 'aria-label': t('worklist.kinds') }, KINDS.map((k) => h('a', {
      href: `/app/worklists/${k}?${new URLSearchParams({ ...(k === 'lost' || kind === 'lost' ? {} : { programme }), ...(org ? { org } : {}) })}`,
      'aria-current': k === kind ? 'page' : null }, t(`worklist.${k}`)))),
    h('p', { class: 'muted' }, t(`worklist.${kind}.hint`)),
    h('div', { class: 'field', style: 'max-width:24rem' }, h('label', { for: 'programme' }, t('worklist.programme')), select),
    org && h('p', {}, t('worklist.org', { org })),
    count, list, more);
  await page();
}
