#!/usr/bin/env node
// tests/bench/table.js - prints run.sh's results as one Markdown table, each row with
// its target and whether this run met it.
//
// Usage: node table.js RESULTS_DIR DURATION_S CORES
'use strict';

const fs = require('fs');
const path = require('path');
const { rounds: roundsOf } = require('./rounds');

const [dir, duration, cores] = process.argv.slice(2);
const read = (name) => {
  const f = path.join(dir, `${name}.json`);
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : undefined;
};
const own = (name) => {
  const f = path.join(dir, `${name}.own`);
  const s = fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim() : '';
  return s ? s.split(' ').join(' / ') : '';
};
const n = (x) => Math.round(x).toLocaleString('en-US');
const ms = (x) => x.toFixed(1);
const ratio = (a, b) => `${(a / b).toFixed(2)}x`;

const rows = [];
const verdicts = [];
function row(scenario, r, extra) {
  const lat = r && r.latency_ms;
  rows.push([
    scenario,
    r && r.flushes_per_s !== undefined ? n(r.flushes_per_s) : '',
    lat ? `${ms(lat.p50)} / ${ms(lat.p99)} / ${ms(lat.p999 ?? lat.max)}` : '',
    r && r.cpu_cores !== undefined ? r.cpu_cores.toFixed(2) : '',
    r && r.peak_rss_mb ? n(r.peak_rss_mb) : '',
    ...extra,
  ]);
}
function check(met) {
  verdicts.push(met);
  return met ? 'met' : '**missed**';
}

const ping = read('ping');
row('broker floor: one record produced and consumed (ping)', ping, ['', '', '', '']);

for (const k of [1, 2, 4]) {
  const pt = read(`passthrough-${k}cmd`);
  const pr = read(`processor-${k}cmd`);
  row(`passthrough ceiling, ${k} cmd/flush, 1,000 models`, pt, ['', '', '', '']);
  const r = pr.flushes_per_s / pt.flushes_per_s;
  // run.sh's rounds (NAME-rI), alternating: this pair is the median one.
  const rounds = roundsOf(dir, `passthrough-${k}cmd`, `processor-${k}cmd`, 'ratio').map((x) => x.value);
  const range = rounds.length > 1
    ? ` (median of ${rounds.length} rounds: ${Math.min(...rounds).toFixed(2)}-${Math.max(...rounds).toFixed(2)}x)`
    : '';
  row(`processor, ${k} cmd/flush, 1,000 models`, pr,
    [own(`processor-${k}cmd`), `${r.toFixed(2)}x passthrough${range}`, '>= 0.7x', check(r >= 0.7)]);
}
const p2 = read('processor-2cmd');
const big = read('processor-100k');
row(`processor, 2 cmd/flush, ${n(big.models)} models`, big,
  [own('processor-100k'), `${ratio(big.flushes_per_s, p2.flushes_per_s)} 1,000 models`, '', '']);

const lp = read('latency-passthrough');
const lr = read('latency-processor');
row(`passthrough, open loop at ${n(lp.rate)}/s (half the processor's maximum)`, lp, ['', '', '', '']);
const added = lr.latency_ms.p99 - lp.latency_ms.p99;
const sign = (x) => `${x >= 0 ? '+' : ''}${ms(x)}`;
const latRounds = roundsOf(dir, 'latency-passthrough', 'latency-processor', 'p99').map((x) => x.value);
const latRange = latRounds.length > 1
  ? ` (median of ${latRounds.length} rounds: ${sign(Math.min(...latRounds))} to ${sign(Math.max(...latRounds))} ms)`
  : '';
row(`processor, open loop at ${n(lr.rate)}/s`, lr,
  [own('latency-processor'), `p99 ${sign(added)} ms${latRange}`, 'p99 <= passthrough + 5 ms',
    check(added <= 5)]);

const docs = fs.readdirSync(dir).filter((f) => /^doc-\d+\.json$/.test(f))
  .map((f) => read(f.slice(0, -5))).sort((a, b) => a.doc_bytes - b.doc_bytes);
for (const d of docs) {
  const size = d.doc_bytes >= 1e6 ? `${d.doc_bytes / 1e6} MB` : `${d.doc_bytes / 1e3} KB`;
  const r = d.flushes_per_s / docs[0].flushes_per_s;
  const isBase = d === docs[0];
  row(`processor, ${d.models} models of ${size} (seeded in ${d.seed_s.toFixed(1)} s)`, d,
    [own(`doc-${d.doc_bytes}`), isBase ? '' : `${r.toFixed(2)}x ${docs[0].doc_bytes / 1e3} KB`,
      isBase ? '' : '>= 0.8x', isBase ? '' : check(r >= 0.8)]);
}

const t1 = read('threads-1');
row('processor, --threads 1 (the 2 cmd/flush row has --threads 2)', t1,
  [own('threads-1'), `--threads 2 is ${ratio(p2.flushes_per_s, t1.flushes_per_s)}`, '', '']);
const two = read('instances-2');
row('two processor instances in one group', two,
  ['', `${ratio(two.flushes_per_s, p2.flushes_per_s)} one instance`, '', '']);

const rec = read('recorded');
row(`processor, ${n(rec.sent)} flushes, 3 clients/model (recorded)`, rec, [own('recorded'), '', '', '']);
const js = read('js-master');
if (js) {
  const r = rec.flushes_per_s / js.flushes_per_s;
  rows.push([`flushout@${js.flushout} Master in Node ${js.node}, in memory, same flushes`, n(js.flushes_per_s),
    '', js.best_cpu_s !== undefined ? (js.best_cpu_s / js.best_s).toFixed(2) : '', '',
    '', `processor ${r.toFixed(2)}x`, 'processor > 1x', check(r > 1)]);
}
const pg = read('postgresql');
if (pg) {
  const r = rec.flushes_per_s / pg.flushes_per_s;
  rows.push([`blog's simple backend: PostgreSQL + Node, ${pg.workers} workers (${n(pg.flushes)} flushes, ${n(pg.conflict_retries)} conflict retries)`,
    n(pg.flushes_per_s), '', '', '', '', `processor ${r.toFixed(2)}x`, 'processor > 1x', check(r > 1)]);
}
const rs = read('restore');
if (rs) {
  const rate = rs.records / rs.seconds;
  rows.push([`restore: rebuild --from changes (${n(rs.records)} change records, 8 partitions)`, `${n(rate)} records/s`,
    '', '', '', '', `${ratio(rate, rec.flushes_per_s)} live`, '', '']);
}

const head = ['scenario', 'flushes/s', 'round trip p50 / p99 / p99.9 ms', 'processor cores', 'peak RSS MB',
  "processor's own p50 / p99 ms", 'ratio', 'target', 'result'];
const lines = [head, head.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`);
const rounds = roundsOf(dir, 'passthrough-2cmd', 'processor-2cmd', 'ratio').length;
process.stdout.write(`${lines.join('\n')}\n\n${cores} cores, ${duration} s per throughput run` +
  (rounds > 1 ? ` (${rounds} alternating rounds of the 1, 2 and 4 cmd/flush rows and of the half-load pair)` : '') + '; ' +
  `${verdicts.filter((v) => v).length} of ${verdicts.length} targets met.\n`);
