#!/usr/bin/env node
// tests/bench/count_records.js BOOTSTRAP TOPIC [PARTITIONS]: prints the number of
// records in a topic (sum of high watermarks minus low watermarks), or in the listed
// partitions only ("0,3,5"), for the restore and failover benchmarks.
'use strict';
const { Kafka, logLevel } = require('kafkajs');
(async () => {
  const kafka = new Kafka({ clientId: 'bench-count', brokers: process.argv[2].split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(process.argv[3]);
  await admin.disconnect();
  const only = process.argv[4] ? new Set(process.argv[4].split(',').map(Number)) : null;
  console.log(offsets.filter((o) => !only || only.has(o.partition))
    .reduce((n, o) => n + Number(o.high) - Number(o.low), 0));
})().catch((e) => { console.error(e); process.exit(1); });
