// A real Firefox as the Web Push user agent of the end-to-end tests.
//
// startPageServer(): a loopback HTTP server that serves page/ (the page and
//   the service worker) and collects what they report (POST /report).
// makeProfile(): a fresh profile whose user.js points Firefox's push
//   service at the origin's WebSocket endpoint and everything else at a dead
//   proxy.
// launchFirefox(): `firefox-esr --headless --no-remote --profile …` in its
//   own process group; stop() kills the group.
//
//   FIREFOX=path   the browser binary (default firefox-esr, then firefox)
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LogTail, killGroup, sleep, track } from "../js/helpers.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PAGE_DIR = path.join(HERE, "page");

/** What the service worker reports for a push message without data. */
export const EMPTY_MARKER = "\u0000<empty push message>";

/**
 * The push protocol messages Firefox received, parsed from its push debug
 * log (user.js sets dom.push.loglevel=Debug), optionally of one messageType.
 */
export function receivedPushMessages(log, messageType) {
  const out = [];
  for (const m of String(log).matchAll(/PushServiceWebSocket: "wsOnMessageAvailable\(\)" (".*")$/gm)) {
    try {
      const msg = JSON.parse(JSON.parse(m[1]));
      if (!messageType || msg.messageType === messageType) out.push(msg);
    } catch { /* not one JSON string: skip */ }
  }
  return out;
}

/** The lines of a Firefox log worth reading in a failure report. */
export function interestingLines(log) {
  return String(log)
    .split("\n")
    .filter((l) => /Push|push|sw\.js|page\.js|localhost|JavaScript error|Crash|panic/.test(l) && !/services\.settings|BackupService/.test(l))
    .join("\n");
}

/** The Firefox binary, or null when none is installed. */
export function firefoxBinary() {
  const candidates = process.env.FIREFOX ? [process.env.FIREFOX] : ["firefox-esr", "firefox"];
  for (const c of candidates) {
    const r = spawnSync(c, ["--version"], { stdio: ["ignore", "pipe", "ignore"], timeout: 20_000 });
    if (r.status === 0) return c;
  }
  return null;
}

const STATIC = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/page.js": ["page.js", "text/javascript; charset=utf-8"],
  "/sw.js": ["sw.js", "text/javascript; charset=utf-8"],
};

/**
 * The page server. `config` is what the page reads from /config:
 * { applicationServerKey?, subscribe }. `pushReady()` answers /push-ready
 * (true once the origin has seen Firefox's hello).
 */
export async function startPageServer({ config, pushReady }) {
  const events = [];
  const waiters = new Set();

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://localhost");
    const noStore = { "cache-control": "no-store" };
    try {
      if (req.method === "GET" && STATIC[url.pathname]) {
        const [file, type] = STATIC[url.pathname];
        res.writeHead(200, { "content-type": type, ...noStore });
        res.end(await readFile(path.join(PAGE_DIR, file)));
      } else if (req.method === "GET" && url.pathname === "/config") {
        res.writeHead(200, { "content-type": "application/json", ...noStore });
        res.end(JSON.stringify({ attempts: 2, callTimeoutMs: 6_000, readyTimeoutMs: 12_000, ...config }));
      } else if (req.method === "GET" && url.pathname === "/push-ready") {
        let ready = false;
        try { ready = await pushReady(); } catch { /* not yet */ }
        res.writeHead(200, { "content-type": "application/json", ...noStore });
        res.end(JSON.stringify({ ready }));
      } else if (req.method === "POST" && url.pathname === "/report") {
        let body = "";
        for await (const chunk of req) body += chunk;
        const event = { ...JSON.parse(body), at: Date.now() };
        events.push(event);
        for (const w of waiters) w();
        res.writeHead(204).end();
      } else {
        res.writeHead(404, noStore).end();
      }
    } catch (e) {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(e));
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();

  return {
    // Firefox resolves `localhost` to loopback itself; a localhost page is a
    // secure context, as service workers and push require.
    url: `http://localhost:${port}/`,
    events,
    /** Events after index `from` matching `pred`. */
    find(pred, from = 0) {
      return events.slice(from).filter(pred);
    },
    /**
     * Resolves with the first event (index ≥ from) matching `pred`; rejects
     * after `timeoutMs`, or at once on a page/SW `error` report.
     */
    waitFor(pred, { from = 0, timeoutMs = 30_000, what = "report" } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = events.slice(from).find(pred);
          const err = events.slice(from).find((e) => e.kind === "error");
          if (hit || err) {
            clearTimeout(timer);
            waiters.delete(check);
            if (hit) resolve(hit);
            else reject(new Error(`browser reported an error while waiting for ${what}: ${err.message}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${what} from the browser in ${timeoutMs} ms (${events.length} reports so far)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      server.closeAllConnections?.();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A fresh profile directory whose push service talks to `pushServerUrl`. */
export async function makeProfile(pushServerUrl) {
  const dir = await mkdtemp(path.join(tmpdir(), "firefox-e2e-"));
  const prefs = (await readFile(path.join(HERE, "user.js.in"), "utf8")).replaceAll("@PUSH_SERVER_URL@", pushServerUrl);
  await writeFile(path.join(dir, "user.js"), prefs);
  return {
    dir,
    /**
     * A pref's value as saved in prefs.js, or undefined. Firefox rewrites
     * prefs.js shortly (about half a second) after a pref changes.
     */
    async savedPref(name) {
      let text;
      try { text = await readFile(path.join(dir, "prefs.js"), "utf8"); } catch { return undefined; }
      const esc = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const m = new RegExp(`user_pref\\("${esc}",\\s*(.*)\\);`).exec(text);
      return m ? JSON.parse(m[1]) : undefined;
    },
    async remove() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts headless Firefox on `url` with `profile`. Returns { child, log,
 * exited, stop() }; its output (including the push service's debug log)
 * is kept in `log` for failure messages.
 */
export function launchFirefox({ binary, profile, url }) {
  const log = new LogTail();
  const child = spawn(binary, ["--headless", "--no-remote", "--profile", profile.dir, url], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      MOZ_HEADLESS: "1",
      MOZ_CRASHREPORTER_DISABLE: "1",
      MOZ_DISABLE_AUTO_SAFE_MODE: "1",
    },
  });
  track(child);
  child.stdout.on("data", (d) => log.push(d));
  child.stderr.on("data", (d) => log.push(d));
  const exited = new Promise((resolve) => child.once("exit", (code, sig) => resolve(code ?? sig)));
  return {
    child,
    log,
    exited,
    /**
     * Ends Firefox's whole process group. Firefox 153 does not quit cleanly on
     * SIGTERM (it dies at once, like on SIGKILL), so whatever must survive a
     * restart has to be on disk before: see profile.savedPref().
     */
    async stop() {
      await killGroup(child);
    },
  };
}
