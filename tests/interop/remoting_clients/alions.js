// Drives npm ali-ons 3.12.0 against rocketlite; one scenario per run, results as JSON lines on stdout.
// usage: node alions.js '<json config>'   config: {scenario, nameSrv, topic, group, n, ...}
'use strict';

const path = require('path');
const modules = process.env.ALIONS_MODULES;
const ons = require(path.join(modules, 'ali-ons'));
const { Producer, Consumer, Message } = ons;

const cfg = JSON.parse(process.argv[2]);
const httpclient = {}; // ali-ons wants one even in name-server mode; unused without access keys
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

function deadline(ms, what) {
  return setTimeout(() => { out({ event: 'timeout', what }); process.exit(3); }, ms);
}

async function produce(n, opts = {}) {
  const producer = new Producer({ httpclient, nameSrv: cfg.nameSrv, producerGroup: cfg.group + '_P', logger: quiet });
  await producer.ready();
  const sent = [];
  for (let i = 0; i < n; i++) {
    const msg = new Message(cfg.topic, cfg.tag || 'TagA', `${cfg.prefix || 'm'}-${i}`);
    msg.keys = [ `key-${i}` ];
    if (cfg.sqlProp) msg.properties[cfg.sqlProp] = String(i); // user property for SQL92 filters
    // delay scenario: message 0 by delay level, message 1 by Aliyun start-deliver time
    let delayMs = 0;
    const t = Date.now();
    if (opts.delayLevel && i === 0) { msg.delayTimeLevel = opts.delayLevel; delayMs = [ 0, 1000, 5000, 10000, 30000 ][opts.delayLevel]; }
    if (opts.deliverAfterMs && i === 1) { msg.setStartDeliverTime(t + opts.deliverAfterMs); delayMs = opts.deliverAfterMs; }
    const r = await producer.send(msg);
    sent.push({ body: `${cfg.prefix || 'm'}-${i}`, status: r.sendStatus, msgId: r.msgId, queue: r.messageQueue.queueId, t, delayMs });
  }
  out({ event: 'produced', sent });
  await producer.close();
}

async function consume(n, opts = {}) {
  const consumer = new Consumer({
    httpclient, nameSrv: cfg.nameSrv, consumerGroup: cfg.group, logger: quiet,
    consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET', persistConsumerOffsetInterval: 500,
    rebalanceInterval: 1000,
    ...(cfg.maxReconsumeTimes !== undefined ? { maxReconsumeTimes: cfg.maxReconsumeTimes } : {}),
  });
  consumer.on('error', () => {}); // QUERY_CONSUMER_OFFSET "not found" etc. are noise
  const got = [];
  const attempts = {};
  let resolve;
  const done = new Promise(r => { resolve = r; });
  const expression = cfg.sql ? { expressionType: 'SQL92', subString: cfg.sql } : (cfg.tag || '*');
  consumer.subscribe(cfg.topic, expression, async msg => {
    const body = msg.body.toString();
    attempts[body] = (attempts[body] || 0) + 1;
    if ((opts.failFirst && attempts[body] === 1) || opts.alwaysFail) {
      out({ event: 'fail', body, reconsumeTimes: msg.reconsumeTimes });
      if (opts.alwaysFail) {
        got.push({ body, reconsumeTimes: msg.reconsumeTimes, t: Date.now(), queue: msg.queueId, topic: msg.topic });
        if (got.length >= n) setTimeout(resolve, 300); // let the last send-back go out
      }
      return Consumer.ACTION_RETRY;
    }
    got.push({ body, reconsumeTimes: msg.reconsumeTimes, t: Date.now(), queue: msg.queueId, topic: msg.topic });
    if (got.length >= n) resolve();
  });
  await consumer.ready();
  await done;
  out({ event: 'consumed', got });
  // let the offset persist task run once more so a restart resumes from here
  await new Promise(r => setTimeout(r, 1200));
  await consumer.close();
}

// Print every message as it arrives until the test ends the process (offset reset scenario).
async function stream() {
  const consumer = new Consumer({
    httpclient, nameSrv: cfg.nameSrv, consumerGroup: cfg.group, logger: quiet,
    consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET', persistConsumerOffsetInterval: 500, rebalanceInterval: 1000,
  });
  consumer.on('error', () => {});
  consumer.subscribe(cfg.topic, '*', async msg => {
    out({ event: 'msg', body: msg.body.toString(), queue: msg.queueId });
  });
  await consumer.ready();
  out({ event: 'started' });
  await new Promise(() => {});
}

(async () => {
  const timer = deadline(cfg.timeoutMs || 18000, cfg.scenario);
  switch (cfg.scenario) {
    case 'produce': await produce(cfg.n); break;
    case 'consume': await consume(cfg.n); break;
    case 'retry': await consume(cfg.n, { failFirst: true }); break;
    case 'dlq': await consume(cfg.n, { alwaysFail: true }); break;
    case 'stream': await stream(); break;
    case 'delay': await produce(cfg.n, { delayLevel: cfg.delayLevel, deliverAfterMs: cfg.deliverAfterMs }); break;
    default: throw new Error('unknown scenario ' + cfg.scenario);
  }
  clearTimeout(timer);
  out({ event: 'done' });
  process.exit(0);
})().catch(err => { out({ event: 'error', message: String(err && err.stack || err) }); process.exit(2); });
