// An HTTPS server that verifies each request's Web Bot Auth signature with
// web-bot-auth's verify, against the public JWK in argv[4], and answers
// "web-bot-auth: valid" or "web-bot-auth: invalid: <why>". Usage:
// node verify-server.mjs CERT KEY JWK; it prints "listening PORT".
import https from 'node:https';
import fs from 'node:fs';
import { verify } from 'web-bot-auth';
import { verifierFromJWK } from 'web-bot-auth/crypto';

const [cert, key, jwkFile] = process.argv.slice(2);
const jwk = JSON.parse(fs.readFileSync(jwkFile, 'utf8'));
const verifier = await verifierFromJWK(jwk);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, async (req, res) => {
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
  const request = new Request(`https://${req.headers.host}${req.url}`, { method: req.method, headers });
  let answer;
  try {
    await verify(request, verifier);
    answer = 'web-bot-auth: valid';
  } catch (e) {
    answer = 'web-bot-auth: invalid: ' + e.message;
  }
  res.end(answer + '\nsignature-agent: ' + (req.headers['signature-agent'] ?? '') + '\n');
});
server.listen(0, '127.0.0.1', () => console.log('listening', server.address().port));
