// The origin's /metrics as { name: number }, for the end-to-end tests here
// and in tests/edge: each sample under its full name (`family{label="v"}`),
// and each family under its name, summed over its labels.

/** Scrapes http://<addr>/metrics (the origin's operator listener). */
export async function scrapeMetrics(addr) {
  const r = await fetch(`http://${addr}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const out = {};
  for (const line of (await r.text()).split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line.trim());
    if (!m) continue;
    const [, family, labels, value] = m;
    if (labels) out[family + labels] = Number(value);
    out[family] = (labels ? out[family] ?? 0 : 0) + Number(value);
  }
  return out;
}
