#!/usr/bin/env node
// Differential test of interceptors: each interceptor in interceptors/ is written
// twice, NAME.lua for `flushout-processor apply --interceptor` and NAME.js for
// flushout@1.1.1's Master; run.js's random multi-client workloads (with a context
// and a timestamp on every flush) must get identical replies. See README.md.
'use strict';

const fs = require('fs');
const path = require('path');
const { Rng } = require('../common/rng.js');
const { buildRandomCase, buildEdgeCase, EDGE, parseArgs, runAndCompare, trunc } = require('./run.js');

const DIR = path.join(__dirname, 'interceptors');
const NAMES = fs.readdirSync(DIR).filter((f) => f.endsWith('.lua')).map((f) => f.slice(0, -4)).sort();

function usage(msg) {
  if (msg) console.error(`interceptors.js: ${msg}`);
  console.error(
    'usage: node interceptors.js [--bin PATH] [--cases N] [--seed S] [--history LIST]\n' +
      '                           [--only NAME] [--no-edge] [--max-report K]\n' +
      '  --bin PATH      flushout-processor binary (default ../../build/bin/flushout-processor)\n' +
      '  --cases N       random cases (default 480); case i uses seed S+i, interceptor\n' +
      '                  NAMES[i % len] and history LIST[(i / len(NAMES)) % len(LIST)]\n' +
      '  --seed S        base seed (default: from the clock, printed)\n' +
      '  --history LIST  comma-separated --history settings (default 0,3,1000)\n' +
      `  --only NAME     one interceptor (${NAMES.join(', ')})\n` +
      "  --no-edge       skip run.js's hand-written edge cases (run once per interceptor\n" +
      '                  and history setting)\n' +
      '  --max-report K  print full details for the first K failing cases (default 5)'
  );
  if (!msg) process.exit(0);
  process.stdout.write('0 passed, 0 failed\n');
  process.exit(2);
}

// ---------------------------------------------------------------------------
// What each case exercised, counted on the JavaScript side: a run that stops
// covering one of the outcomes the issue asks for fails (see COVERAGE).

const tally = {};
const bump = (k) => { tally[k] = (tally[k] || 0) + 1; };

// The JavaScript interceptor, counting its outcomes. flushout hands the
// interceptor a new command object when it remapped the path, so a command that
// is not one of the request's own was remapped.
function counted(name, intercept) {
  return (document, command, context, meta, request) => {
    const out = intercept(document, command, context, meta);
    const action = command.action === 'detete' ? 'delete' : command.action;
    // flushout applies newProps on creates and updates even beside a rejection.
    const kind = out === undefined ? 'pass' : out.newProps !== undefined && action !== 'delete' ? 'newProps' : 'rejection';
    bump(`${action} ${kind}`);
    if (!request.completions.some((c) => c.command === command)) bump(`remapped path ${kind}`);
    // Where flushout would fail the command with a missing or non-string
    // errorMessage, the processor differs by design (INTERCEPTORS.md): never compared.
    const comparable = out === undefined || (out.newProps !== undefined && action !== 'delete') || typeof out.rejection === 'string';
    if (!comparable) {
      throw new Error(`the ${name} interceptor returned ${JSON.stringify(out)} for a ${action}: INTERCEPTORS.md documents another outcome than flushout's`);
    }
    return out;
  };
}

const COVERAGE = [
  'create rejection', 'create newProps', 'update rejection', 'update newProps',
  'delete rejection', 'delete pass', 'remapped path pass', 'remapped path rejection', 'remapped path newProps',
];

// ---------------------------------------------------------------------------
// Flush requests get a context (sometimes none) and a timestamp (sometimes none:
// meta.timestamp is then nil / undefined), from their own generator so the
// workload's sequence stays run.js's.

const USERS = ['alice', 'bob', 'carol', 'zoë', '名前'];
const ROLES = ['admin', 'user', 'guest'];
const GROUPS = [[], ['readers'], ['editors'], ['readers', 'editors', 'ünïcode']];

function flushDecorator(seed) {
  const r = new Rng((seed ^ 0x5bd1e995) >>> 0);
  let clock = 1700000000000 + r.int(0, 1e6);
  return (req) => {
    if (r.chance(0.9)) {
      req.context = {};
      if (r.chance(0.9)) req.context.user = r.pick(USERS);
      if (r.chance(0.7)) req.context.role = r.pick(ROLES);
      if (r.chance(0.3)) req.context.groups = r.pick(GROUPS);
      if (r.chance(0.3)) req.context.limits = { perUser: r.int(0, 4), note: 'from the context' };
    }
    clock += r.int(0, 5000);
    if (r.chance(0.95)) req.timestamp = clock;
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2), usage, { cases: 480, names: NAMES }, (a, val, opts) => {
    if (a !== '--only') return false;
    const n = val();
    if (!NAMES.includes(n)) usage(`no interceptor ${n}`);
    opts.names = [n];
    return true;
  });
  const t0 = Date.now();
  console.log(`flushout interceptor differential test: bin=${o.bin}`);
  console.log(`seed=${o.seed} cases=${o.cases} history=${o.history.join(',')} interceptors=${o.names.join(',')}`);

  const groups = new Map(); // "name history" -> the seeds of its random cases
  for (const N of o.history) for (const name of o.names) groups.set(`${name} ${N}`, { name, N, seeds: [] });
  for (let i = 0; i < o.cases; i++) {
    const name = o.names[i % o.names.length];
    const N = o.history[Math.floor(i / o.names.length) % o.history.length];
    groups.get(`${name} ${N}`).seeds.push((o.seed + i) >>> 0);
  }

  let passed = 0;
  let failed = 0;
  let reported = 0;
  let binaryTrouble = false;
  const failures = [];
  for (const { name, N, seeds } of groups.values()) {
    if (seeds.length === 0 && !o.edge) continue;
    const tr = Date.now();
    const intercept = counted(name, require(path.join(DIR, `${name}.js`)).intercept);
    const cases = [];
    for (const seed of seeds) {
      const c = await buildRandomCase(seed, N, {
        reference: { intercept },
        decorateFlush: flushDecorator(seed),
      });
      c.fileLabel = `interceptor-${name}-seed-${seed}`;
      cases.push(c);
    }
    if (o.edge) {
      for (const [edge, fn] of Object.entries(EDGE)) {
        const c = await buildEdgeCase(edge, fn, N, { reference: { intercept }, decorateFlush: flushDecorator(0) });
        c.fileLabel = `interceptor-${name}-edge-${edge}`;
        cases.push(c);
      }
    }
    const g = runAndCompare(o, N, cases, {
      label: `interceptor ${name} history ${N}`,
      binArgs: ['--interceptor', path.join(DIR, `${name}.lua`)],
      refMs: Date.now() - tr,
      repro: (c) => (c.edge
        ? `node interceptors.js --bin ${o.bin} --cases 0 --history ${N} --only ${name}`
        : `node interceptors.js --bin ${o.bin} --seed ${c.seed} --cases 1 --history ${N} --only ${name} --no-edge`),
    }, reported);
    passed += g.passed;
    failed += g.failed;
    reported = g.reported;
    binaryTrouble = binaryTrouble || g.binaryTrouble;
    failures.push(...g.failures);
  }

  console.log(`outcomes (JavaScript side): ${JSON.stringify(tally)}`);
  const missing = o.names.length === NAMES.length && o.cases >= 100 ? COVERAGE.filter((k) => !tally[k]) : [];
  if (missing.length) console.log(`COVERAGE: the workload never produced ${missing.join(', ')}`);
  if (failures.length) {
    console.log(`\nfailing cases (${failures.length}):`);
    for (const f of failures.slice(0, 50)) console.log(`  ${trunc(f, 300)}`);
    if (failures.length > 50) console.log(`  ... and ${failures.length - 50} more`);
  }
  const total = passed + failed;
  if (total === 0) console.log('no cases ran');
  console.log(`time ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 && total > 0 && !binaryTrouble && missing.length === 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  console.log('0 passed, 0 failed');
  process.exitCode = 2;
});
