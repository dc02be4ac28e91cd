#!/usr/bin/env node
// Real application-protocol servers for tests/presets.rs, each the library
// itself with the least app code around it, plus two small fakes (said so):
//
//   node servers.js MODE [--refuse]
//
// MODE: graphql-transport-ws (npm graphql-ws), graphql-ws (npm
// subscriptions-transport-ws, from ./legacy), socket.io (npm socket.io),
// aedes (npm aedes + websocket-stream, MQTT 3.1.1), stomp (npm
// stomp-broker-js), phoenix (a FAKE written from the Phoenix V2 serializer:
// there is no Phoenix server on npm/PyPI/Debian), echo (plain ws echo, the
// baseline), drop-odd (ws: answers only every other message, for samples),
// sio-ping-first (a FAKE Socket.IO server that pings before it answers),
// late-odd (ws: answers every other message 150 ms late).
// --refuse: the protocol's usual refusal (GraphQL init refused, STOMP
// ERROR on CONNECT, Socket.IO CONNECT_ERROR, MQTT CONNACK 5).
//
// Module roots come from argv[3] (default /opt/wsprobe-proto). Binds
// 127.0.0.1 on a port the kernel picks and prints the port alone on the
// first line of stdout; exits when stdin ends.
'use strict';

const http = require('http');
const path = require('path');

const mode = process.argv[2];
const refuse = process.argv.includes('--refuse');
const rootArg = process.argv.slice(3).find((a) => !a.startsWith('--'));
const root = rootArg || '/opt/wsprobe-proto';
const mod = (name) => require(require.resolve(name, { paths: [root] }));
const legacy = (name) => require(require.resolve(name, { paths: [path.join(root, 'legacy')] }));

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

function ready(server) {
  server.listen(0, '127.0.0.1', () => console.log(String(server.address().port)));
}

function wsServer(onConnection, options = {}) {
  const { WebSocketServer } = mod('ws');
  const server = http.createServer();
  const wss = new WebSocketServer({ server, ...options });
  wss.on('connection', onConnection);
  ready(server);
  return wss;
}

async function main() {
  switch (mode) {
    case 'graphql-transport-ws': {
      const { useServer } = mod('graphql-ws/use/ws');
      const { buildSchema } = mod('graphql');
      const { WebSocketServer } = mod('ws');
      const schema = buildSchema('type Query { hello: String }');
      const server = http.createServer();
      const wss = new WebSocketServer({ server, path: '/graphql' });
      useServer({ schema, roots: { query: { hello: () => 'world' } },
                  onConnect: () => !refuse }, wss);
      ready(server);
      break;
    }
    case 'graphql-ws': {
      const { SubscriptionServer } = legacy('subscriptions-transport-ws');
      const { buildSchema, execute, subscribe } = legacy('graphql');
      const schema = buildSchema('type Query { hello: String }');
      const server = http.createServer();
      SubscriptionServer.create({
        schema, execute, subscribe, rootValue: { hello: () => 'world' }, keepAlive: 50,
        onConnect: () => { if (refuse) throw new Error('bad token'); return {}; },
      }, { server, path: '/graphql' });
      ready(server);
      break;
    }
    case 'socket.io': {
      const { Server } = mod('socket.io');
      const server = http.createServer();
      const io = new Server(server, { pingInterval: 300, pingTimeout: 200 });
      if (refuse) io.use((socket, next) => next(new Error('Not authorized')));
      ready(server);
      break;
    }
    case 'aedes': {
      const { Aedes } = mod('aedes');
      const aedes = await Aedes.createBroker();
      if (refuse) {
        aedes.authenticate = (client, username, password, done) => {
          const error = new Error('not authorized');
          error.returnCode = 5;
          done(error, false);
        };
      }
      const server = http.createServer();
      mod('websocket-stream').createServer({ server }, aedes.handle);
      ready(server);
      break;
    }
    case 'stomp': {
      const StompServer = mod('stomp-broker-js');
      const server = http.createServer();
      const stomp = new StompServer({ server, path: '/stomp' });
      stomp.addMiddleware('connect', (socket, args, next) =>
        (refuse && args.headers.login !== 'right' ? false : next()));
      ready(server);
      break;
    }
    case 'phoenix': {
      // FAKE: Phoenix's V2 JSON serializer as lib/phoenix/socket.ex answers a
      // heartbeat: [join_ref, ref, "phoenix", "phx_reply", {status, response}].
      wsServer((ws, req) => {
        if (!/[?&]vsn=2\.0\.0(&|$)/.test(req.url)) { ws.close(1008, 'vsn'); return; }
        ws.on('message', (data) => {
          let msg; try { msg = JSON.parse(data.toString()); } catch { return; }
          if (!Array.isArray(msg) || msg.length !== 5) return;
          const [, ref, topic, event] = msg;
          if (topic === 'phoenix' && event === 'heartbeat') {
            ws.send(JSON.stringify([null, ref, 'phoenix', 'phx_reply', { response: {}, status: 'ok' }]));
          }
        });
      });
      break;
    }
    case 'sio-ping-first': {
      // FAKE (an Engine.IO v4 server reduced to its heartbeat rule): greets,
      // pings at once, and answers the CONNECT only after the pong `3`.
      wsServer((ws) => {
        let ponged = false;
        let pending = null;
        ws.send('0{"sid":"fake","upgrades":[],"pingInterval":25000,"pingTimeout":20000}');
        ws.send('2');
        ws.on('message', (data) => {
          const text = data.toString();
          if (text === '3') { ponged = true; if (pending) { ws.send(pending); pending = null; } }
          if (text === '40') {
            const reply = '40{"sid":"fake-ns"}';
            if (ponged) ws.send(reply); else pending = reply;
          }
        });
      });
      break;
    }
    case 'echo':
      wsServer((ws, req) => {
        ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      }, { handleProtocols: (protocols) => protocols.values().next().value || false });
      break;
    case 'drop-odd':
      wsServer((ws) => {
        let n = 0;
        ws.on('message', (data, isBinary) => { n += 1; if (n % 2 === 1) ws.send(data, { binary: isBinary }); });
      });
      break;
    case 'late-odd':
      wsServer((ws) => {
        let n = 0;
        ws.on('message', (data, isBinary) => {
          n += 1;
          const delay = n % 2 === 1 ? 150 : 0;
          setTimeout(() => ws.send(data, { binary: isBinary }), delay);
        });
      });
      break;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
