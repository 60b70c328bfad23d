// Signs a request to argv[2] with web-bot-auth's signatureHeaders and the
// private JWK in argv[3], Signature-Agent argv[4], and prints the three
// fields as JSON.
import fs from 'node:fs';
import { signatureHeaders } from 'web-bot-auth';
import { signerFromJWK } from 'web-bot-auth/crypto';

const [url, jwkFile, agent] = process.argv.slice(2);
const jwk = JSON.parse(fs.readFileSync(jwkFile, 'utf8'));
const agentField = JSON.stringify(agent);
const request = new Request(url, { headers: { 'Signature-Agent': agentField } });
const now = new Date();
const h = await signatureHeaders(request, await signerFromJWK(jwk), { created: now, expires: new Date(now.getTime() + 60_000) });
console.log(JSON.stringify({ 'Signature-Agent': agentField, 'Signature-Input': h['Signature-Input'], 'Signature': h['Signature'] }));
