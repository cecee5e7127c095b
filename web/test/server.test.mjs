// The static server: the app's own files only, the isolation headers on request, nothing else.
import { test } from "node:test";
import assert from "node:assert/strict";
import { serve } from "./browser.mjs";

async function get(origin, pathname, method = "GET") {
  const res = await fetch(`${origin}${pathname}`, { method });
  await res.arrayBuffer();
  return res;
}

for (const isolation of [true, false]) {
  test(`server ${isolation ? "with" : "without"} cross-origin isolation headers`, async () => {
    const s = await serve({ isolation });
    try {
      const page = await get(s.origin, "/");
      assert.equal(page.status, 200);
      assert.match(page.headers.get("content-type"), /text\/html/);
      assert.equal(page.headers.get("cross-origin-opener-policy"), isolation ? "same-origin" : null);
      assert.equal(page.headers.get("cross-origin-embedder-policy"), isolation ? "require-corp" : null);
      assert.equal((await get(s.origin, "/src/app.js")).headers.get("content-type"), "text/javascript; charset=utf-8");
      for (const hidden of ["/build.py", "/package.json", "/node_modules/onnxruntime-web/package.json",
        "/src/../build.py", "/%2e%2e/README.md", "/test/browser.mjs", "/server.mjs"]) {
        assert.equal((await get(s.origin, hidden)).status, 404, hidden);
      }
      assert.equal((await get(s.origin, "/index.html", "POST")).status, 405);
    } finally {
      await s.close();
    }
  });
}
