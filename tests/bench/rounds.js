#!/usr/bin/env node
// tests/bench/rounds.js - run.sh's alternating rounds of a pair of scenarios (BASE-rI
// and TARGET-rI, I = 1, 2, ...): each round's figure, the target's throughput over the
// base's ("ratio") or its round-trip p99 minus the base's ("p99"), and the median round.
// run.sh makes the median round the pair's row; table.js prints the range.
//
// Usage: node rounds.js RESULTS_DIR BASE TARGET ratio|p99   (prints the median's I)
'use strict';

const fs = require('fs');
const path = require('path');

function read(dir, name) {
  const f = path.join(dir, `${name}.json`);
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : undefined;
}

// [{i, value}] of every round with both results.
function rounds(dir, base, target, by) {
  const list = [];
  for (let i = 1; ; i++) {
    const b = read(dir, `${base}-r${i}`);
    const t = read(dir, `${target}-r${i}`);
    if (!b || !t) return list;
    list.push({ i, value: by === 'ratio' ? t.flushes_per_s / b.flushes_per_s : t.latency_ms.p99 - b.latency_ms.p99 });
  }
}

// The median round; of an even number, the worse of the two middle ones.
function medianRound(list, by) {
  const worstFirst = [...list].sort((a, b) => (by === 'ratio' ? a.value - b.value : b.value - a.value));
  return worstFirst[(worstFirst.length - 1) >> 1];
}

module.exports = { rounds, medianRound };

if (require.main === module) {
  const [dir, base, target, by] = process.argv.slice(2);
  const list = rounds(dir, base, target, by);
  if (!list.length) {
    console.error(`rounds.js: no rounds of ${base} and ${target} in ${dir}`);
    process.exit(1);
  }
  console.log(medianRound(list, by).i);
}
