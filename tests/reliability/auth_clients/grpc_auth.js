// Sends one message with npm rocketmq-client-nodejs 1.0.8 using an AccessKey/SecretKey; prints
// {"ok": bool, "error": str}. usage (NODE_PATH at its node_modules): node grpc_auth.js ENDPOINT TOPIC AK SK
// Written for rocketlite.
'use strict';

const { Producer } = require('rocketmq-client-nodejs');
const [ endpoints, topic, accessKey, accessSecret ] = process.argv.slice(2);
const silent = { info() {}, warn() {}, error() {}, debug() {}, trace() {} };

function done(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); process.exit(0); }
setTimeout(() => done({ ok: false, error: 'timeout' }), 20000);

(async () => {
  try {
    const p = new Producer({ endpoints, namespace: '', topics: [ topic ], logger: silent,
      sessionCredentials: { accessKey, accessSecret } });
    await p.startup();
    const r = await p.send({ topic, tag: 'auth', body: Buffer.from('auth-check') });
    done({ ok: Boolean(r.messageId), error: '' });
  } catch (err) {
    done({ ok: false, error: `${err.name}: ${err.message}` });
  }
})();
