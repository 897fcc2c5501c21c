// Sends one message with npm ali-ons 3.12.0 using an AccessKey/SecretKey; prints {"ok": bool, "error": str}.
// usage: ALIONS_MODULES=... node alions_auth.js NAMESRV TOPIC ACCESS_KEY SECRET_KEY   (written for rocketlite)
'use strict';

const path = require('path');
const ons = require(path.join(process.env.ALIONS_MODULES, 'ali-ons'));
const { Producer, Message } = ons;
const [ nameSrv, topic, accessKey, secretKey ] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

function done(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); process.exit(0); }
setTimeout(() => done({ ok: false, error: 'timeout' }), 20000);

(async () => {
  const producer = new Producer({ httpclient: {}, nameSrv, accessKey, secretKey, producerGroup: 'PID_auth_js', logger: quiet });
  producer.on('error', err => done({ ok: false, error: String(err && err.message || err) }));
  try {
    await producer.ready();
    const r = await producer.send(new Message(topic, 'auth', 'auth-check'));
    done({ ok: r.sendStatus === 'SEND_OK', error: '', status: r.sendStatus });
  } catch (err) {
    done({ ok: false, error: `${err.name}: ${err.message}` });
  }
})();
