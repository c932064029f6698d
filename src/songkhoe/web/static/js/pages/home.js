// Find a person: name with or without diacritics, citizen ID, phone or birth year.
import { h, clear } from '../dom.js';
import { t } from '../i18n.js';
import { search } from '../api.js';
import { searchParams, personItem } from '../people.js';

export async function render(main, { query, app }) {
  document.title = `${t('search.title')} – ${t('app.name')}`;
  const q = query.get('q') || '';
  const input = h('input', { id: 'q', name: 'q', type: 'search', value: q, autocomplete: 'off', enterkeyhint: 'search', 'aria-describedby': 'q-hint' });
  const form = h('form', { role: 'search', class: 'row' },
    h('div', { class: 'grow' }, h('label', { for: 'q' }, t('search.label')), input,
      h('div', { class: 'hint', id: 'q-hint' }, t('search.hint'))),
    h('button', { class: 'primary', type: 'submit' }, t('search.submit')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = input.value.trim();
    app.navigate(v ? `/app/people?q=${encodeURIComponent(v)}` : '/app/', true);
  });
  const results = h('section', { 'aria-live': 'polite', 'aria-labelledby': 'results-title' });
  clear(main, h('h1', {}, t('search.title')), form, results,
    h('p', {}, h('a', { class: 'button', href: '/app/people/new' }, t('search.register'))),
    !q && shortcuts());
  input.focus();
  if (!q) return;
  const params = searchParams(q);
  const people = params.length ? await search('Patient', [...params, ['_count', '30']]) : [];
  clear(results,
    h('h2', { id: 'results-title' }, t('search.results', { n: people.length })),
    people.length
      ? h('ul', { class: 'list', id: 'results' }, people.map((p) => personItem(p,
        h('div', { class: 'row' }, h('a', { class: 'button', href: `/app/people/${p.id}/checkup` }, t('person.checkup'))))))
      : h('p', { class: 'alert warn' }, t('search.none'), ' ',
        h('a', { href: `/app/people/new?name=${encodeURIComponent(params.filter((p) => p[0] === 'name').map((p) => p[1]).join(' '))}` }, t('search.registerThem'))));
}

function shortcuts() {
  return h('section', {}, h('h2', {}, t('home.lists')),
    h('ul', { class: 'list' }, ['overdue', 'referral', 'due', 'lost'].map((k) =>
      h('li', {}, h('a', { href: `/app/worklists/${k}` }, t(`worklist.${k}`)), h('div', { class: 'muted' }, t(`worklist.${k}.hint`))))));
}
