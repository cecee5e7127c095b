// A small static server for the app (npm run serve): its own files only, on loopback, with the headers
// that make the page cross-origin isolated (Cross-Origin-Opener-Policy: same-origin and
// Cross-Origin-Embedder-Policy: require-corp), which WASM threads need. --no-isolation leaves them out
// (the app then runs on one thread and says so). No request body is read; nothing is processed here.
//
//   node server.mjs [--port 8030] [--host 127.0.0.1] [--no-isolation]
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.dirname(fileURLToPath(import.meta.url));
// What the app is made of; anything else (node_modules, tests, the build script) is not served.
const SERVED = ["index.html", "app.css", "src/", "vendor/ort/", "models/"];
const TYPES = {
  ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8", ".json": "application/json", ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
};

export function createServer({ isolation = true, root = ROOT } = {}) {
  return http.createServer((req, res) => {
    const headers = { "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff" };
    if (isolation) {
      headers["Cross-Origin-Opener-Policy"] = "same-origin";
      headers["Cross-Origin-Embedder-Policy"] = "require-corp";
    }
    let name;
    try {
      name = decodeURIComponent(new URL(req.url, "http://localhost").pathname).replace(/^\/+/, "") || "index.html";
    } catch {
      name = "";
    }
    const file = path.join(root, name);
    const allowed = name && !name.split("/").includes("..") && SERVED.some((p) => (p.endsWith("/") ? name.startsWith(p) : name === p));
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { ...headers, Allow: "GET, HEAD" }).end();
      return;
    }
    fs.stat(file, (err, stat) => {
      if (!allowed || err || !stat.isFile()) {
        res.writeHead(404, { ...headers, "Content-Type": "text/plain" }).end("not found\n");
        return;
      }
      res.writeHead(200, { ...headers, "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream",
        "Content-Length": stat.size });
      if (req.method === "HEAD") res.end();
      else fs.createReadStream(file).pipe(res);
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (flag, fallback) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : fallback);
  const isolation = !args.includes("--no-isolation");
  const host = option("--host", "127.0.0.1");
  const server = createServer({ isolation });
  server.listen(Number(option("--port", "8030")), host, () => {
    const { port } = server.address();
    console.log(`fer-edge web: http://${host === "0.0.0.0" ? "localhost" : host}:${port}/ ` +
      `(${isolation ? "cross-origin isolated: WASM threads" : "not isolated: one WASM thread"})`);
  });
}
