// A voice agent's WebSocket endpoint for the tests: what the sandbox's audio fork connects to.
// Node 20 has no WebSocket server, so this is a minimal RFC 6455 one on node:http's `upgrade`:
// the handshake (Sec-WebSocket-Accept, the subprotocol echoed), masked client frames parsed
// (text kept as JSON, binary counted, ping answered, close answered), text frames sent.

import { createHash } from "node:crypto";
import { createServer } from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function frame(opcode, payload) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, payload]);
}

class Connection {
  constructor(socket, request, protocol) {
    this.socket = socket;
    this.headers = request.headers;
    this.path = request.url;
    this.protocol = protocol;
    this.texts = [];
    this.binaryFrames = 0;
    this.closed = false;
    this.buffer = Buffer.alloc(0);
    this.fragments = null; // [opcode, chunks] of a fragmented message
  }

  send(text) {
    if (!this.closed) this.socket.write(frame(0x1, Buffer.from(text, "utf8")));
  }

  close(code = 1000) {
    if (this.closed) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code, 0);
    this.socket.write(frame(0x8, payload));
    this.socket.end();
    this.closed = true;
  }

  /** Parse whatever complete frames the buffer holds; returns the messages. */
  feed(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    const messages = [];
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) break;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (masked) offset += 4;
      if (b.length < offset + len) break;
      const payload = Buffer.from(b.subarray(offset, offset + len));
      if (masked) {
        for (let i = 0; i < payload.length; i++) payload[i] ^= b[maskAt + (i % 4)];
      }
      this.buffer = b.subarray(offset + len);
      if (opcode === 0x8) {
        if (!this.closed) {
          this.socket.write(frame(0x8, payload.subarray(0, 2)));
          this.socket.end();
        }
        this.closed = true;
        messages.push({ type: "close" });
        break;
      }
      if (opcode === 0x9) {
        this.socket.write(frame(0xa, payload));
        continue;
      }
      if (opcode === 0xa) continue;
      if (opcode === 0x0 && this.fragments) {
        this.fragments[1].push(payload);
        if (!fin) continue;
        const [op, chunks] = this.fragments;
        this.fragments = null;
        messages.push({ type: op === 0x1 ? "text" : "binary", data: Buffer.concat(chunks) });
        continue;
      }
      if (!fin) {
        this.fragments = [opcode, [payload]];
        continue;
      }
      messages.push({ type: opcode === 0x1 ? "text" : "binary", data: payload });
    }
    return messages;
  }
}

export class AgentServer {
  constructor({ subprotocols = ["audio.drachtio.org", "audio.jambonz.org"] } = {}) {
    this.subprotocols = subprotocols;
    this.connections = [];
    this.waiters = new Set();
    this.server = createServer((_req, res) => {
      res.writeHead(426).end();
    });
    this.server.on("upgrade", (req, socket) => this.upgrade(req, socket));
    this.url = "";
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `ws://127.0.0.1:${this.server.address().port}/ws`;
    return this;
  }

  async stop() {
    for (const conn of this.connections) {
      conn.closed = true;
      conn.socket.destroy();
    }
    await new Promise((resolve) => this.server.close(resolve));
  }

  upgrade(req, socket) {
    const key = req.headers["sec-websocket-key"];
    if (!key || req.headers.upgrade?.toLowerCase() !== "websocket") {
      socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
      return;
    }
    const accept = createHash("sha1").update(key + GUID).digest("base64");
    const offered = String(req.headers["sec-websocket-protocol"] ?? "")
      .split(",")
      .map((p) => p.trim())
      .filter(Boolean);
    const protocol = offered.find((p) => this.subprotocols.includes(p)) ?? null;
    const lines = [
      "HTTP/1.1 101 Switching Protocols",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Accept: ${accept}`,
    ];
    if (protocol) lines.push(`Sec-WebSocket-Protocol: ${protocol}`);
    socket.write(lines.join("\r\n") + "\r\n\r\n");
    socket.setNoDelay(true);
    const conn = new Connection(socket, req, protocol);
    this.connections.push(conn);
    this.notify();
    socket.on("data", (chunk) => {
      for (const msg of conn.feed(chunk)) {
        if (msg.type === "text") {
          const text = msg.data.toString("utf8");
          try {
            conn.texts.push(JSON.parse(text));
          } catch {
            conn.texts.push(text);
          }
        } else if (msg.type === "binary") {
          conn.binaryFrames++;
        }
      }
      this.notify();
    });
    const gone = () => {
      conn.closed = true;
      this.notify();
    };
    socket.on("close", gone);
    socket.on("error", gone);
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves with predicate()'s first truthy value. */
  waitFor(predicate, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let value;
        try {
          value = predicate();
        } catch (err) {
          this.waiters.delete(check);
          clearTimeout(timer);
          reject(err);
          return;
        }
        if (value) {
          this.waiters.delete(check);
          clearTimeout(timer);
          resolve(value);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`AgentServer: condition not met within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** The first text frame (the metadata frame) of the connection for callId. */
  metadata(callId, timeoutMs = 5000) {
    return this.waitFor(() => {
      for (const c of this.connections) {
        const first = c.texts[0];
        if (first && typeof first === "object" && first.call_id === callId) return first;
      }
      return null;
    }, timeoutMs);
  }
}
