// Headless Chromium (Debian's, driven by playwright-core; no browser download) on the app served by
// server.mjs, with every request to anything but that server refused and recorded. Used by the browser
// tests and the benchmark.
import { chromium } from "playwright-core";
import { createServer } from "../server.mjs";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-default-apps",
  "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"];

/** Serve the app (with or without cross-origin isolation) on a free loopback port. */
export async function serve({ isolation = true } = {}) {
  const server = createServer({ isolation });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Chromium on a fresh profile (playwright makes a temporary one); `video`: a .y4m or .mjpeg file
 * the fake camera plays. */
export async function launch({ video } = {}) {
  const args = [...FLAGS];
  if (video) args.push("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", `--use-file-for-fake-video-capture=${video}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  return { browser, close: () => browser.close() };
}

/** A page on `origin` whose requests elsewhere are aborted and listed in `foreign`; `bytes` sums the
 * response bodies' encoded sizes (what crossed the wire). */
export async function openApp(browser, origin, { query = "", permissions = [] } = {}) {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 1300 } });
  if (permissions.length) await context.grantPermissions(permissions, { origin });
  const foreign = [];
  const errors = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(`${origin}/`)) return route.continue();
    foreign.push(url);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
  const requests = [];
  page.on("requestfinished", async (req) => {
    const sizes = await req.sizes().catch(() => null);
    requests.push({ url: req.url(), bytes: sizes ? sizes.responseBodySize + sizes.responseHeadersSize : 0 });
  });
  const started = Date.now();
  await page.goto(`${origin}/${query}`);
  await page.evaluate(() => globalThis.ferEdge.ready.then(() => undefined));
  return { context, page, foreign, errors, requests, loadMs: Date.now() - started };
}
