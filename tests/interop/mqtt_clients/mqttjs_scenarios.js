// MQTT scenarios driven by MQTT.js (npm mqtt), over TCP (mqtt://) or WebSocket (ws://.../mqtt).
//   node mqttjs_scenarios.js URL VERSION SCENARIO[,SCENARIO...] PREFIX
// Prints OK on success; exits non-zero on failure.
'use strict';
const path = require('path');
const mqtt = require(path.join(process.env.MQTTJS_MODULES, 'mqtt'));

const [url, versionArg, scenario, prefix] = process.argv.slice(2);
const version = Number(versionArg);
const t = (name) => `${prefix}/${name}`;
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail(`timeout in ${scenario}`), 18000).unref();

function connect(id, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `${prefix}-${id}`, protocolVersion: version, reconnectPeriod: 0,
      connectTimeout: 5000, ...opts });
    c.received = [];
    c.on('message', (topic, payload, packet) => c.received.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain }));
    c.once('connect', (connack) => { c.connack = connack; resolve(c); });
    c.once('error', reject);
  });
}
const waitFor = async (c, n) => { while (c.received.length < n) await new Promise((r) => setTimeout(r, 20)); return c.received; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const end = (c) => new Promise((r) => c.end(false, {}, r));

const scenarios = {
  async roundtrip() {
    const sub = await connect('sub');
    await sub.subscribeAsync(t('#'), { qos: 2 });
    const pub = await connect('pub');
    for (const qos of [0, 1, 2]) await pub.publishAsync(t(`q${qos}`), `m${qos}`, { qos });
    const got = (await waitFor(sub, 3)).map((m) => `${m.topic} ${m.payload} ${m.qos}`).sort();
    const want = [0, 1, 2].map((q) => `${t('q' + q)} m${q} ${q}`);
    if (JSON.stringify(got) !== JSON.stringify(want)) fail(`got ${got}`);
    // a burst, split across TCP segments / WebSocket frames, in order
    for (let i = 0; i < 300; i++) pub.publish(t('burst'), `${i}`, { qos: 1 });
    const burst = (await waitFor(sub, 303)).filter((m) => m.topic === t('burst')).map((m) => Number(m.payload));
    if (burst.length !== 300 || burst.some((v, i) => v !== i)) fail(`burst out of order ${burst.slice(0, 10)}`);
    await end(pub); await end(sub);
  },
  async retained() {
    const pub = await connect('pub');
    await pub.publishAsync(t('r/a'), 'kept', { qos: 1, retain: true });
    const sub = await connect('sub');
    await sub.subscribeAsync(t('r/+'), { qos: 1 });
    const [m] = await waitFor(sub, 1);
    if (m.topic !== t('r/a') || m.payload !== 'kept' || !m.retain) fail(`retained ${JSON.stringify(m)}`);
    await pub.publishAsync(t('r/a'), '', { qos: 1, retain: true });
    const sub2 = await connect('sub2');
    await sub2.subscribeAsync(t('r/#'), { qos: 1 });
    await pub.publishAsync(t('r/z'), 'live', { qos: 1 });
    const got = await waitFor(sub2, 1);
    if (got[0].payload !== 'live') fail(`cleared retained still sent: ${JSON.stringify(got)}`);
    await end(pub); await end(sub); await end(sub2);
  },
  async will() {
    const watch = await connect('watch');
    await watch.subscribeAsync(t('will'), { qos: 1 });
    const dying = await connect('dying', { will: { topic: t('will'), payload: 'gone', qos: 1, retain: false } });
    dying.stream.destroy(); // abrupt: no DISCONNECT
    const [m] = await waitFor(watch, 1);
    if (m.payload !== 'gone') fail(`will ${JSON.stringify(m)}`);
    await end(watch);
  },
  async persist() {
    const props = version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {};
    let c = await connect('durable', { clean: false, ...props });
    await c.subscribeAsync(t('p/#'), { qos: 1 });
    await end(c);
    const pub = await connect('pub');
    for (let i = 0; i < 3; i++) await pub.publishAsync(t(`p/${i}`), `off${i}`, { qos: 1 });
    c = await connect('durable', { clean: false, ...props });
    if (!c.connack.sessionPresent) fail('session not present');
    const got = (await waitFor(c, 3)).map((m) => m.payload);
    if (JSON.stringify(got) !== JSON.stringify(['off0', 'off1', 'off2'])) fail(`persist got ${got}`);
    await end(c); await end(pub);
  },
  async wildcards() {
    const sub = await connect('sub');
    await sub.subscribeAsync([t('w/+/x'), t('w/a/#')], { qos: 1 });
    const pub = await connect('pub');
    for (const topic of ['w/a/x', 'w/b/x', 'w/b/y', 'w/a', 'w/a/b/c']) await pub.publishAsync(t(topic), topic, { qos: 1 });
    await waitFor(sub, 4); await sleep(200);
    const got = sub.received.map((m) => m.payload).sort();
    if (JSON.stringify(got) !== JSON.stringify(['w/a', 'w/a/b/c', 'w/a/x', 'w/b/x'])) fail(`wildcards got ${got}`);
    await end(sub); await end(pub);
  },
  async shared() {
    const a = await connect('a'); const b = await connect('b');
    await a.subscribeAsync(`$share/g/${t('s/#')}`, { qos: 1 });
    await b.subscribeAsync(`$share/g/${t('s/#')}`, { qos: 1 });
    const pub = await connect('pub');
    for (let i = 0; i < 10; i++) await pub.publishAsync(t('s/x'), `${i}`, { qos: 1 });
    while (a.received.length + b.received.length < 10) await sleep(20);
    if (!a.received.length || !b.received.length) fail('not shared');
    await end(a); await end(b); await end(pub);
  },
};

(async () => {
  for (const name of scenario.split(',')) {
    const started = Date.now();
    await scenarios[name]();
    console.log(`${name} ok in ${Date.now() - started} ms`);
  }
})().then(() => { console.log('OK'); process.exit(0); }, (e) => fail(e.stack || String(e)));
