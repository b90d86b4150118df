#!/usr/bin/env node
// The demo todo list (deploy/demo) in headless Chromium (Debian's chromium driven by
// puppeteer-core), served by a gateway (--no-auth --static-dir) in front of a processor
// running deploy/interceptors/created_by.lua, as deploy/quickstart.sh runs it. Checks:
//   - two pages as alice and bob add todos at the same time (their proxies propose the
//     same sequential IDs: the master renames one side's), toggle, rename and delete;
//     both lists converge to each other and to the master's snapshot (GET
//     /v1/models/{model}), and the counts on screen are the master's;
//   - bob goes offline (his requests to the gateway blocked; the first flush reaches
//     the gateway but its reply is lost) and keeps editing: the edits stay on his page,
//     flush when he is back, the lost flush's retry is answered as a duplicate, and
//     every todo is in the master once;
//   - the Flush button flushes an edit held back by a long auto-flush delay;
//   - a third page opened later shows the same list;
//   - the history view shows an earlier version as GET ?at=N has it, and who added each
//     todo (createdBy, stamped by the interceptor);
//   - with &token=JWT, through a gateway that checks tokens, the todos are stamped
//     with the token's user.
// A screenshot of alice's and bob's windows side by side goes to --screenshot FILE
// (deploy/demo/screenshot.png, the README's image, is one made so).
//
//   node tests/browser/demo.js --bin build/bin/flushout-processor [--screenshot F] [--chromium PATH]
'use strict';

const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const puppeteer = require('puppeteer-core');
const h = require('../gateway/harness.js');

const { assert, canonical, log } = h;
const top = path.join(__dirname, '..', '..');
const demoDir = path.join(top, 'deploy', 'demo');
const MODEL = 'todo'; // each run has its own broker and processor

function chromiumPath() {
  const candidates = [h.option('--chromium'), process.env.CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium'];
  const found = candidates.find((p) => p && fs.existsSync(p));
  if (!found) throw new Error("no Chromium: install Debian's chromium (deploy/install-deps.sh), or pass --chromium PATH");
  return found;
}

// The demo from its sources, as deploy/quickstart.sh builds it, into our own directory.
function buildDemo(dir) {
  const r = spawnSync(process.execPath, [path.join(demoDir, 'build.js'), dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the demo: ${r.stderr || r.stdout} (run deploy/install-deps.sh first)`);
  return dir;
}

// ---- a page as one user ----

async function openPage(browser, gw, user, { width = 600, height = 900, token = '' } = {}) {
  // One browser context per user: their own connections, as separate browsers would have.
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height });
  page.on('pageerror', (e) => log(`${user}: page error: ${e.message}`));
  // Errors show in the test's log, but not the failed requests of the offline check.
  page.on('console', (m) => m.type() === 'error' && !/ERR_INTERNET_DISCONNECTED/.test(m.text()) && log(`${user}: console: ${m.text()}`));
  await page.goto(`http://127.0.0.1:${gw.port}/?model=${MODEL}&user=${user}${token ? `&token=${token}` : ''}`, { waitUntil: 'load' });
  // Online, and told of every change from now on (the gateway's `subscribed` event).
  await h.waitUntil(`${user}'s page online`, () => page.evaluate(() => {
    const s = window.flushoutDemo.sync;
    return s.connectionState() === 'online' && s.subscribed;
  }), 30000);
  return { user, page, context };
}

// What the page holds and shows.
function pageState(p) {
  return p.page.evaluate(() => {
    const s = window.flushoutDemo.sync;
    const text = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
    return {
      doc: s.proxy.getDocument(),
      local: s.proxy.getCommandCount(),
      master: s.masterCount,
      unflushed: s.unflushedCount(),
      state: s.connectionState(),
      shownLocal: Number(text('local-count')),
      shownMaster: Number(text('master-count')),
      shown: [...document.querySelectorAll('[data-testid="todo"]')].map((li) => ({
        title: li.querySelector('[data-testid="todo-title"]').textContent,
        done: li.querySelector('[data-testid="toggle-todo"]').checked,
      })),
      log: s.log,
    };
  });
}

const itemsOf = (doc) => Object.values(doc.todos || {}).map((t) => ({ title: t.title, done: !!t.done }));
const sortedItems = (items) => [...items].sort((a, b) => (a.title < b.title ? -1 : a.title > b.title ? 1 : Number(a.done) - Number(b.done)));

async function snapshot(gw, at) {
  const r = await h.httpRequest(gw, 'GET', h.modelPath(MODEL, at === undefined ? '' : `?at=${at}`));
  assert.strictEqual(r.status, 200, `snapshot: ${r.text}`);
  return r.json;
}

// Waits until every page is at the master's snapshot: same document, same counts on
// screen, nothing unflushed, the list on screen that of the document. Returns it.
async function converge(gw, pages, what) {
  let last = '';
  try {
    return await h.waitUntil(what, async () => {
      const snap = await snapshot(gw);
      const states = await Promise.all(pages.map(pageState));
      const want = canonical(snap.document);
      const wantShown = canonical(sortedItems(itemsOf(snap.document)));
      last = states.map((s, i) => `${pages[i].user}: local ${s.local} master ${s.master} unflushed ${s.unflushed} ${s.state}`).join('; ') + `; snapshot at ${snap.commandCount}`;
      const ok = states.every((s) => canonical(s.doc) === want && s.local === snap.commandCount && s.master === snap.commandCount &&
        s.unflushed === 0 && s.shownLocal === snap.commandCount && s.shownMaster === snap.commandCount &&
        canonical(sortedItems(s.shown)) === wantShown);
      return ok && snap;
    }, 20000, 100);
  } catch (e) {
    throw new Error(`${e.message} (${last})`);
  }
}

async function addTodo(p, title) {
  await p.page.type('[data-testid="new-todo"]', title);
  await p.page.click('[data-testid="add-todo"]');
}

async function findTodo(p, title) {
  for (const li of await p.page.$$('[data-testid="todo"]')) {
    const t = await li.$eval('[data-testid="todo-title"]', (n) => n.textContent);
    if (t === title) return li;
  }
  throw new Error(`${p.user}: no todo ${JSON.stringify(title)} on the page`);
}

async function toggleTodo(p, title) {
  const li = await findTodo(p, title);
  await (await li.$('[data-testid="toggle-todo"]')).click();
}

async function deleteTodo(p, title) {
  const li = await findTodo(p, title);
  await (await li.$('[data-testid="delete-todo"]')).click();
}

async function renameTodo(p, title, to) {
  const li = await findTodo(p, title);
  await (await li.$('[data-testid="rename-todo"]')).click();
  const input = await p.page.waitForSelector('[data-testid="rename-input"]');
  await input.click({ count: 3 });
  await input.type(to);
  await input.press('Enter');
}

// Shown at once, before any flush: the page's list has the title.
async function assertShown(p, title, done) {
  const s = await pageState(p);
  const item = s.shown.find((i) => i.title === title);
  assert.ok(item, `${p.user}: ${JSON.stringify(title)} is on the page at once: shown ${JSON.stringify(s.shown)}, proxy ${JSON.stringify(s.doc)}, log ${JSON.stringify(s.log)}`);
  if (done !== undefined) assert.strictEqual(item.done, done, `${p.user}: ${JSON.stringify(title)} done`);
}

function titlesOnce(doc, titles) {
  const all = Object.values(doc.todos).map((t) => t.title);
  for (const title of titles) assert.strictEqual(all.filter((t) => t === title).length, 1, `${JSON.stringify(title)} is in the master once: ${JSON.stringify(all)}`);
}

const byTitle = (doc, title) => Object.values(doc.todos).find((t) => t.title === title);

// ---- offline: bob's requests to the gateway are blocked ----

// While blocked, every request for /v1/ fails as a lost network would make it fail,
// except the first flush, which is sent on to the gateway (applied there) and only its
// reply lost: the page cannot tell the two apart and must retry it with the same seq.
// The browser is told it is offline too (navigator.onLine, the `online` event when it
// is back). Neither closes the event stream already open, so bob still hears alice's
// changes, and his pulls fail like his flushes.
async function goOffline(p, gw) {
  const lost = { seq: null, reply: null };
  p.blocked = true;
  p.onRequest = async (req) => {
    if (!p.blocked || !req.url().includes('/v1/')) return req.continue();
    if (req.method() === 'POST' && req.url().endsWith('/flush') && lost.seq === null) {
      const body = JSON.parse(req.postData());
      lost.seq = body.seq;
      const r = await h.httpRequest(gw, 'POST', h.modelPath(MODEL, '/flush'), { body });
      lost.reply = r.json;
      log(`${p.user}: flush seq ${body.seq} (${body.completions.length} commands) reached the gateway (${r.status}); its reply is lost`);
    }
    return req.abort('internetdisconnected');
  };
  await p.page.setRequestInterception(true);
  p.page.on('request', p.onRequest);
  await p.page.setOfflineMode(true);
  return lost;
}

async function goOnline(p) {
  p.blocked = false;
  await p.page.setOfflineMode(false);
}

// ---- the screenshot: two windows side by side ----

async function screenshotSideBySide(browser, pages, file) {
  const shots = [];
  for (const p of pages) shots.push({ user: p.user, url: p.page.url().replace(/^http:\/\/127\.0\.0\.1:\d+/, 'localhost:8080'), png: await p.page.screenshot({ encoding: 'base64' }) });
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 960 });
  const windows = shots.map((s) => `
    <div class="win"><div class="bar"><i></i><i></i><i></i><span>${s.url}</span></div>
    <img src="data:image/png;base64,${s.png}"></div>`).join('');
  await page.setContent(`<!doctype html><style>
    body { margin: 0; background: #c9d1dc; display: flex; gap: 24px; padding: 24px; justify-content: center;
           font: 13px system-ui, "DejaVu Sans", sans-serif; }
    .win { border-radius: 10px; overflow: hidden; box-shadow: 0 6px 24px rgba(0,0,0,.25); background: #fff; }
    .bar { height: 34px; display: flex; align-items: center; gap: 7px; padding: 0 12px; background: #e8ebef; border-bottom: 1px solid #d3d8de; }
    .bar i { width: 11px; height: 11px; border-radius: 50%; background: #c4c9d0; display: block; }
    .bar span { margin-left: 12px; background: #fff; border-radius: 6px; padding: 3px 10px; color: #444; flex: 1; }
    img { display: block; width: 600px; }
  </style>${windows}`, { waitUntil: 'load' });
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  await page.screenshot({ path: file, clip: { x: 0, y: 0, width: 1296, height: 24 + 34 + 900 + 24 } });
  await context.close();
  log(`screenshot of ${shots.map((s) => s.user).join(' and ')} in ${file}`);
}

// ---- the run ----

async function main(run) {
  const executablePath = chromiumPath();
  const dist = buildDemo(path.join(run.tmp, 'demo'));
  const checks = new h.Checks();
  // Each check builds on the list the one before left: after a failure, the rest skip.
  const step = async (name, fn) => {
    if (checks.results.some((r) => !r.ok)) checks.skip(name, 'an earlier check failed');
    else await checks.check(name, fn);
  };
  const bootstrap = await run.startBroker(2);
  const initial = path.join(run.tmp, 'initial.json');
  fs.copyFileSync(path.join(demoDir, 'initial-document.json'), initial);
  run.startProcessor('processor', bootstrap, ['--interceptor', path.join(top, 'deploy', 'interceptors', 'created_by.lua'),
    '--initial-document', initial]);
  const gw = await run.startGateway('gateway', bootstrap, ['--no-auth'], ['--static-dir', dist]);
  // A second gateway that checks tokens, for the page's &token= (both share the replies).
  const keys = h.makeKeys(run.tmp);
  const gwAuth = await run.startGateway('gateway-jwt', bootstrap, ['--jwt-key-file', keys.files.HS256, '--jwt-alg', 'HS256'],
    ['--static-dir', dist]);
  await h.waitUntil('the processor answering', async () => (await h.httpRequest(gw, 'GET', h.modelPath('warm-up'), { timeoutMs: 10000 })).status === 200, 60000, 200);

  const index = await h.httpRequest(gw, 'GET', '/');
  assert.strictEqual(index.status, 200, 'the gateway serves the demo at /');
  assert.match(index.text, /data-testid="new-todo"/);

  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--font-render-hinting=none'],
  });
  run.children.push(browser.process());
  try {
    const alice = await openPage(browser, gw, 'alice');
    const bob = await openPage(browser, gw, 'bob');
    let snap;

    await step('two users add at once, their created IDs collide, both lists converge to the master', async () => {
      await Promise.all([
        (async () => {
          await addTodo(alice, 'Buy coffee');
          await addTodo(alice, 'Call the bakery');
        })(),
        (async () => {
          await addTodo(bob, 'Bake cookies');
          await addTodo(bob, 'Fix the bike');
        })(),
      ]);
      await assertShown(alice, 'Call the bakery', false);
      await assertShown(bob, 'Fix the bike', false);
      snap = await converge(gw, [alice, bob], 'alice and bob converged after their adds');
      titlesOnce(snap.document, ['Buy coffee', 'Call the bakery', 'Bake cookies', 'Fix the bike']);
      assert.strictEqual(Object.keys(snap.document.todos).length, 4);
      assert.strictEqual(byTitle(snap.document, 'Buy coffee').createdBy, 'alice', 'the interceptor stamped the creator');
      assert.strictEqual(byTitle(snap.document, 'Bake cookies').createdBy, 'bob');
      assert.strictEqual(typeof byTitle(snap.document, 'Bake cookies').createdAt, 'number');
      // Both proxies proposed IDs "1" and "2" (sequential IDs from version 0), so one
      // side's flush came back with its creates renamed.
      const logs = [...(await pageState(alice)).log, ...(await pageState(bob)).log];
      const renamed = logs.filter((e) => e.kind === 'flushResult' && e.mappedPaths && Object.keys(e.mappedPaths).length > 0);
      assert.ok(renamed.length > 0, `a flush had its created IDs renamed: ${JSON.stringify(logs)}`);
    });

    await step('toggle, rename and delete at once on both pages converge', async () => {
      await Promise.all([
        (async () => {
          await toggleTodo(alice, 'Bake cookies');
          await renameTodo(alice, 'Fix the bike', 'Fix the bike tyre');
        })(),
        (async () => {
          await deleteTodo(bob, 'Call the bakery');
          await toggleTodo(bob, 'Buy coffee');
        })(),
      ]);
      await assertShown(alice, 'Bake cookies', true);
      await assertShown(alice, 'Fix the bike tyre', false);
      await assertShown(bob, 'Buy coffee', true);
      assert.ok(!(await pageState(bob)).shown.some((i) => i.title === 'Call the bakery'), 'bob: the deleted todo is gone at once');
      snap = await converge(gw, [alice, bob], 'alice and bob converged after toggles, a rename and a delete');
      assert.deepStrictEqual(sortedItems(itemsOf(snap.document)), sortedItems([
        { title: 'Buy coffee', done: true }, { title: 'Bake cookies', done: true }, { title: 'Fix the bike tyre', done: false }]));
    });

    await step('offline edits stay on the page, flush when back, the lost flush is a duplicate, applied once', async () => {
      const lost = await goOffline(bob, gw);
      await addTodo(bob, 'Water the plants');
      await h.waitUntil('bob offline', async () => (await pageState(bob)).state === 'offline', 10000);
      await addTodo(bob, 'Pump the tyres');
      await toggleTodo(bob, 'Fix the bike tyre');
      await addTodo(alice, 'Pay the rent');
      await assertShown(bob, 'Pump the tyres', false);
      await assertShown(bob, 'Fix the bike tyre', true);
      await h.sleep(1500); // bob retries meanwhile, and fails
      const offline = await pageState(bob);
      assert.strictEqual(offline.state, 'offline');
      assert.ok(offline.unflushed >= 3, `bob has his 3 edits unflushed: ${offline.unflushed}`);
      assert.ok(lost.seq !== null && lost.reply && lost.reply.type === 'flushResult', `the first offline flush reached the master: ${JSON.stringify(lost.reply)}`);
      assert.ok(offline.log.some((e) => e.kind === 'unreachable' && e.seq === lost.seq), 'bob saw the flush fail');
      await goOnline(bob);
      snap = await converge(gw, [alice, bob], 'alice and bob converged after bob came back');
      titlesOnce(snap.document, ['Water the plants', 'Pump the tyres', 'Pay the rent', 'Buy coffee', 'Bake cookies', 'Fix the bike tyre']);
      assert.strictEqual(Object.keys(snap.document.todos).length, 6);
      assert.strictEqual(byTitle(snap.document, 'Fix the bike tyre').done, true);
      const retried = (await pageState(bob)).log.filter((e) => e.kind === 'flushResult' && e.seq === lost.seq);
      assert.strictEqual(retried.length, 1, `one answer reached bob for seq ${lost.seq}`);
      assert.strictEqual(retried[0].duplicate, true, `the retry of seq ${lost.seq} was answered as a duplicate`);
      // The master's history holds the lost flush's create once.
      const hist = await h.httpRequest(gw, 'GET', h.modelPath(MODEL, '/history?from=0'));
      assert.strictEqual(hist.status, 200, hist.text);
      const creates = hist.json.completions.filter((c) => c.command.action === 'create' && c.command.props.title === 'Water the plants');
      assert.strictEqual(creates.length, 1, 'the lost flush was applied once');
    });

    await step('the Flush button sends an edit held back', async () => {
      await bob.page.evaluate(() => (window.flushoutDemo.sync.flushDelayMs = 3600 * 1000));
      await addTodo(bob, 'Take out the bins');
      await h.sleep(700);
      const held = await pageState(bob);
      assert.strictEqual(held.unflushed, 1, 'bob: one command waits for a flush');
      assert.strictEqual(held.local, held.master + 1, 'bob: the local count is one ahead of the master');
      assert.strictEqual(held.shownLocal, held.local);
      assert.ok(!byTitle((await snapshot(gw)).document, 'Take out the bins'), 'not flushed yet');
      await screenshotSideBySide(browser, [alice, bob], h.option('--screenshot', path.join(run.tmp, 'screenshot.png')));
      await bob.page.click('[data-testid="flush"]');
      snap = await converge(gw, [alice, bob], 'converged after the Flush button');
      titlesOnce(snap.document, ['Take out the bins']);
    });

    let carol;
    await step('a third page opened later shows the same list', async () => {
      carol = await openPage(browser, gw, 'carol');
      snap = await converge(gw, [alice, bob, carol], 'carol at the master');
      assert.strictEqual((await pageState(carol)).shown.length, 7);
    });

    await step('the history view shows an earlier version as GET ?at=N, and who added each todo', async () => {
      // The version where "Call the bakery" (deleted since) was still on the list.
      const hist = (await h.httpRequest(gw, 'GET', h.modelPath(MODEL, '/history?from=0'))).json.completions;
      const deleted = hist.findIndex((c) => c.command.action === 'detete');
      assert.ok(deleted > 0, 'the history has the delete');
      const version = deleted; // the version before the delete: commands 1..deleted
      const past = await snapshot(gw, version);
      assert.ok(byTitle(past.document, 'Call the bakery'), 'GET ?at=N has the deleted todo');
      await h.waitUntil('carol\'s history loaded', () => carol.page.evaluate((n) => window.flushoutDemo.history.end === n, snap.commandCount), 10000);
      const entry = await carol.page.waitForSelector(`[data-testid="history-entry"][data-version="${version}"]`);
      await entry.click();
      await carol.page.waitForSelector(`[data-testid="history-todos"][data-version="${version}"]`);
      const shownPast = await carol.page.$$eval('[data-testid="history-todo"]', (lis) => lis.map((li) => ({
        title: li.querySelector('.title').textContent, done: li.classList.contains('done'), by: li.querySelector('.by').textContent })));
      assert.deepStrictEqual(sortedItems(shownPast.map(({ title, done }) => ({ title, done }))), sortedItems(itemsOf(past.document)),
        'the page shows version N as the master has it');
      for (const item of shownPast) assert.strictEqual(item.by, byTitle(past.document, item.title).createdBy, `who added ${item.title}`);
      assert.strictEqual(await carol.page.$eval('[data-testid="history-slider"]', (s) => Number(s.value)), version, 'the slider is at N');
      // The change list names who added each todo.
      const lines = await carol.page.$$eval('[data-testid="history-entry"]', (lis) => lis.map((li) => li.textContent));
      assert.ok(lines.some((l) => l.includes('added "Buy coffee"') && l.includes('alice')), `alice added Buy coffee: ${lines.join(' | ')}`);
      assert.ok(lines.some((l) => l.includes('added "Bake cookies"') && l.includes('bob')), 'bob added Bake cookies');
      // The slider moves to another version too.
      await carol.page.$eval('[data-testid="history-slider"]', (s) => {
        s.value = 2;
        s.dispatchEvent(new Event('input'));
      });
      await carol.page.waitForSelector('[data-testid="history-todos"][data-version="2"]');
      const two = await carol.page.$$eval('[data-testid="history-todo"]', (lis) => lis.map((li) => li.querySelector('.title').textContent));
      assert.deepStrictEqual(two.sort(), Object.values((await snapshot(gw, 2)).document.todos).map((t) => t.title).sort());
      // The live list did not move.
      assert.strictEqual((await pageState(carol)).shown.length, 7);
    });

    await step('with a token, the page edits as the token\'s user, whatever its URL says', async () => {
      const dave = await openPage(browser, gwAuth, 'mallory', { token: keys.token('HS256', 'dave') });
      await addTodo(dave, 'Signed in');
      snap = await converge(gw, [alice, dave], 'the page with a token at the master');
      assert.strictEqual(byTitle(snap.document, 'Signed in').createdBy, 'dave', 'the gateway took the user from the token');
    });
  } finally {
    await browser.close().catch(() => {});
  }
  checks.finish('browser demo');
}

h.runMain('browser-demo', main);
