#!/usr/bin/env node
// A third-party WebSocket server for wsprobe's interop tests: Node's `ws`
// package (found through NODE_PATH), an implementation independent of both
// wsprobe's and the Python `websockets` one.
//
// Usage: node ws_server.js [--deflate] [--greeting TEXT] [--binary]
//                          [--subprotocol NAME] [--force-subprotocol NAME]
//
// Binds 127.0.0.1 on a port the kernel picks and prints that port alone on
// the first line of stdout (the readiness signal). After that, one JSON
// line per event, for the test to check what the server saw:
//   {"event":"open","path":...,"offered_protocols":...,"offered_extensions":...,
//    "protocol":...,"extensions":...}
//   {"event":"message","binary":false,"data":"...","replied_binary":false}
//   {"event":"close","code":1000,"reason":""}
// Every message is echoed back as it came (text as text, binary as binary).
//
// --deflate               enable permessage-deflate (ws's server default is
//                         off): the server would select it if offered
// --greeting TEXT         send TEXT as a text message as soon as a client opens
// --binary                echo every message back as a binary message
// --subprotocol NAME      select NAME when the client offers it, else none
// --force-subprotocol NAME  select NAME whatever the client offers (a broken
//                         server: RFC 6455 says only an offered one may be chosen)
//
// Exits when its stdin reaches end of file, so a test that drops its handle
// on the child (and with it the pipe) ends the server.
'use strict';

const { WebSocketServer } = require('ws');

function parseArgs(argv) {
  const opts = { deflate: false, greeting: null, binary: false, subprotocol: null, force: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--deflate': opts.deflate = true; break;
      case '--binary': opts.binary = true; break;
      case '--greeting': opts.greeting = value(); break;
      case '--subprotocol': opts.subprotocol = value(); break;
      case '--force-subprotocol': opts.force = value(); break;
      default: throw new Error(`unknown argument ${arg}`);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const report = (event) => process.stdout.write(JSON.stringify(event) + '\n');

const serverOptions = { host: '127.0.0.1', port: 0, perMessageDeflate: opts.deflate };
if (opts.force !== null) {
  serverOptions.handleProtocols = () => opts.force;
} else if (opts.subprotocol !== null) {
  serverOptions.handleProtocols = (offered) => (offered.has(opts.subprotocol) ? opts.subprotocol : false);
}

const wss = new WebSocketServer(serverOptions);

wss.on('listening', () => {
  process.stdout.write(`${wss.address().port}\n`);
});

wss.on('connection', (ws, req) => {
  report({
    event: 'open',
    path: req.url,
    offered_protocols: req.headers['sec-websocket-protocol'] || null,
    offered_extensions: req.headers['sec-websocket-extensions'] || null,
    protocol: ws.protocol,
    extensions: ws.extensions,
  });
  ws.on('message', (data, isBinary) => {
    const binary = opts.binary || isBinary;
    report({ event: 'message', binary: isBinary, data: data.toString('utf8'), replied_binary: binary });
    ws.send(data, { binary });
  });
  ws.on('close', (code, reason) => {
    report({ event: 'close', code, reason: reason.toString('utf8') });
  });
  ws.on('error', () => {});
  if (opts.greeting !== null) {
    ws.send(opts.greeting);
  }
});

wss.on('error', (err) => {
  process.stderr.write(`ws_server.js: ${err.message}\n`);
  process.exit(1);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
