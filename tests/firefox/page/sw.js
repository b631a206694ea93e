// The service worker: reports every push event's decrypted text to the test
// server. `userVisibleOnly` subscriptions must show a notification; showing
// it may fail in a headless browser, which does not matter here.
"use strict";

const EMPTY = "\u0000<empty push message>";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function report(kind, data) {
  return fetch("/report", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ kind, from: "sw", ...data }),
  }).catch(() => {});
}

self.addEventListener("push", (event) => {
  const text = event.data ? event.data.text() : EMPTY;
  const notify = self.registration
    .showNotification("push e2e", { body: text.slice(0, 100), tag: "e2e" })
    .catch(() => {});
  event.waitUntil(Promise.all([report("push", { text }), notify]));
});

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(report("pushsubscriptionchange", {}));
});
