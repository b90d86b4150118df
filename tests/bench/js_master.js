#!/usr/bin/env node
// tests/bench/js_master.js - times the flushout@1.1.1 JS Master on a recorded workload.
//
// The baseline for bench_master.c: per request line, JSON.parse -> Master.apply ->
// JSON.stringify of the reply, the same decode -> apply -> encode step the C handler
// runs per record. One Master per model (sequentialIds, as `apply --ids sequential`)
// with an in-memory history of the last 1000 commands (as `--history 1000`).
//
// Usage: node [--expose-gc] js_master.js WORKLOAD.ndjson [--runs N] [--history N]
// Prints one JSON object: flushes/s of the best run and heap bytes per model.
'use strict';

const fs = require('fs');
const { Master } = require('flushout');

// The last `retain` applied completions of one model, as state/history_mem.c keeps
// them: range(from, to) answers only when all of [from, to) is still kept. The array
// is trimmed in batches so that appending stays O(1) amortised.
class MemHistory {
  constructor(retain) {
    this.retain = retain;
    this.start = 0; // command count of items[0]
    this.items = [];
  }

  get end() { return this.start + this.items.length; }

  append(from, completions) {
    if (from !== this.end) throw new Error(`history: append at ${from}, history ends at ${this.end}`);
    for (const c of completions) this.items.push(c);
    if (this.items.length > 2 * this.retain) {
      const drop = this.items.length - this.retain;
      this.items.splice(0, drop);
      this.start += drop;
    }
  }

  range(from, to) {
    const base = Math.max(this.start, this.end - this.retain);
    if (from > to || from < base || to > this.end) return undefined;
    return this.items.slice(from - this.start, to - this.start);
  }
}

// A model as the C handler holds one: a Master from {} at count 0, and its history.
function newModel(retain) {
  const history = new MemHistory(retain);
  const master = new Master(
    { commandCount: 0, document: {} },
    { sequentialIds: true, historyProvider: async (from, to) => history.range(from, to) }
  );
  return { master, history };
}

// Applies one parsed flush request; returns the reply object (flushResult shape).
async function applyFlush(models, retain, r) {
  let m = models.get(r.model);
  if (!m) {
    m = newModel(retain);
    models.set(r.model, m);
  }
  const res = await m.master.apply({ from: r.from, completions: r.completions });
  m.history.append(res.applied.from, res.applied.completions);
  return {
    type: 'flushResult', model: r.model, client: r.client, seq: r.seq,
    applied: res.applied, sync: res.sync, errors: res.errors,
  };
}

// What the replies said, to compare with bench_master.c's count of the same things.
function newStats() {
  return { flushes: 0, commands_applied: 0, command_errors: 0, syncs_partial: 0, syncs_full: 0, mapped_paths: 0 };
}

function countReply(stats, reply) {
  stats.flushes++;
  stats.commands_applied += reply.applied.completions.length;
  if (reply.errors) stats.command_errors += reply.errors.length;
  if (reply.sync) {
    if (reply.sync.isPartial) stats.syncs_partial++;
    else stats.syncs_full++;
    if (reply.sync.mappedPaths) stats.mapped_paths += Object.keys(reply.sync.mappedPaths).length;
  }
}

function readLines(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
}

function gc() {
  if (global.gc) {
    global.gc();
    global.gc();
  }
}

async function main() {
  const args = process.argv.slice(2);
  let file;
  let runs = 3;
  let retain = 1000;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--runs') runs = Number(args[++i]);
    else if (args[i] === '--history') retain = Number(args[++i]);
    else file = args[i];
  }
  if (!file || !(runs >= 1) || !(retain >= 1)) {
    console.error('usage: node --expose-gc js_master.js WORKLOAD.ndjson [--runs N] [--history N]');
    process.exit(2);
  }
  const lines = readLines(file);

  const times = [];
  const cpu = []; // process CPU seconds per run: V8's GC also uses other threads
  let heapPerModel;
  let stats;
  let models;
  let sink = 0; // keeps the replies' encoding from being optimised away
  for (let run = 0; run < runs; run++) {
    models = null;
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    models = new Map();
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (const line of lines) {
      const reply = await applyFlush(models, retain, JSON.parse(line));
      sink += JSON.stringify(reply).length;
    }
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e9);
    const c1 = process.cpuUsage(c0);
    cpu.push((c1.user + c1.system) / 1e6);
    if (run === 0) {
      // Memory and the reply counts come from the first run; its models are still live.
      gc();
      heapPerModel = (process.memoryUsage().heapUsed - heapBefore) / models.size;
      stats = newStats();
      const again = new Map();
      for (const line of lines) countReply(stats, await applyFlush(again, retain, JSON.parse(line)));
    }
  }

  const best = Math.min(...times);
  const docCount = [...models.values()].reduce((n, m) => n + m.master.getSnapshot().commandCount, 0);
  process.stdout.write(JSON.stringify({
    impl: 'js',
    flushout: require('flushout/package.json').version,
    node: process.version,
    flushes: lines.length,
    models: models.size,
    runs_s: times,
    best_s: best,
    best_cpu_s: cpu[times.indexOf(best)],
    flushes_per_s: lines.length / best,
    heap_bytes_per_model: Math.round(heapPerModel),
    gc_exposed: !!global.gc,
    final_command_count: docCount,
    reply_bytes: sink / runs,
    stats,
  }) + '\n');
}

module.exports = { MemHistory, newModel, applyFlush, newStats, countReply };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
