// People: search terms → FHIR search parameters, and how a Patient is shown in lists.
import { h } from './dom.js';
import { t, day, age } from './i18n.js';

export const CCCD = 'urn:vn:cccd';

// "nguyen an 1965" → name=nguyen&name=an&birthdate=1965; 12 (or 9) digits: citizen ID;
// a mobile number: phone. Names match with or without diacritics (the server folds them).
export function searchParams(q) {
  const params = [];
  for (const w of q.trim().split(/\s+/)) {
    const d = w.replace(/[.\-]/g, '');
    if (/^\d{12}$/.test(d) || /^\d{9}$/.test(d)) params.push(['identifier', d]);
    else if (/^(\+84|84|0)\d{9}$/.test(d)) params.push(['telecom', `phone|0${d.replace(/^(\+84|84|0)/, '')}`]);
    else if (/^(19|20)\d{2}$/.test(d)) params.push(['birthdate', d]);
    else if (w) params.push(['name', w]);
  }
  return params;
}

export function nameOf(p) {
  const n = (p.name || [])[0] || {};
  return n.text || [n.family, ...(n.given || [])].filter(Boolean).join(' ') || p.id;
}

export const cccdOf = (p) => ((p.identifier || []).find((i) => i.system === CCCD) || {}).value;
export const phoneOf = (p) => ((p.telecom || []).find((c) => c.system === 'phone') || {}).value;

export function facts(p) {
  const a = age(p.birthDate);
  return [
    p.gender && t(`gender.${p.gender}`),
    p.birthDate && `${t('person.born')} ${day(p.birthDate)}${a != null ? ` (${t('person.age', { n: a })})` : ''}`,
    cccdOf(p) && `CCCD ${cccdOf(p)}`,
    phoneOf(p) && `☎ ${phoneOf(p)}`,
  ].filter(Boolean).join(' · ');
}

export function personItem(p, actions) {
  return h('li', {}, h('a', { href: `/app/people/${p.id}` }, h('strong', {}, nameOf(p))),
    h('div', { class: 'muted' }, facts(p)), actions);
}
