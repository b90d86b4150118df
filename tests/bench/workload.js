#!/usr/bin/env node
// tests/bench/workload.js - records the benchmark workload: flush requests from real
// flushout@1.1.1 Proxy clients editing todo lists, as NDJSON.
//
// Each model is a todo list edited by several clients. A client makes 1-4 edits
// (create an item, update it, add a subtask, tick it off, delete), begins a flush,
// and the request goes to the reference Master (js_master.js's, configured as the
// benchmark's); the reply ends the flush, so clients see each other's work through
// syncs. Clients of one model propose sequential IDs, and whenever another client has
// flushed in between, a flush arrives behind the master and its created IDs collide:
// those flushes get partial syncs with mapped paths, as in real use. Everything comes
// from one seeded PRNG, so a seed always gives the same file.
//
// Usage: node workload.js [--models N] [--clients N] [--flushes N] [--seed S]
//                         [--same-client P] [--out FILE]
// Request lines: {"type":"flush","model":M,"client":C,"seq":S,"from":F,"completions":[...]}
'use strict';

const fs = require('fs');
const { Proxy } = require('flushout');
const { Rng } = require('../common/rng.js');
const { applyFlush, newStats, countReply } = require('./js_master.js');

function usage(msg) {
  if (msg) console.error(`workload.js: ${msg}`);
  console.error(
    'usage: node workload.js [--models N] [--clients N] [--flushes N] [--seed S]\n' +
      '                        [--same-client P] [--out FILE]\n' +
      '  --models N       todo lists (default 1000)\n' +
      '  --clients N      clients per model (default 3)\n' +
      '  --flushes N      flush requests in all (default 100000)\n' +
      '  --seed S         PRNG seed (default 1)\n' +
      '  --same-client P  chance that a model\'s next flush comes from the client that\n' +
      '                   flushed last, i.e. is not behind the master (default 0.7)\n' +
      '  --out FILE       where to write the NDJSON (default stdout)'
  );
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv) {
  const o = { models: 1000, clients: 3, flushes: 100000, seed: 1, sameClient: 0.7, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : usage(`missing value for ${a}`));
    const int = () => {
      const s = val();
      if (!/^[0-9]+$/.test(s)) usage(`${a} needs a non-negative integer`);
      return Number(s);
    };
    switch (a) {
      case '--models': o.models = int(); break;
      case '--clients': o.clients = int(); break;
      case '--flushes': o.flushes = int(); break;
      case '--seed': o.seed = int(); break;
      case '--same-client': o.sameClient = Number(val()); break;
      case '--out': o.out = val(); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (o.models < 1 || o.clients < 1) usage('--models and --clients must be at least 1');
  if (!(o.sameClient >= 0 && o.sameClient <= 1)) usage('--same-client must be within 0..1');
  return o;
}

const WORDS = [
  'buy', 'milk', 'call', 'mom', 'fix', 'bike', 'write', 'report', 'book', 'flights', 'pay',
  'rent', 'review', 'pull request', 'water', 'plants', 'plan', 'sprint', 'renew', 'passport',
  'clean', 'garage', 'email', 'Ana', 'order', 'pizza', 'café', 'déjà vu', '日本', 'ünïcode',
];
const TAGS = ['home', 'work', 'urgent', 'later', 'errands', 'health'];

function text(r, lo, hi) {
  const n = r.int(lo, hi);
  const w = [];
  for (let i = 0; i < n; i++) w.push(r.pick(WORDS));
  return w.join(' ');
}

function newItem(r) {
  const item = { title: text(r, 2, 5), done: false, priority: r.int(1, 5) };
  if (r.chance(0.5)) {
    item.tags = [];
    for (let i = r.int(1, 2); i > 0; i--) item.tags.push(r.pick(TAGS));
  }
  if (r.chance(0.3)) item.estimate = r.int(1, 16) / 4; // hours, a float
  if (r.chance(0.2)) item.notes = text(r, 5, 12);
  return item;
}

// One edit on the client's own copy; returns false when there was nothing to edit.
function edit(r, proxy) {
  const doc = proxy.getDocument();
  const ids = doc.items ? Object.keys(doc.items) : [];
  const crowded = ids.length > 25; // lists stay around 10-30 items
  const k = r.int(0, 99);
  let cmd;
  if (ids.length === 0 || k < (crowded ? 15 : 35)) {
    // parentDefault creates "items" the first time, as a client starting from {} does.
    cmd = { action: 'create', path: ['items'], parentDefault: {}, props: newItem(r) };
  } else {
    const id = r.pick(ids);
    const subs = doc.items[id].subtasks ? Object.keys(doc.items[id].subtasks) : [];
    if (k < 55) {
      const props = r.pick([{ done: true }, { title: text(r, 2, 5) }, { priority: r.int(1, 5) },
        { done: r.chance(0.5), priority: r.int(1, 5) }]);
      cmd = { action: 'update', path: ['items', id], props };
    } else if (k < 68) {
      cmd = {
        action: 'create', path: ['items', id, 'subtasks'], parentDefault: {},
        props: { text: text(r, 1, 4), done: false },
      };
    } else if (k < 78 && subs.length > 0) {
      cmd = { action: 'update', path: ['items', id, 'subtasks', r.pick(subs)], props: { done: true } };
    } else if (k < 84 && subs.length > 0) {
      cmd = { action: 'detete', path: ['items', id, 'subtasks', r.pick(subs)] };
    } else if (k < (crowded ? 100 : 92)) {
      cmd = { action: 'detete', path: ['items', id] };
    } else {
      cmd = { action: 'update', path: [], props: { title: text(r, 1, 3), edited: r.int(0, 1e9) } };
    }
  }
  return proxy.apply(cmd).isSuccess;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const r = new Rng(o.seed);
  const out = o.out ? fs.openSync(o.out, 'w') : 1;
  const pad = String(o.models - 1).length;

  const models = [];
  for (let i = 0; i < o.models; i++) {
    const name = `todo-${String(i).padStart(pad, '0')}`;
    const clients = [];
    for (let c = 0; c < o.clients; c++) {
      clients.push({
        name: `${name}/client-${c}`,
        seq: 0,
        proxy: new Proxy({ commandCount: 0, document: {} }, { sequentialIds: true }),
      });
    }
    models.push({ name, clients, last: 0 });
  }

  const masters = new Map(); // the reference: same configuration as js_master.js
  const stats = newStats();
  let buf = [];
  for (let n = 0; n < o.flushes; n++) {
    const m = r.pick(models);
    if (!r.chance(o.sameClient)) m.last = r.int(0, o.clients - 1);
    const client = m.clients[m.last];
    const edits = r.int(1, 4);
    for (let tries = 0, done = 0; done < edits && tries < 3 * edits; tries++) {
      if (edit(r, client.proxy)) done++;
    }
    const batch = client.proxy.beginFlush();
    const line = JSON.stringify({
      type: 'flush', model: m.name, client: client.name, seq: client.seq++,
      from: batch.from, completions: batch.completions,
    });
    buf.push(line);
    if (buf.length >= 1000) {
      fs.writeSync(out, buf.join('\n') + '\n');
      buf = [];
    }
    // Through JSON both ways, as over the wire: the Master must not share objects with
    // the proxy, and sync.latest aliases the Master's live document.
    const reply = JSON.parse(JSON.stringify(await applyFlush(masters, 1000, JSON.parse(line))));
    countReply(stats, reply);
    const res = client.proxy.endFlush(reply.sync);
    if (res.error) throw new Error(`${client.name}: endFlush: ${res.error}`);
  }
  if (buf.length) fs.writeSync(out, buf.join('\n') + '\n');
  if (o.out) fs.closeSync(out);
  console.error(`workload.js: ${o.flushes} flushes, ${o.models} models x ${o.clients} clients, ` +
    `seed ${o.seed}: ${JSON.stringify(stats)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
