"use strict";
// A hostile worker (or install step) for the sandbox tests: it tries
// everything a compromised npm package would and reports, as JSON, what
// each attempt got: "ok" (it worked) or the error code.
const fs = require("node:fs");
const net = require("node:net");

function attempt(fn) {
  try { fn(); return "ok"; } catch (e) { return e.code || String(e); }
}

function connect(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, timeout: 2000 });
    s.on("connect", () => { s.destroy(); resolve("ok"); });
    s.on("timeout", () => { s.destroy(); resolve("ETIMEDOUT"); });
    s.on("error", (e) => resolve(e.code || String(e)));
  });
}

// probe runs every attempt; paths come from the environment so that the
// same script serves the install and the exec test.
async function probe() {
  const e = process.env;
  return {
    readNodeYAML: attempt(() => fs.readFileSync("/etc/drover/node.yaml")),
    readSecret: attempt(() => fs.readFileSync(e.PRIVATE_FILE || "/etc/drover/webhook.secret")),
    listEtcDrover: attempt(() => fs.readdirSync("/etc/drover")),
    readOtherBundle: attempt(() => fs.readFileSync(e.OTHER_BUNDLE + "/SECRET.txt")),
    readOtherRelease: attempt(() => fs.readFileSync(e.STATE_DIR + "/releases/" + e.REV + "/workers/other/SECRET.txt")),
    writeOtherBundle: attempt(() => fs.writeFileSync(e.OTHER_BUNDLE + "/pwned", "x")),
    listReleases: attempt(() => fs.readdirSync(e.STATE_DIR + "/releases")),
    releasesSeen: (() => { try { return fs.readdirSync(e.STATE_DIR + "/releases").join(","); } catch (err) { return ""; } })(),
    readUnitsState: attempt(() => fs.readFileSync(e.STATE_DIR + "/units.json")),
    writeSystemd: attempt(() => fs.writeFileSync("/etc/systemd/system/pwned.service", "[Service]\nExecStart=/bin/sh\n")),
    writeLiveBundle: e.LIVE_BUNDLE ? attempt(() => fs.writeFileSync(e.LIVE_BUNDLE + "/pwned", "x")) : "",
    writeOwnBundle: attempt(() => fs.writeFileSync(e.OWN_BUNDLE + "/pwned", "x")),
    readOwnBundle: attempt(() => fs.readFileSync(e.OWN_BUNDLE + "/probe.js")),
    writeTmp: attempt(() => fs.writeFileSync("/tmp/scratch", "x")),
    metadata: await connect("169.254.169.254", 80),
    outboundTCP: await connect("127.0.0.1", 80),
    envFile: e.GREETING || "",
    agentSecretsInEnv: Object.keys(e).filter((k) => /TOKEN|PASSWORD|SECRET|DSN/.test(k)).join(","),
  };
}

if (require.main === module && process.argv[2] === "--once") {
  // The install step: probe and print the report (into its log).
  probe().then((r) => { console.log("PROBE " + JSON.stringify(r)); });
} else {
  const http = require("node:http");
  http.createServer(async (req, res) => {
    if (req.url === "/healthz") { res.writeHead(200); return res.end("ok"); }
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(await probe()));
  }).listen(Number(process.env.PORT), "127.0.0.1");
}
