#!/usr/bin/env node
// Differential test of time travel: after run.js's random multi-client workloads, a
// snapshot request with "at" for every version of every model. flushout@1.1.1's
// Master replaying the model's applied completions (flushout's own replies) from 0
// to N must give the document `apply` answers for "at": N; a version older than the
// binary can rebuild must be history_unavailable naming the oldest one, which is no
// older than the command count minus --history (codec/PROTOCOL.md, "Time travel").
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { Master } = require('flushout');
const { buildRandomCase, firstDiff, parseArgs, trunc } = require('./run.js');

function usage(msg) {
  if (msg) console.error(`travel.js: ${msg}`);
  console.error(
    'usage: node travel.js [--bin PATH] [--cases N] [--seed S] [--history LIST]\n' +
      '  --bin PATH      flushout-processor binary (default ../../build/bin/flushout-processor)\n' +
      '  --cases N       random cases (default 60); case i uses seed S+i and history\n' +
      '                  LIST[i % len(LIST)], with --snapshot-every 2 when it is below 10\n' +
      '  --seed S        base seed (default: from the clock, printed)\n' +
      '  --history LIST  comma-separated --history settings (default 0,3,1000)'
  );
  if (!msg) process.exit(0);
  process.stdout.write('0 passed, 0 failed\n');
  process.exit(2);
}

const clone = (x) => JSON.parse(JSON.stringify(x));

// Every model's applied completions, in order, from flushout's flushResult replies.
function histories(c) {
  const out = new Map();
  for (const line of c.expected) {
    const r = JSON.parse(line);
    if (r.type !== 'flushResult') continue;
    if (!out.has(r.model)) out.set(r.model, []);
    const h = out.get(r.model);
    if (r.applied.from !== h.length) throw new Error(`${r.model}: applied from ${r.applied.from}, history ${h.length}`);
    h.push(...r.applied.completions);
  }
  return out;
}

// The documents of versions 0..history.length, by flushout's Master replaying the
// applied completions one at a time.
async function versions(history) {
  const master = new Master({ commandCount: 0, document: {} }, { sequentialIds: true });
  const docs = [clone(master.getSnapshot().document)];
  for (let i = 0; i < history.length; i++) {
    const res = await master.apply({ from: i, completions: [clone(history[i])] });
    if (res.errors || res.applied.completions.length !== 1) throw new Error(`replaying command ${i}: ${JSON.stringify(res)}`);
    docs.push(clone(master.getSnapshot().document));
  }
  return docs;
}

// Checks the replies to one model's travel requests (at = 0..count + 1).
function check(model, N, docs, replies) {
  const count = docs.length - 1;
  const window = Math.max(0, count - N);
  let oldest = null;
  for (let at = 0; at <= count + 1; at++) {
    const r = replies[at];
    const where = `${model} at ${at} of ${count}`;
    if (at > count) {
      if (!r.error || r.error.code !== 'bad_range') return `${where}: expected bad_range, got ${trunc(JSON.stringify(r), 300)}`;
      continue;
    }
    if (r.type === 'snapshot') {
      if (oldest === null) oldest = at;
      if (r.snapshot.commandCount !== at) return `${where}: commandCount ${r.snapshot.commandCount}`;
      const d = firstDiff(docs[at], r.snapshot.document, '$.document');
      if (d) return `${where}: ${d}`;
      continue;
    }
    if (!r.error || r.error.code !== 'history_unavailable') return `${where}: ${trunc(JSON.stringify(r), 300)}`;
    if (oldest !== null) return `${where}: unavailable after version ${oldest} was available`;
    const m = /the oldest version available is (\d+)$/.exec(r.error.message);
    if (!m) return `${where}: ${r.error.message}`;
    const named = Number(m[1]);
    if (r.error.oldest !== named) return `${where}: the error's oldest is ${r.error.oldest}, its message says ${named}`;
    if (named <= at || named > window) return `${where}: ${r.error.message} (the window starts at ${window})`;
  }
  if (oldest === null || oldest > window) return `${model}: the oldest version answered is ${oldest}, the window starts at ${window}`;
  return null;
}

function runBinary(bin, N, lines) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flushout-travel-state-'));
  try {
    const args = ['apply', '--state-dir', dir, '--ids', 'sequential', '--history', String(N)];
    if (N < 10) args.push('--snapshot-every', '2');
    const res = spawnSync(bin, args, { input: lines.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 });
    res.args = args;
    return res;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2), usage, { cases: 60 });
  console.log(`flushout time travel: bin=${o.bin}`);
  console.log(`seed=${o.seed} cases=${o.cases} history=${o.history.join(',')}`);
  let passed = 0;
  let failed = 0;
  let versionsChecked = 0;
  let trimmed = 0; // models whose oldest versions were no longer available
  for (let h = 0; h < o.history.length; h++) {
    const N = o.history[h];
    const lines = [];
    const asked = []; // { model, docs, from: index of its first travel reply }
    for (let i = h; i < o.cases; i += o.history.length) {
      const c = await buildRandomCase((o.seed + i) >>> 0, N);
      lines.push(...c.requests);
      for (const [model, history] of histories(c)) {
        const docs = await versions(history);
        asked.push({ model, seed: c.seed, docs, from: lines.length });
        for (let at = 0; at <= history.length + 1; at++) {
          lines.push(JSON.stringify({ type: 'snapshot', model, client: 'traveller', seq: at + 1, at }));
        }
      }
    }
    if (!asked.length) continue;
    const res = runBinary(o.bin, N, lines);
    const out = (res.stdout || '').split('\n').filter((l) => l !== '');
    if (res.status !== 0 || out.length !== lines.length) {
      console.log(`history ${N}: the binary failed (status ${res.status}, ${out.length} lines for ${lines.length})`);
      console.log(trunc(res.stderr || '', 3000));
      failed += asked.length;
      continue;
    }
    for (const a of asked) {
      const replies = out.slice(a.from, a.from + a.docs.length + 1).map((l) => JSON.parse(l));
      const diff = check(a.model, N, a.docs, replies);
      versionsChecked += a.docs.length;
      if (!diff) {
        passed++;
        if (replies[0].type !== 'snapshot') trimmed++; // checked: unavailable below its oldest
        continue;
      }
      failed++;
      console.log(`FAIL seed ${a.seed} history ${N}: ${diff}`);
      console.log(`  reproduce: node travel.js --bin ${o.bin} --seed ${a.seed} --cases 1 --history ${N}`);
    }
    console.log(`history ${N}: ${asked.length} models, ${lines.length} requests`);
  }
  console.log(`${versionsChecked} versions checked, ${trimmed} models answered history_unavailable below their oldest version`);
  // Store history keys hold up to 64 commands and a trim keeps the whole key holding the
  // oldest command kept: a short --history must still leave some models trimmed, or the
  // history_unavailable answers above went unchecked.
  if (trimmed === 0 && o.cases >= 20 && o.history.some((n) => n > 0 && n < 10)) {
    console.log('FAIL no model answered history_unavailable: the trimmed path went untested');
    failed++;
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  console.log('0 passed, 0 failed');
  process.exitCode = 2;
});
