// The check-up form: the items the person's programmes ask for today, saved in one round trip
// (POST /api/checkups), answered at once with classifications, risk scores and referrals.
import { h, clear, enterMovesOn, toast, $$ } from '../dom.js';
import { t, label, num, today } from '../i18n.js';
import { get, post } from '../api.js';
import { nameOf, facts } from '../people.js';
import { definitions, title } from '../defs.js';
import { outcomeView } from '../outcome.js';

// Quick entry: blood pressure first, then the body, the laboratory, the questions.
const ORDER = ['sbp', 'dbp', 'heart_rate', 'height', 'weight', 'bmi', 'waist', 'glucose', 'hba1c', 'cholesterol'];

export async function render(main, { params: [id], app }) {
  const day0 = today();
  const [patient, person, defs] = await Promise.all([
    get(`/fhir/Patient/${encodeURIComponent(id)}`),
    get(`/api/people/${encodeURIComponent(id)}/programmes?date=${day0}`), definitions()]);
  document.title = `${t('checkup.title')}: ${nameOf(patient)} – ${t('app.name')}`;
  const wanted = new Set(Object.values(person.items).flat());
  const ids = [...ORDER.filter((i) => wanted.has(i)), ...defs.items.map((i) => i.id).filter((i) => wanted.has(i) && !ORDER.includes(i))];
  const programmes = Object.keys(person.items).filter((p) => person.items[p].length);
  const form = h('form', { class: 'checkup', novalidate: true, id: 'checkup-form' },
    h('div', { class: 'field', style: 'max-width:14rem' }, h('label', { for: 'date' }, t('checkup.date')),
      h('input', { id: 'date', name: 'date', type: 'date', value: day0, max: day0, required: true })),
    h('fieldset', {}, h('legend', {}, t('checkup.measurements')),
      h('div', { class: 'grid' }, ids.filter((i) => defs.item[i].kind !== 'coded' && defs.item[i].kind !== 'boolean').map((i) => numberField(defs.item[i])),
        !wanted.has('bmi') && wanted.has('weight') && wanted.has('height') && numberField({ ...defs.item.bmi, derived: true }))),
    ids.some((i) => defs.item[i].kind === 'coded' || defs.item[i].kind === 'boolean') &&
      h('fieldset', {}, h('legend', {}, t('checkup.questions')), ids.filter((i) => defs.item[i].kind === 'coded' || defs.item[i].kind === 'boolean').map((i) => choiceField(defs.item[i]))),
    h('p', { class: 'error', id: 'checkup-error', role: 'alert' }),
    h('div', { class: 'sticky row' }, h('button', { class: 'primary', type: 'submit', id: 'checkup-save' }, t('checkup.save')),
      h('a', { class: 'button', href: `/app/people/${id}` }, t('checkup.cancel'))));
  enterMovesOn(form);
  const outcome = h('section', { id: 'outcome', 'aria-live': 'polite', tabindex: '-1' });

  // BMI computed from weight and height as they are typed (the server derives it the same way)
  const bmi = form.querySelector('#f-bmi');
  const updateBmi = () => {
    if (!bmi) return;
    const w = parse(form.querySelector('#f-weight')?.value), ht = parse(form.querySelector('#f-height')?.value);
    bmi.value = w && ht ? num(w / ((ht / 100) ** 2), 1) : '';
  };
  form.addEventListener('input', (e) => { if (e.target.dataset.item) check(e.target, defs); updateBmi(); });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = form.querySelector('#checkup-error');
    error.textContent = '';
    const values = {};
    let bad = null;
    for (const input of $$('input[data-item]', form)) {
      if (input.readOnly || input.value.trim() === '') continue;
      if (!check(input, defs, true)) { bad = bad || input; continue; }
      const item = defs.item[input.dataset.item];
      const unit = form.querySelector(`#u-${item.id}`);
      const v = parse(input.value);
      values[item.id] = unit && unit.value !== item.unit ? { value: v, unit: unit.value } : v;
    }
    for (const item of ids.map((i) => defs.item[i]).filter((i) => i.kind === 'coded' || i.kind === 'boolean')) {
      const chosen = form.querySelector(`input[name="c-${item.id}"]:checked`);
      if (chosen) values[item.id] = item.kind === 'boolean' ? chosen.value === 'true' : chosen.value;
    }
    if (bad) { bad.focus(); return; }
    if (!Object.keys(values).length) { error.textContent = t('checkup.empty'); return; }
    const button = form.querySelector('#checkup-save');
    button.disabled = true;
    try {
      const done = await post('/api/checkups', { patient: id, date: form.querySelector('#date').value, values });
      const date = form.querySelector('#date').value;
      clear(outcome, h('h2', {}, t('checkup.saved')), outcomeView(done, defs),
        h('div', { class: 'row no-print' },
          h('a', { class: 'button', href: `/app/people/${id}/result/${date}`, id: 'print-sheet' }, t('checkup.sheet')),
          h('a', { class: 'button', href: `/app/people/${id}` }, t('checkup.person')),
          h('a', { class: 'button primary', href: '/app/', id: 'next-person' }, t('checkup.next'))));
      form.hidden = true;
      toast(t('checkup.saved'));
      outcome.focus();
    } catch (err) {
      if (err.body && err.body.issue) {
        for (const i of err.body.issue) {
          const key = ((i.expression || [])[0] || '').split('.')[1];
          const input = key && form.querySelector(`#f-${key}`);
          if (input) { input.setAttribute('aria-invalid', 'true'); form.querySelector(`#e-${key}`).textContent = i.diagnostics; }
        }
      }
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });

  clear(main, h('h1', {}, t('checkup.title')),
    h('p', {}, h('strong', {}, nameOf(patient)), h('span', { class: 'muted' }, ` · ${facts(patient)}`)),
    h('p', { class: 'muted' }, `${t('checkup.programmes')}: ${programmes.map((p) => title(defs, p)).join(', ') || '–'}`),
    ids.length ? form : h('p', { class: 'alert warn' }, t('checkup.nothing')), outcome);
  form.querySelector('input[data-item]:not([readonly])')?.focus();
}

const UNITS = { 'mm[Hg]': 'mmHg', '/min': 'unit.perMin', 'min/wk': 'unit.minPerWeek', 'kg/m2': 'kg/m²' };
const unitText = (u) => (UNITS[u] && UNITS[u].startsWith('unit.') ? t(UNITS[u]) : UNITS[u] || u);

const parse = (s) => (s == null || String(s).trim() === '' ? null : Number(String(s).trim().replace(',', '.')));

function numberField(item) {
  const id = `f-${item.id}`;
  const [lo, hi] = item.range || [];
  const input = h('input', { id, name: item.id, 'data-item': item.id, inputmode: 'decimal', autocomplete: 'off',
    enterkeyhint: 'next', 'aria-describedby': `h-${item.id} e-${item.id}`, readonly: item.derived || null });
  const units = item.units && item.units.length > 1
    ? h('select', { id: `u-${item.id}`, 'aria-label': t('checkup.unit', { what: label(item.label) }) }, item.units.map((u) => h('option', { value: u }, u)))
    : null;
  return h('div', { class: 'field' },
    h('label', { for: id }, label(item.label), !units && item.unit ? h('span', { class: 'muted' }, ` (${unitText(item.unit)})`) : null),
    units ? h('div', { class: 'unit' }, input, units) : input,
    h('div', { class: 'hint', id: `h-${item.id}` }, item.derived ? t('checkup.derived') : lo != null ? t('checkup.range', { lo: num(lo), hi: num(hi), unit: unitText(item.unit) }) : ''),
    h('p', { class: 'error', id: `e-${item.id}`, 'aria-live': 'polite' }));
}

function choiceField(item) {
  const values = item.kind === 'boolean' ? ['true', 'false'] : item.values;
  return h('div', { class: 'field', role: 'radiogroup', 'aria-labelledby': `l-${item.id}` },
    h('div', { id: `l-${item.id}`, class: 'label' }, h('strong', {}, label(item.label))),
    h('div', { class: 'choices' }, values.map((v) => h('label', {},
      h('input', { type: 'radio', name: `c-${item.id}`, value: v }), t(`val.${v === 'true' ? 'yes' : v === 'false' ? 'no' : v}`)))));
}

// A plausible value? (the item's range, in its base unit; other units are checked by the server)
function check(input, defs, final) {
  const item = defs.item[input.dataset.item];
  const error = input.form.querySelector(`#e-${item.id}`);
  const v = parse(input.value);
  let msg = '';
  if (input.value.trim() !== '' && (v == null || Number.isNaN(v))) msg = t('checkup.notNumber');
  else if (v != null && item.range) {
    const unit = input.form.querySelector(`#u-${item.id}`);
    if ((!unit || unit.value === item.unit) && (v < item.range[0] || v > item.range[1])) {
      msg = t('checkup.outOfRange', { lo: num(item.range[0]), hi: num(item.range[1]), unit: unitText(item.unit) });
    }
  }
  if (!final && msg === t('checkup.notNumber') && /[.,]$/.test(input.value)) msg = '';
  error.textContent = msg;
  input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  return !msg;
}
