#!/usr/bin/env node
// tests/bench/count_records.js - prints the number of records in a topic (sum of high
// watermarks minus low watermarks), for the restore benchmark.
'use strict';
const { Kafka, logLevel } = require('kafkajs');
(async () => {
  const kafka = new Kafka({ clientId: 'bench-count', brokers: process.argv[2].split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(process.argv[3]);
  await admin.disconnect();
  console.log(offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0));
})().catch((e) => { console.error(e); process.exit(1); });
