// Sign-in: POST /app/session (form), the session then lives in HttpOnly cookies.
import { h, clear, enterMovesOn } from '../dom.js';
import { t } from '../i18n.js';
import { get, post, ApiError } from '../api.js';

export async function render(main, { query, app }) {
  document.title = `${t('login.title')} – ${t('app.name')}`;
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' });
  const change = h('div', { hidden: true },
    h('p', { class: 'alert warn' }, t('login.mustChange')),
    h('div', { class: 'field' }, h('label', { for: 'new_password' }, t('login.newPassword')),
      h('input', { id: 'new_password', name: 'new_password', type: 'password', autocomplete: 'new-password', minlength: 8 })));
  const form = h('form', { class: 'card', style: 'max-width:24rem', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'username' }, t('login.username')),
      h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' })),
    h('div', { class: 'field' }, h('label', { for: 'password' }, t('login.password')),
      h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    change, error,
    h('button', { class: 'primary', type: 'submit' }, t('login.submit')));
  enterMovesOn(form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await post('/app/session', new URLSearchParams(new FormData(form)));
      app.me = await get('/api/me');
      const next = query.get('next');
      const home = app.isManager() ? '/app/dashboard' : '/app/';
      app.navigate(next && next.startsWith('/app/') && !next.startsWith('/app/login') ? next : home, true);
    } catch (err) {
      const desc = err instanceof ApiError && err.body ? err.body.error_description || '' : '';
      if (desc.startsWith('password_change_required')) {
        change.hidden = false;
        form.querySelector('#new_password').focus();
        error.textContent = '';
      } else {
        error.textContent = err.status === 400 || err.status === 401 ? t('login.failed') : err.message;
      }
    } finally {
      button.disabled = false;
    }
  });
  clear(main, h('h1', {}, t('login.title')), h('p', { class: 'muted' }, t('login.intro')), form);
  form.querySelector('#username').focus();
}
