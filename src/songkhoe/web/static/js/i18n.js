// Message catalogs (static/i18n/vi.json, en.json): Vietnamese by default, English on request.
let lang = 'vi';
let messages = {};
const base = new URL('../i18n/', import.meta.url);

export async function load(wanted) {
  lang = wanted || localStorage.getItem('sk-lang') || 'vi';
  if (lang !== 'vi' && lang !== 'en') lang = 'vi';
  const r = await fetch(new URL(`${lang}.json`, base)); // as preloaded by the shell
  messages = await r.json();
  document.documentElement.lang = lang;
  return lang;
}

export const current = () => lang;
export const locale = () => (lang === 'vi' ? 'vi-VN' : 'en-GB');

export async function setLang(next) {
  localStorage.setItem('sk-lang', next);
  await load(next);
}

// t('key', {n: 3}) → the message with {n} replaced; the key itself when it is missing.
export function t(key, vars) {
  let s = messages[key];
  if (s == null) return key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] == null ? '' : vars[k]));
  return s;
}

// A {vi, en} label from the server in the current language.
export const label = (l) => (l ? l[lang] || l.vi || l.en : '');

export function num(x, digits) {
  if (x == null || Number.isNaN(x)) return '–';
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits ?? 1 }).format(x);
}

export const pct = (x) => (x == null ? '–' : `${num(x, 1)} %`);

export function day(iso) {
  if (!iso) return '–';
  const [y, m, d] = iso.slice(0, 10).split('-').map(Number);
  if (!m) return String(y);
  return new Intl.DateTimeFormat(locale(), { day: '2-digit', month: '2-digit', year: 'numeric' })
    .format(new Date(Date.UTC(y, m - 1, d || 1)));
}

export function age(birthDate, on = new Date()) {
  if (!birthDate) return null;
  const [y, m, d] = birthDate.split('-').map(Number);
  let a = on.getFullYear() - y;
  if (m && (on.getMonth() + 1 < m || (on.getMonth() + 1 === m && on.getDate() < (d || 1)))) a -= 1;
  return a;
}

export const today = () => new Date(Date.now() - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 10);
