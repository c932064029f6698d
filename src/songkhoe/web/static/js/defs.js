// The programmes and the check-up form's items (GET /api/programmes), fetched once per page load.
import { get } from './api.js';
import { label } from './i18n.js';

let loaded;
export function definitions() {
  if (!loaded) {
    loaded = get('/api/programmes').then((d) => ({
      ...d,
      programme: Object.fromEntries(d.programmes.map((p) => [p.id, p])),
      item: Object.fromEntries(d.items.map((i) => [i.id, i])),
    }));
    loaded.catch(() => { loaded = null; });
  }
  return loaded;
}

export const title = (defs, id) => (defs.programme[id] ? label(defs.programme[id].title) : id);

// Observations: value and unit in a uniform shape.
export const code = (o) => ((o.code && o.code.coding) || [])[0]?.code;
export function components(o) {
  const out = {};
  for (const c of o.component || []) out[c.code.coding[0].code] = c.valueQuantity && c.valueQuantity.value;
  return out;
}
export const BP = '85354-9', SBP = '8480-6', DBP = '8462-4', BMI = '39156-5', GLUCOSE = ['14771-0', '1558-6'];
export function glucoseMmol(o) {
  const q = o.valueQuantity;
  if (!q) return null;
  return /mg/i.test(q.code || q.unit || '') ? Math.round(q.value * 0.0555 * 10) / 10 : q.value;
}
export const dayOf = (o) => (o.effectiveDateTime || (o.effectivePeriod || {}).start || o.issued || '').slice(0, 10);

// An Observation's classification (the programmes engine's interpretation).
export function interpretation(o) {
  const i = (o.interpretation || [])[0];
  if (!i) return null;
  const flag = (i.coding || []).find((c) => c.system && c.system.endsWith('v3-ObservationInterpretation'));
  return { text: i.text || (i.coding || [])[0]?.display, level: flag ? flag.code : 'N' };
}
