// deploy/demo/src/app.js - the blog post's collaborative todo list on the gateway.
// /?model=NAME&user=NAME opens the list NAME as the user NAME (the gateway's --no-auth
// passes the flush's context through, and the created_by interceptor stamps creates
// with context.user); &token=JWT for a gateway that checks tokens.
//
// The todos are the map "todos" of the model's document, {id: {title, done, createdBy,
// createdAt}}. Every edit is a flushout command on the local proxy (ModelSync); the
// page re-renders from the proxy's document after each edit and each sync.
import { ModelSync } from './sync.js';

const params = new URLSearchParams(location.search);
const model = params.get('model') || 'todo';
const user = params.get('user') || 'anonymous';
const HISTORY_SHOWN = 200; // changes listed under the slider (the latest ones)

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'testid') node.dataset.testid = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
};

const sync = new ModelSync({ model, user, token: params.get('token') || '', onUpdate: () => scheduleRender() });
window.flushoutDemo = { sync }; // for tests and the console

let editing = null; // {id, draft}: the todo being renamed
let renderQueued = false;

// ---- the live list ----

function todosOf(doc) {
  const todos = doc && typeof doc.todos === 'object' && doc.todos ? doc.todos : {};
  return Object.entries(todos)
    .filter(([, t]) => t && typeof t === 'object')
    .sort(([ia, a], [ib, b]) => orderOf(a) - orderOf(b) || compareIds(ia, ib));
}

// Oldest first by the master's createdAt; items not flushed yet have none and go last.
const orderOf = (t) => (typeof t.createdAt === 'number' ? t.createdAt : Number.MAX_SAFE_INTEGER);
const compareIds = (a, b) => (a.length - b.length) || (a < b ? -1 : a > b ? 1 : 0);

function command(cmd) {
  const result = sync.apply(cmd);
  if (!result.isSuccess) sync.lastError = `not applied: ${result.error}`;
  render(); // the edit shows at once, not at the next tick
}

const addTodo = (title) => command({ action: 'create', path: ['todos'], parentDefault: {}, props: { title, done: false } });
const toggleTodo = (id, done) => command({ action: 'update', path: ['todos', id], props: { done } });
const renameTodo = (id, title) => command({ action: 'update', path: ['todos', id], props: { title } });
const deleteTodo = (id) => command({ action: 'detete', path: ['todos', id] }); // flushout's spelling

// Rows are kept per todo ID and updated in place, so that a click that lands while a
// sync re-renders the list still hits its row.
const rows = new Map(); // id -> {li, renaming}

function todoItem(id, todo) {
  const li = el('li', { testid: 'todo', 'data-id': id });
  const box = el('input', { type: 'checkbox', testid: 'toggle-todo', onchange: (ev) => toggleTodo(id, ev.target.checked) });
  li.append(box);
  if (editing && editing.id === id) {
    const input = el('input', { class: 'rename', testid: 'rename-input', value: editing.draft, maxlength: '200' });
    input.addEventListener('input', () => (editing.draft = input.value));
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') finishRename(true);
      if (ev.key === 'Escape') finishRename(false);
    });
    // A blur while the list re-renders is the row moving, not the user leaving the box.
    input.addEventListener('blur', () => rendering || finishRename(true));
    li.append(input); // focused by renderList
  } else {
    li.append(el('span', { class: 'title', testid: 'todo-title', title: 'double-click to rename',
      ondblclick: () => startRename(id, titleOf(id)) }));
  }
  li.append(el('span', { class: 'by' }));
  li.append(el('button', { class: 'icon', type: 'button', testid: 'rename-todo', 'aria-label': 'rename', title: 'rename',
    onclick: () => startRename(id, titleOf(id)) }, '✎'));
  li.append(el('button', { class: 'icon', type: 'button', testid: 'delete-todo', 'aria-label': 'delete', title: 'delete',
    onclick: () => deleteTodo(id) }, '✕'));
  return li;
}

function updateItem(li, todo) {
  const title = typeof todo.title === 'string' ? todo.title : '';
  li.className = todo.done ? 'todo done' : 'todo';
  const box = li.querySelector('[data-testid="toggle-todo"]');
  box.checked = !!todo.done;
  box.setAttribute('aria-label', `done: ${title}`);
  const span = li.querySelector('.title');
  if (span && span.textContent !== title) span.textContent = title;
  const by = li.querySelector('.by');
  by.textContent = todo.createdBy || 'local';
  by.title = todo.createdBy ? createdTitle(todo) : 'not flushed yet';
  by.classList.toggle('pending', !todo.createdBy);
}

function renderList(items) {
  const wanted = items.map(([id, todo]) => {
    const renaming = !!(editing && editing.id === id);
    let row = rows.get(id);
    if (!row || row.renaming !== renaming) rows.set(id, (row = { li: todoItem(id, todo), renaming }));
    updateItem(row.li, todo);
    return row.li;
  });
  const present = new Set(items.map(([id]) => id));
  for (const id of rows.keys()) if (!present.has(id)) rows.delete(id);
  // Move only the rows out of place, so that most keep their focus and hover.
  const list = $('todos');
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
  const box = list.querySelector('.rename');
  if (box && document.activeElement !== box) box.focus();
}

const titleOf = (id) => ((sync.proxy.getDocument().todos || {})[id] || {}).title || '';

const createdTitle = (todo) =>
  `added by ${todo.createdBy}${typeof todo.createdAt === 'number' ? ` at ${new Date(todo.createdAt).toLocaleString()}` : ''}`;

function startRename(id, title) {
  editing = { id, draft: title };
  render();
}

function finishRename(keep) {
  if (!editing) return;
  const { id, draft } = editing;
  editing = null;
  const todo = (sync.proxy.getDocument().todos || {})[id];
  if (keep && todo && draft.trim() && draft.trim() !== todo.title) renameTodo(id, draft.trim());
  render();
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    render();
  });
}

let lastMasterCount = -1;

let rendering = false;

function render() {
  if (rendering) return scheduleRender();
  rendering = true;
  try {
    renderNow();
  } finally {
    rendering = false;
  }
}

function renderNow() {
  const state = sync.connectionState();
  const conn = $('connection');
  conn.textContent = state;
  conn.dataset.state = state;
  if (!sync.proxy) return;
  const items = todosOf(sync.proxy.getDocument());
  if (editing && !items.some(([id]) => id === editing.id)) editing = null; // deleted (or renamed by the master) meanwhile
  renderList(items);
  $('empty').hidden = items.length > 0;
  $('local-count').textContent = sync.proxy.getCommandCount();
  $('master-count').textContent = sync.masterCount;
  $('unflushed-count').textContent = sync.unflushedCount();
  $('flush').classList.toggle('pending', sync.unflushedCount() > 0);
  showError(sync.lastError);
  if (sync.masterCount !== lastMasterCount) {
    lastMasterCount = sync.masterCount;
    refreshHistorySoon();
  }
}

function showError(text) {
  $('error').hidden = !text;
  $('error').textContent = text || '';
}

// ---- history: the master's commands and the list at any version kept (?at=N) ----

const history = { start: 0, end: 0, completions: [], baseDoc: {}, selected: null, timer: null, loading: false };
window.flushoutDemo.history = history;

function refreshHistorySoon() {
  clearTimeout(history.timer);
  history.timer = setTimeout(refreshHistory, 250);
}

async function refreshHistory() {
  if (history.loading) return refreshHistorySoon();
  history.loading = true;
  try {
    const end = sync.masterCount;
    let start = Math.max(0, end - HISTORY_SHOWN);
    let h = await sync.get(`/history?from=${start}&to=${end}`);
    if (h.status === 410) {
      // "history from F is no longer kept (kept: the last N commands)": the last N
      // are there (fewer after a restore: then the list stays as it was)
      const m = /the last (\d+) commands/.exec(h.body && h.body.error ? h.body.error.message : '');
      if (!m) return;
      start = Math.max(0, end - Number(m[1]));
      h = await sync.get(`/history?from=${start}&to=${end}`);
    }
    if (h.status !== 200) return;
    const base = await sync.get(`?at=${start}`); // the titles the first listed changes refer to
    if (base.status !== 200) return;
    Object.assign(history, { start, end, completions: h.body.completions, baseDoc: base.body.document });
    renderHistory();
  } catch (e) {
    // offline: the history waits for the next change
  } finally {
    history.loading = false;
  }
}

// One line per change, newest first: the version it made, what it did to which todo,
// and who, where the master stamped it: created_by.lua stamps creates with createdBy
// (updates and deletes carry no user in the history).
function describe(completions, baseDoc, start) {
  const known = {};
  for (const [id, t] of Object.entries((baseDoc && baseDoc.todos) || {})) known[id] = t;
  const lines = [];
  completions.forEach((c, i) => {
    const cmd = c.command;
    const path = cmd.path || [];
    const id = cmd.action === 'create' ? c.createdId : path[1];
    const before = known[id] || {};
    const name = JSON.stringify(String((cmd.props && cmd.props.title) ?? before.title ?? id));
    let what;
    let who = '';
    if (cmd.action === 'create') {
      known[id] = { ...(cmd.props || {}) };
      what = `added ${name}`;
      who = (cmd.props && cmd.props.createdBy) || '';
    } else if (cmd.action === 'update') {
      const p = cmd.props || {};
      what = 'title' in p ? `renamed ${JSON.stringify(String(before.title ?? id))} to ${name}`
        : p.done ? `checked ${name}` : 'done' in p ? `unchecked ${name}` : `changed ${name}`;
      known[id] = { ...before, ...p };
    } else {
      what = `deleted ${name}`;
      delete known[id];
    }
    lines.push({ version: start + i + 1, what, who });
  });
  return lines.reverse();
}

function renderHistory() {
  const slider = $('history-slider');
  slider.min = history.start;
  slider.max = history.end;
  slider.disabled = history.end === history.start;
  if (history.selected === null || history.selected > history.end) slider.value = history.end;
  const list = $('history-list');
  list.replaceChildren(...describe(history.completions, history.baseDoc, history.start).map((line) => {
    const item = el('li', { testid: 'history-entry', 'data-version': line.version,
      class: history.selected === line.version ? 'selected' : '', onclick: () => selectVersion(line.version) },
    el('span', { class: 'v' }, `v${line.version}`), el('span', { class: 'what' }, line.what));
    if (line.who) item.append(el('span', { class: 'by' }, line.who));
    return item;
  }));
}

async function selectVersion(version) {
  const slider = $('history-slider');
  if (version >= history.end) {
    history.selected = null;
    slider.value = history.end;
    $('history-view').hidden = true;
    $('history-label').textContent = 'live';
    renderHistory();
    return;
  }
  history.selected = version;
  slider.value = version;
  $('history-label').textContent = `version ${version} of ${history.end}`;
  renderHistory();
  const at = await sync.get(`?at=${version}`).catch(() => null);
  if (history.selected !== version) return; // moved on meanwhile
  const view = $('history-view');
  view.hidden = false;
  const list = $('history-todos');
  if (!at || at.status !== 200) {
    list.replaceChildren(el('li', { class: 'todo' }, `version ${version} is not available`));
    return;
  }
  list.dataset.version = version;
  list.replaceChildren(...todosOf(at.body.document).map(([id, t]) =>
    el('li', { testid: 'history-todo', class: t.done ? 'todo done' : 'todo', 'data-id': id },
      el('span', { class: 'check' }, t.done ? '☑' : '☐'), el('span', { class: 'title' }, String(t.title ?? '')),
      el('span', { class: 'by' }, t.createdBy || ''))));
  view.dataset.version = version;
}

// ---- wiring ----

$('model-name').textContent = model;
$('user-name').textContent = user;
document.title = `${model} · ${user} · Flushout todos`;
$('add-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('new-todo');
  const title = input.value.trim();
  if (!title || !sync.proxy) return;
  addTodo(title);
  input.value = '';
  input.focus();
});
$('flush').addEventListener('click', () => sync.flush());
$('history-slider').addEventListener('input', (ev) => selectVersion(Number(ev.target.value)));
$('history-live').addEventListener('click', () => selectVersion(history.end));
render();
sync.start();
