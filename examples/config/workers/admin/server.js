// The admin service: health, and a page for the operators.
"use strict";
const http = require("node:http");
const port = Number(process.env.PORT || 3100);

http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    return res.end("ok\n");
  }
  res.writeHead(200, { "Content-Type": "text/html" });
  res.end("<!doctype html><title>Admin</title><h1>Admin</h1><p>Corporate clients, payments, health.</p>\n");
}).listen(port, "127.0.0.1", () => console.log(`admin listening on ${port}`));
