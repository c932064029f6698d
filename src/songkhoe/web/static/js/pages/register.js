// Register a person: citizen ID checked against birth year and sex, warning for a possible
// duplicate (POST /api/people answers 409 with the candidates; "register anyway" confirms).
import { h, clear, enterMovesOn, toast } from '../dom.js';
import { t } from '../i18n.js';
import { post } from '../api.js';
import { problems } from '../cccd.js';
import { personItem } from '../people.js';

// dd/mm/yyyy, d/m/yyyy, yyyy-mm-dd or yyyy → ISO (or null)
export function isoDate(text) {
  const s = text.trim();
  let m = s.match(/^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$/);
  if (m) return valid(`${m[3]}-${m[2].padStart(2, '0')}-${m[1].padStart(2, '0')}`);
  m = s.match(/^(\d{4})-(\d{2})-(\d{2})$/);
  if (m) return valid(s);
  if (/^(19|20)\d{2}$/.test(s)) return s;
  return null;
}
function valid(iso) {
  const d = new Date(`${iso}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === iso ? iso : null;
}

const field = (id, key, input, hint) => h('div', { class: 'field' },
  h('label', { for: id }, t(key)), input,
  hint && h('div', { class: 'hint', id: `${id}-hint` }, hint),
  h('p', { class: 'error', id: `${id}-error`, 'aria-live': 'polite' }));

export async function render(main, { query, app }) {
  document.title = `${t('register.title')} – ${t('app.name')}`;
  const gender = h('fieldset', { class: 'field choices', id: 'gender' },
    h('legend', {}, t('register.gender')),
    ['female', 'male', 'other'].map((g) => h('label', {}, h('input', { type: 'radio', name: 'gender', value: g }), t(`gender.${g}`))),
    h('p', { class: 'error', id: 'gender-error', 'aria-live': 'polite' }));
  const form = h('form', { class: 'card', novalidate: true },
    h('div', { class: 'grid' },
      field('name', 'register.name', h('input', { id: 'name', name: 'name', required: true, autocomplete: 'off', value: query.get('name') || '' })),
      field('birthDate', 'register.birthDate', h('input', { id: 'birthDate', name: 'birthDate', required: true, inputmode: 'numeric', placeholder: 'dd/mm/yyyy', autocomplete: 'off', 'aria-describedby': 'birthDate-hint' }), t('register.birthDateHint'))),
    gender,
    h('div', { class: 'grid' },
      field('cccd', 'register.cccd', h('input', { id: 'cccd', name: 'cccd', inputmode: 'numeric', maxlength: 12, autocomplete: 'off', 'aria-describedby': 'cccd-hint' }), t('register.cccdHint')),
      field('phone', 'register.phone', h('input', { id: 'phone', name: 'phone', type: 'tel', inputmode: 'tel', autocomplete: 'off' })),
      field('address', 'register.address', h('input', { id: 'address', name: 'address', autocomplete: 'off' }))),
    h('div', { id: 'duplicates', 'aria-live': 'assertive' }),
    h('button', { class: 'primary', type: 'submit', id: 'register-submit' }, t('register.submit')));
  enterMovesOn(form);
  const $f = (id) => form.querySelector(`#${id}`);
  const say = (id, text) => { $f(`${id}-error`).textContent = text || ''; const i = $f(id); if (i && i.tagName === 'INPUT') i.setAttribute('aria-invalid', text ? 'true' : 'false'); };

  const values = () => {
    const fd = new FormData(form);
    return { name: fd.get('name').trim(), birthDate: isoDate(fd.get('birthDate') || ''), gender: fd.get('gender'),
      cccd: fd.get('cccd').replace(/\s/g, ''), phone: fd.get('phone').trim(), address: fd.get('address').trim() };
  };
  const checkCccd = () => {
    const v = values();
    if (!v.cccd) return say('cccd', '') || true;
    const found = problems(v.cccd, v.birthDate ? Number(v.birthDate.slice(0, 4)) : null, v.gender);
    say('cccd', found.map(([code, vars]) => t(`cccd.${code}`, code === 'sex' ? { sex: t(`gender.${vars.sex}`).toLowerCase() } : vars)).join(' '));
    return found.length === 0;
  };
  for (const id of ['cccd', 'birthDate']) $f(id).addEventListener('change', checkCccd);
  form.addEventListener('change', (e) => { if (e.target.name === 'gender') checkCccd(); });

  async function submit(confirm) {
    const v = values();
    let ok = true;
    say('name', v.name ? '' : t('register.required'));
    say('birthDate', v.birthDate ? '' : t('register.badDate'));
    say('gender', v.gender ? '' : t('register.required'));
    ok = Boolean(v.name && v.birthDate && v.gender) && checkCccd();
    if (!ok) { form.querySelector('[aria-invalid="true"]')?.focus(); return; }
    const dups = $f('duplicates');
    clear(dups);
    try {
      const body = { ...v, confirm };
      for (const k of ['cccd', 'phone', 'address']) if (!body[k]) delete body[k];
      const made = await post('/api/people', body);
      toast(t('register.done', { name: v.name }));
      app.navigate(`/app/people/${made.id}`);
    } catch (err) {
      if (err.status === 409) {
        const same = err.body.duplicate === 'cccd';
        clear(dups, h('div', { class: same ? 'alert' : 'alert warn', role: 'alert' },
          h('p', {}, h('strong', {}, t(same ? 'register.sameCccd' : 'register.maybeSame'))),
          h('ul', { class: 'list' }, err.body.candidates.map((p) => personItem({ ...p, name: [{ text: p.name }],
            identifier: p.cccd ? [{ system: 'urn:vn:cccd', value: p.cccd }] : [], telecom: p.phone ? [{ system: 'phone', value: p.phone }] : [] }))),
          !same && h('button', { type: 'button', id: 'register-anyway', onclick: () => submit(true) }, t('register.anyway'))));
        dups.querySelector('a')?.focus();
      } else if (err.status === 422 && err.body && err.body.issue) {
        for (const i of err.body.issue) say((i.expression || [])[0] || 'name', i.diagnostics);
      } else {
        clear(dups, h('p', { class: 'alert', role: 'alert' }, err.message));
      }
    }
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); submit(false); });
  clear(main, h('h1', {}, t('register.title')), form);
  $f('name').focus();
}
