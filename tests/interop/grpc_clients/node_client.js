// Scenarios for the official npm rocketmq-client-nodejs 1.0.8 (run with NODE_PATH at its node_modules).
//
//   node node_client.js <scenario> <endpoint> <topic> <group> [extra...]
//
// Prints one JSON object per line ({"event": ...}); exits 0 when the scenario's own checks pass.
// Written for rocketlite's interop tests.
'use strict';

const { Producer, SimpleConsumer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

const COMMIT = 1;
const ROLLBACK = 2;
const sslEnabled = process.env.RL_GRPC_TLS === '1';  // trust via GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
const silent = { info() {}, warn() {}, error() {}, debug() {}, trace() {} };

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

function assert(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function startProducer(endpoints, topic, checker) {
  const p = new Producer({ endpoints, namespace: '', topics: [topic], checker, logger: silent, sslEnabled });
  await p.startup();
  return p;
}

async function startSimple(endpoints, topic, group, awaitDuration = 2000) {
  const c = new SimpleConsumer({
    endpoints, namespace: '', consumerGroup: group, subscriptions: new Map([[topic, '*']]), awaitDuration,
    logger: silent, sslEnabled,
  });
  await c.startup();
  return c;
}

async function receiveUntil(c, n, timeoutMs, invisibleMs = 15000, ack = true) {
  const got = [];
  const end = Date.now() + timeoutMs;
  while (got.length < n && Date.now() < end) {
    for (const m of await c.receive(32, invisibleMs)) {
      got.push(m);
      if (ack) await c.ack(m);
    }
  }
  return got;
}

async function waitFor(pred, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(50);
  }
  return pred();
}

const scenarios = {
  async simple(endpoints, topic, group, count = '5') {
    count = Number(count);
    const p = await startProducer(endpoints, topic);
    const ids = [];
    for (let i = 0; i < count; i++) {
      const r = await p.send({
        topic, tag: 't', keys: ['k' + i], body: Buffer.from('hello-' + i), properties: new Map([['n', String(i)]]),
      });
      ids.push(r.messageId);
    }
    out({ event: 'sent', ids });
    const c = await startSimple(endpoints, topic, group);
    const got = await receiveUntil(c, count, 15000);
    out({
      event: 'received', ids: got.map(m => m.messageId), bodies: got.map(m => m.body.toString()),
      corrupted: got.filter(m => m.corrupted).length, props: got.map(m => Object.fromEntries(m.properties)),
    });
    await c.shutdown();
    await p.shutdown();
    assert(JSON.stringify([...ids].sort()) === JSON.stringify(got.map(m => m.messageId).sort()), 'all received');
  },

  async push(endpoints, topic, group, count = '5') {
    count = Number(count);
    const p = await startProducer(endpoints, topic);
    const ids = [];
    for (let i = 0; i < count; i++) ids.push((await p.send({ topic, body: Buffer.from('push-' + i) })).messageId);
    const got = [];
    const c = new PushConsumer({
      endpoints, namespace: '', consumerGroup: group, subscriptions: new Map([[topic, '*']]), logger: silent,
      messageListener: { async consume(m) { got.push([m.messageId, m.body.toString()]); return ConsumeResult.SUCCESS; } },
    });
    await c.startup();
    await waitFor(() => new Set(got.map(g => g[0])).size >= count, 15000);
    out({ event: 'received', ids: got.map(g => g[0]), bodies: got.map(g => g[1]) });
    // shutdown waits for in-flight long polls; the scenario is done, so leave without it
    await p.shutdown();
    assert(ids.every(id => got.some(g => g[0] === id)), 'all pushed');
  },

  async fifo(endpoints, topic, group, perGroup = '5') {
    perGroup = Number(perGroup);
    const groups = ['ga', 'gb', 'gc'];
    const p = await startProducer(endpoints, topic);
    for (let i = 0; i < perGroup; i++) {
      for (const g of groups) await p.send({ topic, messageGroup: g, body: Buffer.from(g + '-' + i) });
    }
    const c = await startSimple(endpoints, topic, group);
    const order = Object.fromEntries(groups.map(g => [g, []]));
    let heldBack = true;
    const end = Date.now() + 15000;
    let total = 0;
    while (total < perGroup * groups.length && Date.now() < end) {
      const batch = await c.receive(32, 15000);
      const seen = batch.map(m => m.messageGroup);
      heldBack = heldBack && seen.length === new Set(seen).size;
      for (const m of batch) {
        order[m.messageGroup].push(Number(m.body.toString().split('-')[1]));
        total++;
      }
      for (const m of batch) await c.ack(m);
    }
    out({ event: 'received', order, held_back: heldBack });
    await c.shutdown();
    await p.shutdown();
    for (const g of groups) assert(JSON.stringify(order[g]) === JSON.stringify([...Array(perGroup).keys()]), 'order ' + g);
    assert(heldBack, 'held back');
  },

  async fifo_push(endpoints, topic, group, perGroup = '5') {
    perGroup = Number(perGroup);
    const groups = ['pa', 'pb', 'pc'];
    const p = await startProducer(endpoints, topic);
    for (let i = 0; i < perGroup; i++) {
      for (const g of groups) await p.send({ topic, messageGroup: g, body: Buffer.from(g + '-' + i) });
    }
    const got = [];
    const c = new PushConsumer({
      endpoints, namespace: '', consumerGroup: group, subscriptions: new Map([[topic, '*']]), logger: silent,
      messageListener: { async consume(m) { got.push(m.body.toString()); return ConsumeResult.SUCCESS; } },
    });
    await c.startup();
    await waitFor(() => got.length >= perGroup * groups.length, 15000);
    const order = Object.fromEntries(groups.map(g => [g, []]));
    for (const b of got) {
      const [g, i] = b.split('-');
      order[g].push(Number(i));
    }
    out({ event: 'received', order });
    await p.shutdown();
    for (const g of groups) assert(JSON.stringify(order[g]) === JSON.stringify([...Array(perGroup).keys()]), 'order ' + g);
  },

  async delay(endpoints, topic, group, seconds = '3') {
    const ms = Number(seconds) * 1000;
    const p = await startProducer(endpoints, topic);
    const c = await startSimple(endpoints, topic, group);
    const due = Date.now() + ms;
    const r = await p.send({ topic, body: Buffer.from('later'), deliveryTimestamp: new Date(due) });
    await p.send({ topic, body: Buffer.from('now') });
    const arrivals = [];
    const end = Date.now() + ms + 10000;
    while (arrivals.length < 2 && Date.now() < end) {
      for (const m of await c.receive(32, 15000)) {
        arrivals.push([m.body.toString(), Date.now() / 1000]);
        await c.ack(m);
      }
    }
    // a second delayed message is recalled before it is due and never arrives
    const r2 = await p.send({ topic, body: Buffer.from('recalled'), delay: 2000 });
    let recalled = false;
    try {
      await p.recallMessage(topic, r2.recallHandle);
      recalled = true;
    } catch (e) {
      out({ event: 'recall-error', error: String(e) });
    }
    const late = await receiveUntil(c, 1, 4000);
    out({ event: 'received', arrivals, due: due / 1000, recall_handle: r.recallHandle || '', recalled,
      late: late.map(m => m.body.toString()) });
    await c.shutdown();
    await p.shutdown();
    assert(arrivals.map(a => a[0]).join() === 'now,later', 'order');
    assert(arrivals[1][1] * 1000 >= due - 50, 'not early');
    assert(recalled && late.length === 0, 'recall');
  },

  async tx(endpoints, topic, group) {
    const checker = { async check() { return ROLLBACK; } };
    const p = await startProducer(endpoints, topic, checker);
    const c = await startSimple(endpoints, topic, group);
    const t1 = p.beginTransaction();
    await p.send({ topic, body: Buffer.from('committed') }, t1);
    const t2 = p.beginTransaction();
    await p.send({ topic, body: Buffer.from('rolled-back') }, t2);
    const early = (await c.receive(32, 15000)).map(m => m.body.toString());
    await t1.commit();
    await t2.rollback();
    const got = await receiveUntil(c, 1, 8000);
    const later = await receiveUntil(c, 1, 3000);
    const bodies = early.concat(got.concat(later).map(m => m.body.toString()));
    out({ event: 'received', bodies });
    await c.shutdown();
    await p.shutdown();
    assert(JSON.stringify(bodies) === JSON.stringify(['committed']), 'bodies');
  },

  async orphan(endpoints, topic, group) {
    const checked = [];
    const checker = {
      async check(m) {
        checked.push(m.messageId);
        out({ event: 'checked', id: m.messageId, body: m.body.toString() });
        return COMMIT;
      },
    };
    const p = await startProducer(endpoints, topic, checker);
    const c = await startSimple(endpoints, topic, group);
    const t = p.beginTransaction();
    const r = await p.send({ topic, body: Buffer.from('orphan') }, t);
    const got = await receiveUntil(c, 1, 25000);
    out({ event: 'received', bodies: got.map(m => m.body.toString()), checked, id: r.messageId });
    await c.shutdown();
    await p.shutdown();
    assert(got.length === 1 && got[0].body.toString() === 'orphan' && checked.includes(r.messageId), 'recovered');
  },

  async dlq(endpoints, topic, group) {
    const p = await startProducer(endpoints, topic);
    const r = await p.send({ topic, body: Buffer.from('poison') });
    const attempts = [];
    const c = new PushConsumer({
      endpoints, namespace: '', consumerGroup: group, subscriptions: new Map([[topic, '*']]), logger: silent,
      messageListener: { async consume(m) { attempts.push(m.deliveryAttempt); return ConsumeResult.FAILURE; } },
    });
    await c.startup();
    const reader = await startSimple(endpoints, '%DLQ%' + group, group + '-dlq-reader');
    const dead = await receiveUntil(reader, 1, 25000);
    out({ event: 'received', attempts, dead: dead.map(m => m.messageId), id: r.messageId });
    await reader.shutdown();
    await p.shutdown();
    assert(dead.length === 1 && dead[0].messageId === r.messageId, 'dead-lettered');
  },

  async restart(endpoints, topic, group) {
    const p = await startProducer(endpoints, topic);
    for (let i = 0; i < 4; i++) await p.send({ topic, body: Buffer.from('r-' + i) });
    await p.shutdown();
    const c = await startSimple(endpoints, topic, group);
    const got = await receiveUntil(c, 4, 10000, 30000, false);
    got.sort((a, b) => a.body.toString().localeCompare(b.body.toString()));
    await c.ack(got[0]);
    await c.ack(got[1]);
    out({ event: 'restart-now', bodies: got.map(m => m.body.toString()) });
    await new Promise(resolve => process.stdin.once('data', resolve));
    const acked = [];
    const end = Date.now() + 15000;
    for (const m of got.slice(2)) {
      for (;;) {
        try {
          await c.ack(m);
          acked.push(m.body.toString());
          break;
        } catch (e) {
          if (Date.now() > end) throw e;
          out({ event: 'retry-ack', error: String(e).slice(0, 200) });
          await sleep(300);
        }
      }
    }
    const again = (await c.receive(32, 15000)).map(m => m.body.toString());
    out({ event: 'after-restart', acked, again });
    await c.shutdown();
    assert(acked.join() === 'r-2,r-3' && again.length === 0, 'acks after restart');
  },
};

async function main() {
  const [scenario, ...args] = process.argv.slice(2);
  await scenarios[scenario](...args);
  out({ event: 'done' });
  process.exit(0);
}

main().catch(err => {
  out({ event: 'error', error: String(err && err.stack || err) });
  process.exit(1);
});
