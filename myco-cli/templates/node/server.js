// @NAME@: a small HTTP service made by `myco init node`.
//
// It answers GET / with a line of text and GET /healthz with "ok", on the port in the PORT
// environment variable (myco.json sets it). Only Node's own modules are used, so the flake needs
// nothing but nodejs.
"use strict";

const http = require("node:http");

const name = "@NAME@";
const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`${name}: PORT must be a port number (1 to 65535), got ${JSON.stringify(process.env.PORT)}; set it in myco.json's env`);
  process.exit(1);
}

function answer(res, status, text) {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/") {
    answer(res, 200, `hello from ${name}\n`);
  } else if (req.method === "GET" && req.url === "/healthz") {
    answer(res, 200, "ok\n");
  } else {
    answer(res, 404, "not found\n");
  }
});

// systemd stops the service with SIGTERM: close the listener and let open requests finish.
process.on("SIGTERM", () => server.close(() => process.exit(0)));

server.listen(port, () => console.log(`${name}: listening on port ${port}`));
