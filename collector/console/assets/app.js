// tillwatch console: plain DOM, no framework, nothing fetched but the
// collector's own JSON. Text from the collector only ever reaches the page
// through textContent, never as HTML.
'use strict';

const CAMPAIGN_RULE = 'TW-COLL-0003';
const SIG_DOMAIN = 'tillwatch-killswitch-v1\u0000';
const STATE_TEXT = {
  'alerting': 'Alerting', 'silenced': 'Silenced (heartbeat missed)', 'isolated': 'Isolated',
  'attack-stopped': 'Attack stopped', 'rmm-disabled': 'RMM disabled', 'degraded': 'Sensor degraded',
  'protected': 'Protected',
};
const ACTIONS = ['disable-rmm', 'enable-rmm', 'isolate-host', 'release-host', 'kill-process', 'quarantine-file', 'scan'];

let me = null;        // session info: role, csrf, can_issue, can_approve
let justIssued = '';  // id of a command this page issued that still waits for the issuer's signature
let timer = null;     // the current page's refresh
const storesFilter = { label: 'store', value: '', state: '' };
let alertsFilter = {};

// el builds an element: el('a', {href: '#/x', class: 'y'}, 'text', child).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 2000) return '';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

class HTTPError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

// call talks to the console; state-changing requests carry the CSRF token.
async function call(path, opts = {}) {
  const init = { method: opts.method || 'GET', credentials: 'same-origin', headers: {} };
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  if (init.method !== 'GET' && me) init.headers['X-CSRF-Token'] = me.csrf;
  const r = await fetch('/console/' + path, init);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    if (r.status === 401 && path !== 'session') { me = null; showSignIn((body && body.error) || 'signed out'); }
    throw new HTTPError(r.status, (body && body.error) || ('HTTP ' + r.status));
  }
  return body;
}

function stopTimer() { if (timer) { clearInterval(timer); timer = null; } }

// focusKey names the focused control inside the page so that a refresh,
// which rebuilds the page's elements, can give focus back to its
// successor: a keyboard user must not be thrown to the top every few
// seconds.
function focusKey() {
  const a = document.activeElement;
  if (!a || a === document.body || !page().contains(a)) return null;
  if (a.id) return '#' + CSS.escape(a.id);
  for (const attr of ['data-host', 'data-state', 'href']) {
    const v = a.getAttribute(attr);
    if (v !== null) return a.tagName.toLowerCase() + '[' + attr + '="' + CSS.escape(v) + '"]';
  }
  return null;
}

// refreshed runs fn, which replaces part of the page, keeping focus, and
// counts the refreshes (the browser tests wait on the count).
function refreshed(fn) {
  const key = focusKey();
  fn();
  if (key && (document.activeElement === document.body || !document.activeElement)) {
    const n = page().querySelector(key);
    if (n) n.focus({ preventScroll: true });
  }
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

// scroller wraps a wide table so that it scrolls inside the page, not the
// page itself; it takes focus so the keyboard can scroll it too.
function scroller(label, table) {
  return el('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': label }, table);
}

function page() { return document.getElementById('page'); }

function setPage(title, ...kids) {
  const p = page();
  p.replaceChildren(el('h1', { id: 'page-title', tabindex: -1 }, title), ...kids);
  document.title = title + ' — tillwatch console';
}

function errorBox(err) { return el('p', { class: 'error', role: 'alert' }, String(err.message || err)); }

function showSignIn(msg) {
  stopTimer();
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  page().replaceChildren();
  document.getElementById('signin').hidden = false;
  document.getElementById('signin-error').textContent = msg || '';
  document.getElementById('token').focus();
}

function signedIn() {
  document.getElementById('signin').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  document.getElementById('who').textContent = 'Signed in as ' + me.role;
}

// ---- stores ----

function stateBadge(s) { return el('span', { class: 'badge st-' + s }, STATE_TEXT[s] || s); }

async function renderStores() {
  const form = el('form', { class: 'filters', id: 'stores-filter' });
  const labelSel = el('select', { id: 'f-label', name: 'label' });
  const valueIn = el('input', { id: 'f-value', name: 'value', value: storesFilter.value, placeholder: 'any' });
  const stateSel = el('select', { id: 'f-state', name: 'state' }, el('option', { value: '' }, 'any state'));
  for (const s of Object.keys(STATE_TEXT)) stateSel.append(el('option', { value: s, selected: s === storesFilter.state }, STATE_TEXT[s]));
  form.append(
    el('label', { for: 'f-label' }, 'Group by label'), labelSel,
    el('label', { for: 'f-value' }, 'Value'), valueIn,
    el('label', { for: 'f-state' }, 'State'), stateSel,
    el('button', { type: 'submit' }, 'Filter'));
  const summary = el('div', { id: 'summary', class: 'summary', 'aria-label': 'Tills per state' });
  const groups = el('div', { id: 'groups' });
  const status = el('p', { class: 'muted', id: 'stores-status' });
  setPage('Stores', form, summary, status, groups);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    storesFilter.label = labelSel.value || 'store';
    storesFilter.value = valueIn.value.trim();
    storesFilter.state = stateSel.value;
    load();
  });
  async function load() {
    const q = new URLSearchParams({ label: storesFilter.label });
    if (storesFilter.value) q.set('value', storesFilter.value);
    if (storesFilter.state) q.set('state', storesFilter.state);
    let v;
    try { v = await call('data/stores?' + q); } catch (e) { status.replaceChildren(errorBox(e)); return; }
    const labels = new Set(v.labels.concat([storesFilter.label]));
    labelSel.replaceChildren(...[...labels].sort().map((l) => el('option', { value: l, selected: l === v.label }, l)));
    refreshed(() => {
    summary.replaceChildren(...v.states.map((s) => el('button', {
      type: 'button', class: 'count st-' + s, 'data-state': s, 'aria-pressed': storesFilter.state === s ? 'true' : 'false',
      on: { click: () => { storesFilter.state = storesFilter.state === s ? '' : s; renderStores(); } },
    }, el('strong', {}, String(v.counts[s] || 0)), ' ', STATE_TEXT[s])));
    status.textContent = v.total + ' tills in ' + v.groups.length + ' groups by "' + v.label + '"; updated ' +
      fmtTime(v.generated_at) + '; alerts of the last ' + v.window + ' count';
    groups.replaceChildren(...v.groups.map((g) => el('section', { class: 'store', 'aria-label': v.label + ' ' + g.name },
      el('h2', {}, g.name, ' ', el('span', { class: 'muted' }, g.tills.length + ' tills')),
      el('p', { class: 'store-counts' }, ...Object.entries(g.counts).map(([s, n]) => el('span', { class: 'mini st-' + s }, n + ' ' + (STATE_TEXT[s] || s)))),
      el('ul', { class: 'tills' }, ...g.tills.map((t) => el('li', {},
        el('a', { class: 'till st-' + t.state, href: '#/host/' + encodeURIComponent(t.host_id), 'data-host': t.host_id, 'data-state': t.state },
          el('span', { class: 'till-name' }, t.host_name || t.host_id),
          el('span', { class: 'till-state' }, STATE_TEXT[t.state] || t.state),
          t.states.length > 1 ? el('span', { class: 'till-more' }, '+ ' + t.states.slice(1).map((s) => STATE_TEXT[s] || s).join(', ')) : null)))))));
    });
  }
  await load();
  timer = setInterval(load, 10000);
}

// ---- alerts ----

async function renderAlerts(params) {
  alertsFilter = Object.assign({}, alertsFilter, params || {});
  const f = alertsFilter;
  const fields = [['rule', 'Rule id'], ['severity', 'Min severity'], ['host', 'Host id'], ['store', 'Store'], ['since', 'From (UTC)'], ['until', 'To (UTC)']];
  const form = el('form', { class: 'filters', id: 'alerts-filter' });
  for (const [name, label] of fields) {
    const type = name === 'since' || name === 'until' ? 'datetime-local' : name === 'severity' ? 'number' : 'text';
    form.append(el('label', { for: 'a-' + name }, label), el('input', { id: 'a-' + name, name, type, value: f[name] || '', min: type === 'number' ? 0 : null, max: type === 'number' ? 100 : null }));
  }
  form.append(el('button', { type: 'submit' }, 'Filter'));
  const table = el('table', { id: 'alerts-table' },
    el('caption', {}, 'Alerts, newest first'),
    el('thead', {}, el('tr', {}, ...['Time (UTC)', 'Host', 'Rule', 'Severity', 'Process', 'Sensor response'].map((h) => el('th', { scope: 'col' }, h)))));
  const body = el('tbody');
  table.append(body);
  const more = el('button', { type: 'button', id: 'alerts-older', hidden: true }, 'Older alerts');
  const status = el('p', { class: 'muted', id: 'alerts-status' });
  setPage('Alerts', form, status, scroller('Alerts', table), more);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const nf = {};
    for (const [name] of fields) { const v = form.elements[name].value.trim(); if (v) nf[name] = v; }
    alertsFilter = nf;
    body.replaceChildren();
    load('');
  });
  let next = '';
  more.addEventListener('click', () => load(next));
  async function load(before) {
    const q = new URLSearchParams(alertsFilter);
    if (before) q.set('before', before);
    let v;
    try { v = await call('data/alerts?' + q); } catch (e) { status.replaceChildren(errorBox(e)); return; }
    for (const a of v.alerts) {
      body.append(el('tr', {},
        el('td', {}, el('a', { href: '#/alert/' + encodeURIComponent(a.id) }, fmtTime(a.timestamp))),
        el('td', {}, el('a', { href: '#/host/' + encodeURIComponent(a.host_id) }, a.host_name || a.host_id)),
        el('td', {}, a.rule_id + ' ' + a.rule_name),
        el('td', { class: 'num' }, String(a.severity)),
        el('td', {}, a.process || ''),
        el('td', { class: a.stopped ? 'ok' : '' }, a.response || '')));
    }
    status.textContent = body.children.length + ' alerts shown';
    next = v.next || '';
    more.hidden = !next;
  }
  await load('');
}

// ---- alert ----

function dl(pairs) {
  return el('dl', { class: 'facts' }, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => [el('dt', {}, k), el('dd', {}, v instanceof Node ? v : Array.isArray(v) ? v.join(', ') : String(v))]).flat());
}

// processChain returns the alert's process and its ancestors, root first.
function processChain(a) {
  const p = a.process || {};
  const anc = (((a.tillwatch || {}).process || {}).ancestry || []).slice();
  let chain = anc.reverse();
  if (chain.length === 0 && p.parent) chain = [p.parent];
  return chain.concat([Object.assign({ self: true }, p)]);
}

function processTree(a) {
  const rmm = (a.tillwatch || {}).rmm || {};
  const chain = processChain(a);
  // Nested lists: each process is the only child of the one before.
  let root = null, parentList = null;
  for (const p of chain) {
    const tags = [];
    if (rmm.agent_pid && p.pid === rmm.agent_pid) tags.push(el('span', { class: 'tag' }, 'RMM agent' + (rmm.product_name ? ': ' + rmm.product_name : '')));
    if (p.self) tags.push(el('span', { class: 'tag tag-alert' }, 'alerted process'));
    if (p.exited) tags.push(el('span', { class: 'tag' }, 'exited'));
    const li = el('li', { class: 'proc' + (p.self ? ' self' : '') },
      el('span', { class: 'pname' }, (p.name || '?') + ' '), el('span', { class: 'muted' }, '(pid ' + p.pid + ')'), ' ', ...tags,
      p.command_line ? el('code', { class: 'cmdline' }, p.command_line) : (p.executable ? el('code', { class: 'cmdline' }, p.executable) : null));
    const ul = el('ul', { class: 'tree' }, li);
    if (!root) root = ul; else parentList.append(ul);
    parentList = li;
  }
  return el('div', { id: 'process-tree', role: 'tree', 'aria-label': 'Process ancestry' }, root);
}

function sensorActions(a) {
  const tw = a.tillwatch || {};
  const rows = [];
  if (tw.response) rows.push(['Response', tw.response.action + ' → ' + tw.response.result + (tw.response.target ? ' (' + tw.response.target + ')' : '')]);
  const rw = tw.ransomware || {};
  if (rw.stopped && rw.stopped.length) rows.push(['Stopped (file guard)', rw.stopped.map((p) => 'pid ' + p)]);
  if (rw.quarantined && rw.quarantined.length) rows.push(['Quarantined', rw.quarantined]);
  if (tw.files_affected) rows.push(['Files affected', String(tw.files_affected)]);
  if (rw.files && rw.files.length) rows.push(['Affected files (first)', rw.files.slice(0, 20)]);
  if (rw.restored !== undefined) rows.push(['Restored', String(rw.restored)]);
  if (rw.score) rows.push(['Ransomware score', String(rw.score) + (rw.reasons ? ' — ' + rw.reasons.join('; ') : '')]);
  if (tw.killswitch) rows.push(['Kill-switch', (tw.killswitch.action || '') + ' ' + (tw.killswitch.status || '') + ' ' + (tw.killswitch.detail || '')]);
  if (rows.length === 0) rows.push(['Response', 'none recorded (detect mode, or nothing to stop)']);
  return dl(rows);
}

async function renderAlert(id) {
  setPage('Alert');
  let a;
  try { a = (await call('data/alert?id=' + encodeURIComponent(id))).alert; } catch (e) { page().append(errorBox(e)); return; }
  const rule = a.rule || {}, threat = a.threat || {}, tech = threat.technique || {}, tactic = threat.tactic || {};
  const host = a.host || {}, tw = a.tillwatch || {};
  const attack = (tech.id || []).map((t, i) => t + ' ' + ((tech.name || [])[i] || '')).concat((tactic.id || []).map((t, i) => t + ' ' + ((tactic.name || [])[i] || '')));
  const links = el('p', { class: 'links' },
    el('a', { href: '#/host/' + encodeURIComponent(host.id || ''), id: 'alert-host' }, 'Host ' + (host.name || host.id)), ' · ',
    el('a', { href: '#/alerts', id: 'alert-campaign', on: { click: (ev) => { ev.preventDefault(); alertsFilter = { rule: CAMPAIGN_RULE }; location.hash = '#/alerts'; } } }, 'Campaign alerts'), ' · ',
    el('a', { href: '#/alerts', on: { click: (ev) => { ev.preventDefault(); alertsFilter = { rule: rule.id }; location.hash = '#/alerts'; } } }, 'Other alerts of ' + rule.id));
  const kids = [
    el('p', { class: 'lead' }, (rule.id || '') + ' ' + (rule.name || '')), links,
    dl([['Time', fmtTime(a['@timestamp'])], ['Host', host.name || host.id], ['Severity', (a.event || {}).severity], ['Rule', (rule.id || '') + ' ' + (rule.name || '')],
      ['Description', rule.description], ['ATT&CK', attack], ['Mode', tw.mode], ['Message', a.message], ['File', (a.file || {}).path],
      ['SHA-256', ((a.process || {}).hash || {}).sha256]]),
    el('h2', {}, 'Process and ancestry'), processTree(a),
    el('h2', {}, 'What the sensor did'), sensorActions(a),
  ];
  if (tw.campaign) kids.push(el('h2', {}, 'Campaign'), dl([['Key', tw.campaign.key], ['Policy', tw.campaign.policy], ['Window', tw.campaign.window]]),
    el('ul', {}, ...tw.campaign.hosts.map((h) => el('li', {}, el('a', { href: '#/host/' + encodeURIComponent(h) }, h)))));
  setPage('Alert ' + (rule.id || ''), ...kids);
}

// ---- host ----

async function renderHost(id) {
  setPage('Host');
  let v;
  try { v = await call('data/host?id=' + encodeURIComponent(id)); } catch (e) { page().append(errorBox(e)); return; }
  const h = v.host;
  const health = Object.entries(h.health || {});
  const tl = el('ol', { class: 'timeline', id: 'timeline' }, ...v.timeline.map((e) => el('li', { class: 'tl-' + e.kind + (e.kind === 'health' && e.status && e.status !== 'ok' ? ' bad' : ''), 'data-status': e.status },
    el('time', { datetime: e.time }, fmtTime(e.time)), ' ', el('span', { class: 'tl-kind' }, e.kind), ' ',
    e.link ? el('a', { href: '#/' + e.link.replace(':', '/') }, e.text) : e.text)));
  setPage('Host ' + (h.host_name || h.host_id),
    el('p', { id: 'host-states' }, ...v.states.map(stateBadge)),
    dl([['Host id', h.host_id], ['Agent', h.agent_id], ['Version', h.agent_version], ['Mode', h.mode], ['OS', h.os],
      ['Labels', Object.entries(h.labels || {}).map(([k, x]) => k + '=' + x)], ['Enrolled', fmtTime(h.enrolled_at)], ['Last seen', fmtTime(h.last_seen)],
      ['Alerts stored', h.alert_count], ['Events lost', h.events_lost], ['Rules', h.rules_version], ['Config', h.config_version]]),
    el('h2', {}, 'Health'),
    health.length ? el('ul', { class: 'health' }, ...health.map(([c, s]) => el('li', { class: s === 'ok' ? 'ok' : 'bad' }, c + ': ' + s))) : el('p', {}, 'No health reported yet.'),
    el('h2', {}, 'Timeline'), tl);
}

// ---- kill-switch ----

function parseLines(text) {
  const out = {};
  for (const line of text.split(/\n|,/)) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i < 1) throw new Error('"' + t + '" is not key=value');
    out[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return out;
}

function issueForm() {
  const sel = el('select', { id: 'k-action', name: 'action' }, ...ACTIONS.map((a) => el('option', { value: a }, a)));
  const kind = el('select', { id: 'k-target-kind', name: 'target_kind' },
    el('option', { value: 'hosts' }, 'hosts'), el('option', { value: 'labels' }, 'labels'), el('option', { value: 'all' }, 'all tills'));
  const target = el('input', { id: 'k-target', name: 'target', placeholder: 'till-1, till-2   or   store=0042' });
  const reason = el('input', { id: 'k-reason', name: 'reason', required: true });
  const ttl = el('input', { id: 'k-ttl', name: 'ttl', type: 'number', min: 1, max: 10080, value: 60 });
  const params = el('input', { id: 'k-params', name: 'params', placeholder: 'key=value, ...' });
  const out = el('p', { id: 'issue-result', role: 'status' });
  const note = el('p', { id: 'issue-note', class: 'note' });
  const showNote = () => { note.textContent = issueNote(sel.value); };
  sel.addEventListener('change', showNote);
  showNote();
  const form = el('form', { id: 'issue-form', class: 'stack' },
    el('label', { for: 'k-action' }, 'Action'), sel,
    el('label', { for: 'k-target-kind' }, 'Target'), kind,
    el('label', { for: 'k-target' }, 'Hosts (comma-separated) or label=value'), target,
    el('label', { for: 'k-params' }, 'Parameters'), params,
    el('label', { for: 'k-reason' }, 'Reason'), reason,
    el('label', { for: 'k-ttl' }, 'Time to live (minutes)'), ttl,
    note, el('button', { type: 'submit' }, 'Issue command'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { action: sel.value, reason: reason.value.trim(), ttl_seconds: Number(ttl.value) * 60, targets: {} };
    try {
      if (kind.value === 'all') body.targets.all = true;
      else if (kind.value === 'hosts') body.targets.hosts = target.value.split(/[\s,]+/).filter(Boolean);
      else body.targets.labels = parseLines(target.value);
      if (params.value.trim()) body.params = parseLines(params.value);
      const r = await call('api/v1/commands', { method: 'POST', body });
      // Anything but a scan waits for a responder key: the issuer signs it
      // on the command's page, which opens with the signing step.
      justIssued = r.command.state === 'pending-approval' ? r.command.id : '';
      location.hash = '#/command/' + encodeURIComponent(r.command.id);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
  return el('section', { 'aria-labelledby': 'issue-h' }, el('h2', { id: 'issue-h' }, 'Issue a command'), form);
}

// issueNote says, before issuing, who will sign the action: a token alone
// gets only a scan signed by the collector; everything that acts waits for
// responder keys, the issuer's first (the collector's policy decides how
// many; these are its defaults).
function issueNote(action) {
  const sign = 'After issuing, you will sign it with your key: the command\'s page shows exactly what is signed and asks for your responder key file (read in this browser only). ';
  switch (action) {
    case 'scan': return 'The collector signs a scan itself: it is active as soon as it is issued.';
    case 'disable-rmm': return sign + 'Your signature alone activates it.';
    case 'enable-rmm': case 'release-host':
      return sign + 'It undoes a protection, so a second responder must approve it with their key too.';
    default: return sign + 'Your signature alone activates it on a few named hosts (5 by default, within your key\'s budget); all tills, labels or more hosts need a second responder\'s approval too.';
  }
}

async function renderKillswitch() {
  const kids = [];
  if (me.can_issue) kids.push(issueForm());
  else kids.push(el('p', { id: 'no-issue', class: 'muted' }, 'Your role (' + me.role + ') may follow commands but not issue or approve them.'));
  const table = el('table', { id: 'commands-table' }, el('caption', {}, 'Commands, newest first (the audit trail)'),
    el('thead', {}, el('tr', {}, ...['Issued (UTC)', 'Command', 'Action', 'Targets', 'State', 'Signatures', 'Issuer', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))));
  const body = el('tbody');
  table.append(body);
  kids.push(el('h2', {}, 'Commands'), scroller('Commands', table));
  setPage('Kill-switch', ...kids);
  async function load() {
    let v;
    try { v = await call('api/v1/commands?limit=100'); } catch (e) { body.replaceChildren(el('tr', {}, el('td', { colspan: 8 }, errorBox(e)))); return; }
    refreshed(() => body.replaceChildren(...v.commands.map((c) => el('tr', { class: 'cmd-' + c.state },
      el('td', {}, fmtTime(c.issued_at)),
      el('td', {}, el('a', { href: '#/command/' + encodeURIComponent(c.id) }, c.id)),
      el('td', {}, c.action), el('td', {}, c.targets),
      el('td', {}, c.state === 'pending-approval' ? 'waiting for approval' : c.state),
      el('td', { class: 'num' }, (c.signed.signatures || []).length + (c.required_approvals ? ' of ' + c.required_approvals + ' responders' : '')),
      el('td', {}, c.issuer), el('td', {}, c.reason || '')))));
  }
  await load();
  timer = setInterval(load, 5000);
}

function b64decode(s) { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); }
function b64encode(u8) { let s = ''; for (const b of u8) s += String.fromCharCode(b); return btoa(s); }
function hex(u8) { return [...u8].map((b) => b.toString(16).padStart(2, '0')).join(''); }

// pemBody returns the DER bytes of a PEM block of type.
function pemBody(text, type) {
  const m = text.match(new RegExp('-----BEGIN ' + type + '-----([A-Za-z0-9+/=\\s]+)-----END ' + type + '-----'));
  if (!m) throw new Error('not a PEM "' + type + '" file (the .key file `tillwatch keys gen` writes)');
  return b64decode(m[1].replace(/\s+/g, ''));
}

// signApproval signs domain || payload with the responder's key, entirely
// in this page: the key file is read here and never sent anywhere.
async function signApproval(keyText, payload) {
  const der = pemBody(keyText, 'PRIVATE KEY');
  const key = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, true, ['sign']);
  const jwk = await crypto.subtle.exportKey('jwk', key);
  const pub = b64decode(jwk.x.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - jwk.x.length % 4) % 4));
  const keyID = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', pub)).slice(0, 8));
  const msg = new Uint8Array(SIG_DOMAIN.length + payload.length);
  msg.set(new TextEncoder().encode(SIG_DOMAIN), 0);
  msg.set(payload, SIG_DOMAIN.length);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key, msg));
  return { key_id: keyID, sig: b64encode(sig) };
}

// approveSection is the signing step: for the responder who just issued the
// command it is their own signature, for anyone else an approval.
function approveSection(c, cmd, payload, mine) {
  const file = el('input', { id: 'key-file', type: 'file', accept: '.key,.pem' });
  const out = el('p', { id: 'approve-result', role: 'status' });
  const ttl = Math.round((new Date(cmd.not_after) - new Date(cmd.issued_at)) / 60000);
  const shown = el('pre', { id: 'to-sign', class: 'payload' }, JSON.stringify({
    id: cmd.id, action: cmd.action, targets: cmd.targets, params: cmd.params || {}, reason: cmd.reason || '',
    issued_at: cmd.issued_at, not_after: cmd.not_after, ttl_minutes: ttl, issuer: cmd.issuer,
  }, null, 2));
  const btn = el('button', { type: 'button', id: 'approve-btn' }, mine ? 'Sign with this key' : 'Sign with this key and approve');
  btn.addEventListener('click', async () => {
    out.replaceChildren();
    if (!file.files.length) { out.replaceChildren(errorBox('pick your responder key file first')); return; }
    try {
      const sig = await signApproval(await file.files[0].text(), payload);
      file.value = '';
      await call('api/v1/commands/' + encodeURIComponent(c.id) + '/approve', { method: 'POST', body: { signature: sig } });
      if (justIssued === c.id) justIssued = '';
      out.textContent = (mine ? 'Signed' : 'Approved') + ' with key ' + sig.key_id + '.';
      renderCommand(c.id);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
  return el('section', { 'aria-labelledby': 'approve-h', id: 'approve', 'data-step': mine ? 'issuer' : 'approver' },
    el('h2', { id: 'approve-h' }, mine ? 'Sign the command you issued' : 'Approve'),
    mine ? el('p', { id: 'sign-why' }, 'A token alone cannot order this: it stays waiting until responders sign it with their own keys, yours first.') : null,
    el('p', {}, 'This is exactly what your signature will cover (decoded from the signed payload):'), shown,
    el('label', { for: 'key-file' }, 'Your responder key file (read in this browser only; never uploaded)'), file, btn, out,
    el('p', {}, 'Or from a terminal:'), el('pre', { id: 'cli-line' }, 'tillwatch killswitch approve ' + c.id + ' --sign-with ~/.tillwatch/you.key'));
}

async function renderCommand(id) {
  stopTimer();
  async function load() {
    let v;
    try { v = await call('api/v1/commands/' + encodeURIComponent(id)); } catch (e) { setPage('Command', errorBox(e)); return; }
    const c = v.command;
    const payload = b64decode(c.signed.payload);
    const cmd = JSON.parse(new TextDecoder().decode(payload));
    const hosts = el('table', { id: 'acks-table' }, el('caption', {}, 'Per-host delivery and acknowledgement'),
      el('thead', {}, el('tr', {}, ...['Host', 'State', 'Delivered', 'Acknowledged', 'Result', 'Detail'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, ...v.hosts.map((h) => el('tr', { 'data-host': h.host_id },
        el('td', {}, el('a', { href: '#/host/' + encodeURIComponent(h.host_id) }, h.host_id)), el('td', {}, h.state),
        el('td', {}, fmtTime(h.delivered_at)), el('td', {}, fmtTime(h.acked_at)),
        el('td', { class: h.result && h.result.status === 'ok' ? 'ok' : '' }, h.result ? h.result.status : ''),
        el('td', {}, h.result ? (h.result.detail || '') + (h.result.refusal ? ' ' + h.result.refusal : '') : '')))));
    const sigs = (c.signed.signatures || []).length;
    const kids = [
      el('p', { id: 'approvals', 'data-signatures': sigs, class: 'lead' }, c.state === 'pending-approval'
        ? (justIssued === c.id ? 'Issued; waiting for your signature: ' : 'Waiting for approval: ') + sigs + ' of ' + c.required_approvals + ' responder signatures'
        : 'Active: delivered to its tills'),
      dl([['Action', c.action], ['Targets', c.targets], ['Parameters', Object.entries(cmd.params || {}).map(([k, x]) => k + '=' + x)],
        ['Reason', c.reason], ['Issuer', c.issuer], ['Issued', fmtTime(c.issued_at)], ['Expires', fmtTime(c.not_after)],
        ['State', c.state === 'pending-approval' ? 'waiting for approval' : c.state],
        ['Approvals needed', c.required_approvals > 1 ? c.required_approvals + ' distinct responders' : c.required_approvals ? 'one responder key' : 'one pinned key'],
        ['Signed by (key ids)', (c.signed.signatures || []).map((s) => s.key_id)]]),
    ];
    if (c.state !== 'pending-approval' && justIssued === c.id) justIssued = '';
    if (c.state === 'pending-approval') {
      if (me.can_approve) kids.push(approveSection(c, cmd, payload, justIssued === c.id));
      else kids.push(el('p', { class: 'muted' }, 'Waiting for responders to approve.'));
    }
    kids.push(scroller('Per-host delivery and acknowledgement', hosts));
    const keep = document.getElementById('key-file');
    if (keep && keep.files.length) return; // do not wipe a key the responder just picked
    refreshed(() => setPage('Command ' + c.id, ...kids));
  }
  await load();
  timer = setInterval(load, 3000);
}

// ---- routing ----

async function route() {
  stopTimer();
  if (!me) return;
  const h = location.hash || '#/stores';
  const [, pageName, arg] = h.match(/^#\/([a-z]+)\/?(.*)$/) || [null, 'stores', ''];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === pageName || (pageName === 'command' && a.dataset.page === 'killswitch')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const id = decodeURIComponent(arg || '');
  switch (pageName) {
    case 'alerts': await renderAlerts(); break;
    case 'alert': await renderAlert(id); break;
    case 'host': await renderHost(id); break;
    case 'killswitch': await renderKillswitch(); break;
    case 'command': await renderCommand(id); break;
    default: await renderStores();
  }
  // A new page announces itself: focus goes to its heading (the page's
  // refreshes do not move focus).
  const title = document.getElementById('page-title');
  if (title && page().contains(document.activeElement) === false) { title.tabIndex = -1; title.focus({ preventScroll: true }); }
  document.body.dataset.ready = pageName;
}

async function start() {
  document.getElementById('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = document.getElementById('token');
    try {
      me = await call('session', { method: 'POST', body: { token: input.value } });
      input.value = '';
      signedIn();
      await route();
    } catch (e) { document.getElementById('signin-error').textContent = e.message; }
  });
  document.getElementById('logout').addEventListener('click', async () => {
    try { await call('logout', { method: 'POST' }); } catch (e) { /* signed out anyway */ }
    me = null;
    showSignIn('Signed out.');
  });
  window.addEventListener('hashchange', () => { route(); });
  try {
    me = await call('session');
    signedIn();
    await route();
  } catch (e) { showSignIn(''); }
}

document.addEventListener('DOMContentLoaded', start);
