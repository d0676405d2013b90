// The feedback API: plain Node.js, standard library only. drover runs
// `instances` copies, each with its own PORT, and nginx balances over them.
"use strict";
const http = require("node:http");

const port = Number(process.env.PORT || 3000);
const maxText = Number(process.env.FEEDBACK_MAX_TEXT || 20000);
const version = "1";

// A deliberately simple "feedback engine": counts words that tend to read as
// hedging or as absolute, and says how the text may come across.
const hedges = ["maybe", "perhaps", "possibly", "sorry", "just", "might"];
const absolutes = ["always", "never", "must", "obviously", "clearly"];

function feedback(text) {
  const words = text.toLowerCase().match(/[a-z']+/g) || [];
  const count = (list) => words.filter((w) => list.includes(w)).length;
  const h = count(hedges), a = count(absolutes);
  let tone = "neutral";
  if (h > a && h > 1) tone = "tentative";
  if (a > h && a > 1) tone = "assertive";
  return { words: words.length, hedges: h, absolutes: a, tone };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  const path = url.pathname.replace(/^\/api/, "");
  if (path === "/healthz") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    return res.end("ok\n");
  }
  if (path === "/version") {
    res.writeHead(200, { "Content-Type": "application/json" });
    return res.end(JSON.stringify({ version, port }) + "\n");
  }
  if (path === "/feedback" && req.method === "POST") {
    let body = "";
    req.on("data", (chunk) => {
      body += chunk;
      if (body.length > maxText * 4) req.destroy();
    });
    req.on("end", () => {
      let text = "";
      try { text = String(JSON.parse(body).text || ""); } catch { /* empty */ }
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify(feedback(text.slice(0, maxText))) + "\n");
    });
    return;
  }
  res.writeHead(404, { "Content-Type": "text/plain" });
  res.end("not found\n");
});

// Finish in-flight requests on SIGTERM, then exit: restarts drop nothing.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
server.listen(port, "127.0.0.1", () => console.log(`feedback-api ${version} listening on ${port}`));
