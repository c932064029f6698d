// The app: session check, header, client-side routes under /app/.
import { h, clear, $ } from './dom.js';
import { load, t, setLang, current } from './i18n.js';
import { get, post } from './api.js';
import * as login from './pages/login.js';
import * as home from './pages/home.js';
import * as register from './pages/register.js';
import * as person from './pages/person.js';
import * as checkup from './pages/checkup.js';
import * as result from './pages/result.js';
import * as worklist from './pages/worklist.js';
import * as dashboard from './pages/dashboard.js';

const routes = [
  [/^\/app\/login$/, login, 'login'],
  [/^\/app\/?$/, home, 'home'],
  [/^\/app\/people$/, home, 'search'],
  [/^\/app\/people\/new$/, register, 'register'],
  [/^\/app\/people\/([^/]+)$/, person, 'person'],
  [/^\/app\/people\/([^/]+)\/checkup$/, checkup, 'checkup'],
  [/^\/app\/people\/([^/]+)\/result\/(\d{4}-\d{2}-\d{2})$/, result, 'result'],
  [/^\/app\/worklists\/(due|overdue|referral|lost)$/, worklist, 'worklist'],
  [/^\/app\/dashboard$/, dashboard, 'dashboard'],
];

const app = { me: null, navigate, render: () => route() };
const MANAGERS = new Set(['programme_manager', 'administrator', 'researcher']);
app.isManager = () => app.me && MANAGERS.has(app.me.role);

function navigate(path, replace) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

function header() {
  const top = $('#top');
  const here = location.pathname;
  const active = { '/app/': here === '/app/' || here === '/app/people', '/app/people/new': here === '/app/people/new',
    '/app/worklists/overdue': here.startsWith('/app/worklists/'), '/app/dashboard': here === '/app/dashboard' };
  const link = (href, key) => h('a', { href, 'aria-current': active[href] ? 'page' : null }, t(key));
  const other = current() === 'vi' ? 'en' : 'vi';
  // the page is not ready again until it is drawn in the other language
  const switchLang = async () => { delete document.body.dataset.ready; await setLang(other); route(); };
  const langButton = h('button', { type: 'button', lang: other, onclick: switchLang },
    other === 'en' ? 'English' : 'Tiếng Việt');
  const me = app.me;
  clear(top, h('div', { class: 'bar' },
    h('a', { class: 'brand', href: '/app/' }, t('app.name')),
    me && h('nav', { 'aria-label': t('nav.label') },
      !app.isManager() && link('/app/', 'nav.search'),
      !app.isManager() && link('/app/people/new', 'nav.register'),
      link('/app/worklists/overdue', 'nav.worklists'),
      link('/app/dashboard', 'nav.dashboard')),
    me && me.user && h('span', { class: 'who' }, `${me.user} · ${me.org_name || ''}`),
    langButton,
    me && me.user && h('button', { type: 'button', onclick: signOut }, t('nav.signout'))));
  $('#skip').textContent = t('nav.skip');
}

async function signOut() {
  try { await post('/app/logout'); } catch { /* signed out either way */ }
  app.me = null;
  navigate('/app/login');
}

let seq = 0;
async function route() {
  const mine = ++seq;
  delete document.body.dataset.ready;
  const path = location.pathname;
  const found = routes.find(([re]) => re.test(path)) || routes[1];
  const [re, page, name] = found;
  if (!app.me && name !== 'login') {
    try { app.me = await get('/api/me'); } catch {
      navigate(`/app/login?next=${encodeURIComponent(path + location.search)}`, true);
      return;
    }
  }
  if (name === 'home' && app.isManager()) { navigate('/app/dashboard', true); return; } // managers start on indicators
  header();
  const main = $('#main');
  const params = (path.match(re) || []).slice(1).map(decodeURIComponent);
  try {
    await page.render(main, { params, query: new URLSearchParams(location.search), app });
  } catch (err) {
    if (mine !== seq) return;
    clear(main, h('h1', {}, t('error.title')), h('p', { class: 'alert', role: 'alert' }, err.message || String(err)));
  }
  if (mine !== seq) return;
  document.body.dataset.ready = name;
  window.__ready = { page: name, at: performance.now() };
}

// Links inside the app navigate without reloading the page.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href^="/app/"]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || a.target || a.hasAttribute('download')) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', route);
window.addEventListener('signedout', () => { // the session ended while the app was in use
  if (!app.me) return;
  app.me = null;
  if (!location.pathname.startsWith('/app/login')) {
    navigate(`/app/login?next=${encodeURIComponent(location.pathname + location.search)}`, true);
  }
});

await load();
route();
