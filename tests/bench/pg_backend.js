#!/usr/bin/env node
// tests/bench/pg_backend.js - the blog post's "simple backend", as a baseline.
//
// Each model is one row of a real PostgreSQL table: its JSON snapshot and its command
// count. A flush is applied as the post describes: read the row, build flushout's
// Master from the snapshot, apply, and store the new snapshot with
// `UPDATE ... WHERE command_count = <the count read>`; when another worker got there
// first (no row updated), read and apply again. --workers connections do this
// concurrently, each taking the next client with flushes left, so a client's flushes
// stay in order while different clients of one model race.
//
// The flushes are the ones the load generator sent to the processor (its --record
// file). The Master has no history (the post's backend keeps none), so a client that
// is behind gets the whole snapshot back. synchronous_commit is off on the server (set
// by run.sh): like the processor's RocksDB writes, a commit waits for the write, not
// for the disk.
//
// Usage: node pg_backend.js RECORD.ndjson --host SOCKET_DIR --port P [--workers 8]
//        [--max-seconds 30]
// Prints one JSON object; exits 1 if a command failed or the counts do not add up.
'use strict';

const fs = require('fs');
const { Client } = require('pg');
const { Master } = require('flushout');

function parseArgs(argv) {
  const a = { workers: 8, maxSeconds: 30, host: undefined, port: 5432, file: undefined };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === '--workers') a.workers = Number(argv[++i]);
    else if (v === '--max-seconds') a.maxSeconds = Number(argv[++i]);
    else if (v === '--host') a.host = argv[++i];
    else if (v === '--port') a.port = Number(argv[++i]);
    else a.file = v;
  }
  if (!a.file || !a.host || !(a.workers >= 1)) {
    console.error('usage: node pg_backend.js RECORD.ndjson --host DIR --port P [--workers N] [--max-seconds S]');
    process.exit(2);
  }
  return a;
}

async function applyFlush(db, flush, stats) {
  for (;;) {
    const read = await db.query('SELECT snapshot, command_count FROM models WHERE id = $1', [flush.model]);
    const count = Number(read.rows[0].command_count);
    const master = new Master({ commandCount: count, document: JSON.parse(read.rows[0].snapshot) });
    const res = await master.apply({ from: flush.from, completions: flush.completions });
    if (res.applied.completions.length) {
      const snap = master.getSnapshot();
      const upd = await db.query(
        'UPDATE models SET snapshot = $2, command_count = $3 WHERE id = $1 AND command_count = $4',
        [flush.model, JSON.stringify(snap.document), snap.commandCount, count],
      );
      if (upd.rowCount !== 1) {
        stats.retries++;
        continue;
      }
    }
    stats.commands += res.applied.completions.length;
    if (res.errors) stats.errors += res.errors.length;
    const reply = { type: 'flushResult', model: flush.model, client: flush.client, seq: flush.seq, ...res };
    stats.replyBytes += JSON.stringify(reply).length;
    return;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const byClient = new Map();
  const models = new Set();
  for (const line of fs.readFileSync(args.file, 'utf8').split('\n')) {
    if (!line) continue;
    const f = JSON.parse(line);
    models.add(f.model);
    if (!byClient.has(f.client)) byClient.set(f.client, []);
    byClient.get(f.client).push(f);
  }
  const conn = { host: args.host, port: args.port, user: 'postgres', database: 'postgres' };
  const setup = new Client(conn);
  await setup.connect();
  await setup.query('DROP TABLE IF EXISTS models');
  await setup.query('CREATE TABLE models (id text PRIMARY KEY, snapshot text NOT NULL, command_count bigint NOT NULL)');
  await setup.query("INSERT INTO models SELECT unnest($1::text[]), '{}', 0", [[...models]]);

  // Clients waiting for a worker, each with the index of its next flush.
  const queue = [...byClient.keys()].map((c) => ({ flushes: byClient.get(c), next: 0 }));
  const stats = { flushes: 0, commands: 0, errors: 0, retries: 0, replyBytes: 0 };
  const dbs = [];
  for (let i = 0; i < args.workers; i++) {
    const db = new Client(conn);
    await db.connect();
    dbs.push(db);
  }
  const t0 = process.hrtime.bigint();
  const deadline = Date.now() + args.maxSeconds * 1000;
  await Promise.all(dbs.map(async (db) => {
    while (queue.length && Date.now() < deadline) {
      const c = queue.shift();
      await applyFlush(db, c.flushes[c.next++], stats);
      stats.flushes++;
      if (c.next < c.flushes.length) queue.push(c);
    }
  }));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const total = await setup.query('SELECT sum(command_count) AS n FROM models');
  const stored = Number(total.rows[0].n);
  for (const db of dbs) await db.end();
  await setup.end();
  const ok = stats.errors === 0 && stored === stats.commands;
  process.stdout.write(JSON.stringify({
    impl: 'postgresql', workers: args.workers, flushes: stats.flushes, seconds: secs,
    flushes_per_s: stats.flushes / secs, commands: stats.commands, command_errors: stats.errors,
    conflict_retries: stats.retries, stored_commands: stored, ok,
  }) + '\n');
  if (!ok) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
