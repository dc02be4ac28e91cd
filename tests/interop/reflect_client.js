#!/usr/bin/env node
// A third-party client for `wsprobe reflect`'s tests: Node's `ws` package
// (found through NODE_PATH).
//
// Usage: node reflect_client.js URL [CA_FILE]
//
// Sends a text message (non-ASCII), a binary message of every byte value
// and a ping, checks each echo, closes with 1000 and prints one JSON line:
//   {"ok":true,"close_code":1000}
// or {"ok":false,"error":"..."} (exit 1).
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

const [url, ca] = process.argv.slice(2);
const fail = (error) => {
  console.log(JSON.stringify({ ok: false, error: String(error) }));
  process.exit(1);
};
setTimeout(() => fail('timed out'), 10000).unref();

const ws = new WebSocket(url, { ca: ca ? fs.readFileSync(ca) : undefined, perMessageDeflate: false });
const text = 'h\u00e9llo, \u4e16\u754c';
const blob = Buffer.alloc(70000 - 5000, 0).map((_, i) => i % 256);
const steps = [];
ws.on('error', fail);
ws.on('open', () => ws.send(text));
ws.on('message', (data, isBinary) => {
  steps.push(isBinary ? 'binary' : 'text');
  if (!isBinary) {
    if (data.toString() !== text) fail('text echo differs');
    ws.send(blob);
  } else {
    if (!Buffer.from(data).equals(blob)) fail('binary echo differs');
    ws.ping(Buffer.from('ping?'));
  }
});
ws.on('pong', (data) => {
  if (data.toString() !== 'ping?') fail('pong payload differs');
  ws.close(1000, 'done');
});
ws.on('close', (code) => {
  if (steps.join(',') !== 'text,binary') fail(`steps ${steps}`);
  console.log(JSON.stringify({ ok: true, close_code: code }));
  process.exit(0);
});
