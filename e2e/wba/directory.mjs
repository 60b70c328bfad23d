// Fetches the key directory at argv[2] (an agent URL; the server's root CA
// in argv[3]) and checks it with web-bot-auth as a verifier would: every key
// gets its keyid (jwkToKeyID), the keys web-bot-auth can verify with are
// kept and the others passed over, and the response's first signature is
// verified with the key it names. With a request's fields as JSON in
// argv[4] (and its URL in argv[5]), verifies that request with the
// directory's key. Prints one line per key and "directory: ok".
import https from 'node:https';
import fs from 'node:fs';
import { verify, jwkToKeyID, helpers } from 'web-bot-auth';
import { verifierFromJWK } from 'web-bot-auth/crypto';
import { verify as verifyMessage } from 'http-message-sig';

const [agent, caFile, requestFields, requestURL] = process.argv.slice(2);
const url = agent.replace(/\/$/, '') + '/.well-known/http-message-signatures-directory';
const { status, headers, body } = await new Promise((resolve, reject) => {
  https.get(url, { ca: fs.readFileSync(caFile) }, (res) => {
    let data = '';
    res.on('data', (c) => (data += c));
    res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
  }).on('error', reject);
});
if (status !== 200) throw new Error(`directory: status ${status}`);
if (headers['content-type'] !== 'application/http-message-signatures-directory+json') throw new Error(`directory: content-type ${headers['content-type']}`);
const dir = JSON.parse(body);
const usable = new Map();
for (const jwk of dir.keys) {
  const keyid = await jwkToKeyID(jwk, helpers.WEBCRYPTO_SHA256, helpers.BASE64URL_DECODE);
  try {
    usable.set(keyid, await verifierFromJWK(jwk));
    console.log(`key ${keyid} ${jwk.kty} ${jwk.crv}: usable for signatures`);
  } catch (e) {
    console.log(`key ${keyid} ${jwk.kty} ${jwk.crv}: passed over (${e.message})`);
  }
}
if (usable.size === 0) throw new Error('directory: no key web-bot-auth can use');
// http-message-sig takes one signature per message ("Multiple signatures
// is not supported"), and the directory carries one per key: each label is
// handed to it alone. Members of these two dictionaries hold no commas
// (inner lists are space separated), so a comma before "label=" splits them.
const split = (v) => Object.fromEntries(v.split(/,\s*(?=[a-z*][a-z0-9_.*-]*=)/).map((m) => [m.slice(0, m.indexOf('=')), m]));
const inputs = split(headers['signature-input']);
const sigs = split(headers['signature']);
let verified = 0;
for (const [label, input] of Object.entries(inputs)) {
  const keyid = /;keyid="([^"]+)"/.exec(input)?.[1];
  if (!usable.has(keyid)) {
    console.log(`directory signature ${label} by ${keyid}: passed over (not a key web-bot-auth can use)`);
    continue;
  }
  const h = new Headers();
  for (const [k, v] of Object.entries(headers)) h.set(k, Array.isArray(v) ? v.join(', ') : v);
  h.set('signature-input', input);
  h.set('signature', sigs[label]);
  const pair = { request: new Request(url), response: new Response(body, { status, headers: h }) };
  await verifyMessage(pair, async (data, signature, params) => usable.get(params.keyid)(data, signature, params));
  console.log(`directory signature ${label} by ${keyid}: valid`);
  verified++;
}
if (verified === 0) throw new Error('directory: no signature by a key web-bot-auth can use');
console.log('directory signature: valid');
if (requestFields) {
  const fields = JSON.parse(fs.readFileSync(requestFields, 'utf8'));
  const request = new Request(requestURL, { headers: fields });
  await verify(request, async (data, signature, params) => {
    const v = usable.get(params.keyid);
    if (!v) throw new Error(`request signed by ${params.keyid}, not in the directory`);
    return v(data, signature, params);
  });
  console.log('request signature: valid');
}
console.log('directory: ok');
