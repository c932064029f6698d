// Small DOM helpers: elements are built with text nodes, never from HTML strings.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v; // CSSOM: allowed by the CSP, unlike the attribute
    else if (k in el && k !== 'list' && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

let toastTimer;
export function toast(text) {
  const el = $('#toast');
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove('show'), 4000);
}

// Enter moves to the next field (the last one submits): quick entry on a phone keypad.
export function enterMovesOn(form) {
  form.addEventListener('keydown', (e) => {
    const el = e.target;
    if (e.key !== 'Enter' || el.tagName === 'TEXTAREA' || el.tagName === 'BUTTON') return;
    const groups = new Set();
    const fields = $$('input,select', form).filter((f) => {
      if (f.type === 'hidden' || f.disabled || f.readOnly || f.closest('[hidden]')) return false;
      if (f.type !== 'radio') return true;
      if (groups.has(f.name)) return false;
      groups.add(f.name);
      return true;
    });
    const i = fields.findIndex((f) => f === el || (el.type === 'radio' && f.name === el.name));
    if (i < 0) return;
    e.preventDefault();
    if (i + 1 < fields.length) fields[i + 1].focus();
    else form.requestSubmit();
  });
}
