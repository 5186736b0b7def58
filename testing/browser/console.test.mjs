// Browser tests of the keygate web console: Debian chromium driven by playwright-core,
// axe-core on every page. Run by crates/keygate-server/tests/api/browser.rs with:
//   KG_BASE, KG_LOGIN_LINK, KG_EXPIRED_LINK, KG_TOKEN (bot token of the same user),
//   KG_ADMIN_LINK, KG_ADMIN_TOKEN (an admin), KG_MOCK_URL, KG_API_KEY, KG_API_SECRET.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const axeSource = require("axe-core").source;
const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const BASE = env("KG_BASE"), LINK = env("KG_LOGIN_LINK"), EXPIRED = env("KG_EXPIRED_LINK");
const TOKEN = env("KG_TOKEN"), MOCK = env("KG_MOCK_URL");
const ADMIN_LINK = env("KG_ADMIN_LINK"), ADMIN_TOKEN = env("KG_ADMIN_TOKEN");
const API_KEY = env("KG_API_KEY"), API_SECRET = env("KG_API_SECRET");
const VAULT_PASSWORD = "correct horse battery staple 42";
const ATTACHED_KEY_ID = "gen-key-id-7f3a9c2e0001";
const SECRETS = [API_KEY, API_SECRET, VAULT_PASSWORD, TOKEN, ADMIN_TOKEN, ATTACHED_KEY_ID,
  LINK.split("/").pop(), ADMIN_LINK.split("/").pop()];
const XSS_LABEL = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`;
const SHOTS = new URL("./screenshots/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.KG_CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
let failures = 0;
const step = async (name, fn) => {
  try { await fn(); console.log(`ok   ${name}`); }
  catch (e) { failures++; console.log(`FAIL ${name}: ${e.stack || e}`); }
};
const dialogs = [];

async function check(page, name, { shot = true } = {}) {
  // No secret in HTML, DOM or storage.
  const html = await page.content();
  for (const s of SECRETS) assert.ok(!html.includes(s), `${name}: a secret appears in the page HTML`);
  const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  for (const s of SECRETS) assert.ok(!storage.includes(s), `${name}: a secret appears in browser storage`);
  assert.equal(await page.evaluate(() => window.__pwned), undefined, `${name}: injected script ran`);
  // axe-core (evaluated over CDP; the page's CSP still forbids inline script).
  await page.evaluate(axeSource);
  const res = await page.evaluate(() => axe.run(document, { resultTypes: ["violations"] }));
  const bad = res.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(" ")}`), [], `${name}: axe violations`);
  if (shot) await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
}

const api = async (path, { token = TOKEN, method = "GET", body } = {}) => {
  const r = await fetch(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
};
const csrfOf = async (p) => p.locator("input[name=csrf]").first().inputValue();
const cookieOf = async (c) => (await c.cookies()).map((k) => `${k.name}=${k.value}`).join("; ");
const noOverflow = async (p, path) => {
  await p.goto(`${BASE}${path}`);
  const wide = await p.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1
    ? [...document.querySelectorAll("main *")].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest(".scroll")).map((e) => e.tagName + (e.id ? "#" + e.id : "")).slice(0, 5)
    : null);
  assert.equal(wide, null, `${path} scrolls horizontally at 375 px: ${wide}`);
};

const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
const page = await ctx.newPage();
page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
let connId = "";

await step("expired login link does not sign in", async () => {
  const r = await page.goto(EXPIRED);
  assert.equal(r.status(), 403);
  await page.goto(`${BASE}/ui/`);
  assert.ok(page.url().endsWith("/ui/login"), page.url());
  await check(page, "login");
});

await step("login link signs in", async () => {
  await page.goto(LINK);
  await check(page, "login-link");
  await page.locator("#link-continue").click();
  await page.waitForURL(/\/ui\/$/);
  assert.ok(page.url().endsWith("/ui/"), page.url());
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  const cookies = await ctx.cookies();
  const c = cookies.find((c) => c.name === "keygate_ui");
  assert.ok(c && c.httpOnly && c.sameSite === "Strict", JSON.stringify(cookies));
  await check(page, "overview-empty");
});

await step("used login link does not sign in again", async () => {
  const other = await browser.newContext();
  const p = await other.newPage();
  const r = await p.goto(LINK);
  assert.equal(r.status(), 403);
  await p.goto(`${BASE}/ui/`);
  assert.ok(p.url().endsWith("/ui/login"));
  await other.close();
});

await step("vault setup", async () => {
  await page.goto(`${BASE}/ui/vault`);
  await page.getByLabel("New vault password").fill(VAULT_PASSWORD);
  await page.locator("#setup").click();
  await page.locator("#vault-state.ok").waitFor();
  await check(page, "vault");
});

await step("add a credential; hostile label renders as text", async () => {
  await page.goto(`${BASE}/ui/credentials`);
  await page.getByLabel("Exchange").selectOption("binance");
  await page.getByLabel("Label").fill(XSS_LABEL);
  await page.getByLabel("API key").fill(API_KEY);
  await page.getByLabel("API secret").fill(API_SECRET);
  await page.getByLabel("trade").check();
  await page.locator("#add").click();
  await page.locator(".notice").waitFor();
  const shown = await page.locator("#credentials td.label").first().textContent();
  assert.equal(shown, XSS_LABEL);
  assert.equal(await page.locator("#credentials img").count(), 0);
  assert.deepEqual(dialogs, []);
  await check(page, "credentials");
});

await step("crypto-shred needs the typed confirmation: wrong text refused, nothing shredded", async () => {
  await page.goto(`${BASE}/ui/credentials`);
  await page.getByLabel("To confirm, type").fill("shred");
  await page.locator("#shred").click();
  await page.locator("#err-confirm").waitFor();
  assert.match(await page.locator("#err-confirm").textContent(), /SHRED ALL MY SECRETS/);
  assert.match(await page.locator(".error").first().textContent(), /Nothing was shredded/);
  const { body } = await api("/v1/credentials");
  assert.equal(body.items.length, 1);
  assert.equal(body.items[0].status, "active");
  const vault = await api("/v1/vault/status");
  assert.equal(vault.body.unlocked, true);
  await check(page, "credentials-shred-refused", { shot: false });
});

let genId = "";
await step("generate a key pair: public key shown, then attach the exchange key id", async () => {
  await page.goto(`${BASE}/ui/credentials`);
  await page.locator("#generate-link").click();
  await page.getByRole("heading", { name: "Generate a key pair" }).waitFor();
  await check(page, "generate");
  await page.getByLabel("Label").fill("gen-ed25519");
  await page.locator("#generate").click();
  await page.locator("#public-key").waitFor();
  genId = page.url().split("/ui/credentials/")[1].split("?")[0];
  const pem = await page.locator("#public-key").textContent();
  assert.match(pem, /-----BEGIN PUBLIC KEY-----/);
  assert.doesNotMatch(await page.content(), /PRIVATE KEY/);
  assert.equal(await page.locator("#cred-status").textContent(), "pending");
  assert.equal(await page.locator("#copy-public-key").getAttribute("data-copy"), "public-key");
  const { body } = await api(`/v1/credentials/${genId}`);
  assert.equal(body.public_key.trim(), pem.trim());
  await check(page, "credential-generated", { shot: false });
  await page.getByLabel("API key the exchange assigned").fill(ATTACHED_KEY_ID);
  await page.locator("#attach").click();
  await page.locator(".notice").waitFor();
  assert.equal(await page.locator("#cred-status").textContent(), "active");
  await check(page, "credential-attached", { shot: false });
});

await step("connection with limits; API validation errors shown by field", async () => {
  await page.goto(`${BASE}/ui/connections`);
  await page.getByLabel("Name", { exact: true }).fill("bot-1");
  await page.getByLabel("Base URL").fill(MOCK);
  await page.locator("#l-max_daily_loss_usd").fill("lots");
  await page.locator("#create").click();
  await page.locator("#err-max_daily_loss_usd").waitFor();
  await page.locator("#l-max_daily_loss_usd").fill("");
  await page.locator("#l-max_trade_usd").fill("-5");
  await page.locator("#l-max_leverage").fill("5000");
  await page.locator("#create").click();
  await page.locator("#err-max_leverage").waitFor();
  const err = await page.locator("#err-max_trade_usd").textContent();
  assert.ok(err && err.length > 0);
  assert.equal(await page.locator("#l-max_leverage").getAttribute("aria-invalid"), "true");
  await check(page, "connections-error");
  await page.getByLabel("Name", { exact: true }).fill("bot-1");
  await page.locator("#l-max_trade_usd").fill("500");
  await page.locator("#l-max_leverage").fill("10");
  await page.locator("#l-max_requests_per_minute").fill("120");
  await page.locator("#l-allowed_symbols").fill("BTCUSDT, ETHUSDT");
  await page.locator("#scope-only").check();
  await page.locator("#scope-read").check();
  await page.locator("#scope-trade").check();
  await page.locator("#create").click();
  await page.locator("#conn-id").waitFor();
  connId = (await page.locator("#conn-id").textContent()).trim();
  assert.equal(await page.locator("#l-max_trade_usd").inputValue(), "500");
  assert.equal(await page.locator("#l-max_leverage").inputValue(), "10");
  assert.ok(await page.locator("#scope-only").isChecked());
  assert.ok(await page.locator("#scope-trade").isChecked());
  assert.ok(!(await page.locator("#scope-withdraw").isChecked()));
  const { body } = await api(`/v1/connections/${connId}`);
  assert.deepEqual(body.scopes, ["read", "trade"]);
  assert.equal(body.limits.max_leverage, "10");
  await check(page, "connection");
});

const botCall = () => fetch(`${BASE}/v1/connections/${connId}/proxy/api/v3/account`, { headers: { authorization: `Bearer ${TOKEN}` } });

await step("bot call through the gateway shows in the audit view", async () => {
  const r = await botCall();
  assert.equal(r.status, 200, await r.text());
  await page.goto(`${BASE}/ui/audit?category=gateway`);
  const rows = await page.locator("#audit tbody tr").allTextContents();
  assert.ok(rows.some((t) => t.includes("gateway")), rows.join("\n"));
  await page.locator("svg.chart").first().waitFor();
  assert.ok(await page.locator("svg.weight-chart circle").count() >= 1, "no exchange weight plotted");
  const weight = await page.locator("#weight tbody").textContent();
  assert.ok(weight.includes(XSS_LABEL), weight);
  await check(page, "audit");
});

await step("audit export downloads JSON lines", async () => {
  await page.goto(`${BASE}/ui/audit?category=gateway`);
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#export").click()]);
  const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.length >= 1);
  assert.ok(lines.every((e) => e.category === "gateway" && e.hash && "prev_hash" in e), JSON.stringify(lines[0]));
  for (const sec of SECRETS) assert.ok(!JSON.stringify(lines).includes(sec), "a secret in the export");
});

await step("key check shows exchange permissions and risks; rotate with a grace period; schedule", async () => {
  await page.goto(`${BASE}/ui/credentials`);
  await page.locator("#credentials td.label a").first().click();
  await page.locator("#keycheck").click();
  await page.locator("#key-permissions").waitFor();
  const perms = await page.locator("#key-permissions tbody").textContent();
  assert.match(perms, /trade\s*yes/);
  assert.match(perms, /withdraw\s*no/);
  assert.match(await page.locator("#key-risks").textContent(), /no IP restriction/);
  await check(page, "credential");
  await page.locator("#rot-api-key").fill(API_KEY);
  await page.locator("#rot-api-secret").fill(API_SECRET);
  await page.locator("#rot-grace").fill("1");
  await page.locator("#rotate").click();
  await page.locator(".notice").waitFor();
  assert.match(await page.locator(".notice").textContent(), /generation 2 .*1 h/);
  assert.equal(await page.locator("#rot-api-key").inputValue(), "", "a secret was echoed into the form");
  const yesterday = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
  await page.locator("#sched-interval").fill("30");
  await page.locator("#sched-next").fill(yesterday);
  await page.locator("#save-schedule").click();
  await page.locator("#schedule-state").waitFor();
  assert.match(await page.locator("#schedule-state").textContent(), /Every 30 days/);
  await check(page, "credential-rotated", { shot: false });
});

await step("rotation calendar: overdue and unscheduled credentials", async () => {
  await page.goto(`${BASE}/ui/rotation`);
  const overdue = await page.locator("#overdue").textContent();
  assert.ok(overdue.includes(XSS_LABEL), overdue);
  assert.match(await page.locator("#unscheduled").textContent(), /gen-ed25519/);
  assert.ok(await page.locator("table.month").count() === 3);
  assert.equal(await page.locator("#overdue img").count(), 0);
  await check(page, "rotation");
});

await step("webhook: create (secret shown once), send a test, delivery log row", async () => {
  const received = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => { body += c; });
    req.on("end", () => { received.push({ event: req.headers["x-keygate-event"], sig: req.headers["x-keygate-signature"], body }); res.writeHead(204).end(); });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const hookUrl = `http://127.0.0.1:${server.address().port}/hook`;
  try {
    await page.goto(`${BASE}/ui/webhooks`);
    await page.getByLabel("Endpoint URL").fill("ftp://nope.example/");
    await page.locator("#add-webhook").click();
    await page.locator("#err-wh-url").waitFor();
    await page.getByLabel("Endpoint URL").fill(hookUrl);
    await page.getByLabel("Description").fill("ops pager");
    await page.locator("#add-webhook").click();
    await page.locator("#webhook-secret").waitFor();
    const secret = (await page.locator("#webhook-secret").textContent()).trim();
    assert.match(secret, /^whsec_[0-9a-f]{64}$/);
    SECRETS.push(secret); // shown once: no page may show it again
    await page.locator("#new-webhook-link").click();
    await page.locator("#send-test").waitFor();
    const hookPage = page.url();
    await page.locator("#send-test").click();
    await page.locator(".notice").waitFor();
    // (A rotation reminder for the overdue schedule may arrive too: look for the test.)
    const testRow = page.locator("#deliveries tbody tr", { hasText: "webhook.test" });
    let status = "";
    for (let i = 0; i < 50 && status !== "delivered"; i++) {
      await page.waitForTimeout(200);
      await page.goto(hookPage); // not reload(): that would post the test again
      if (await testRow.count() === 1) status = (await testRow.locator(".delivery-status").textContent()).trim();
    }
    assert.equal(status, "delivered");
    const got = received.filter((r) => r.event === "webhook.test");
    assert.equal(got.length, 1);
    assert.match(got[0].sig, /^t=\d+,v1=[0-9a-f]{64}$/);
    assert.equal(JSON.parse(got[0].body).type, "webhook.test");
    await check(page, "webhook");
    await page.goto(`${BASE}/ui/webhooks`);
    assert.match(await page.locator("#webhooks").textContent(), /ops pager/);
    await check(page, "webhooks");
  } finally {
    server.close();
  }
});

await step("cross-origin form post is refused and changes nothing", async () => {
  const evil = await ctx.newPage();
  await evil.route("http://evil.test/**", (route) => route.fulfill({ contentType: "text/html", body:
    `<html lang="en"><title>evil</title><form id="f" method="post" action="${BASE}/ui/vault"><input name="action" value="lock"></form><script>document.getElementById("f").submit()</script></html>` }));
  const resp = evil.waitForResponse((r) => r.url() === `${BASE}/ui/vault` && r.request().method() === "POST");
  await evil.goto("http://evil.test/");
  assert.equal((await resp).status(), 403);
  await evil.close();
  await page.goto(`${BASE}/ui/vault`);
  assert.ok(await page.locator("#vault-state.ok").count() === 1, "vault was locked by a cross-origin post");
  // Even with the session cookie and a valid CSRF token, a foreign Origin is refused.
  const csrf = await page.locator("input[name=csrf]").first().inputValue();
  const cookie = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
  const r = await fetch(`${BASE}/ui/vault`, { method: "POST", redirect: "manual", headers: { cookie, origin: "http://evil.test", "content-type": "application/x-www-form-urlencoded" }, body: `csrf=${csrf}&action=lock` });
  assert.equal(r.status, 403);
  const r2 = await fetch(`${BASE}/ui/vault`, { method: "POST", redirect: "manual", headers: { cookie, origin: BASE, "content-type": "application/x-www-form-urlencoded" }, body: `csrf=wrong&action=lock` });
  assert.equal(r2.status, 403);
  await page.reload();
  assert.ok(await page.locator("#vault-state.ok").count() === 1);
});

const ADMIN_PAGES = ["/ui/admin", "/ui/admin/site-keys", "/ui/admin/integrations", "/ui/admin/credentials", "/ui/admin/settings"];

await step("non-admin gets 404 on admin pages", async () => {
  await page.goto(`${BASE}/ui/`);
  assert.equal(await page.locator('nav a[href="/ui/admin"]').count(), 0, "admin link shown to a non-admin");
  const csrf = await csrfOf(page);
  for (const p of ADMIN_PAGES) {
    const r = await page.goto(`${BASE}${p}`);
    assert.equal(r.status(), 404, p);
    assert.match(await page.locator("h1").textContent(), /Not found/);
  }
  const r = await fetch(`${BASE}/ui/admin/credentials`, { method: "POST", redirect: "manual", headers: { cookie: await cookieOf(ctx), origin: BASE, "content-type": "application/x-www-form-urlencoded" }, body: `csrf=${csrf}&action=reactivate&id=00000000-0000-0000-0000-000000000000` });
  assert.equal(r.status, 404);
  await check(page, "admin-404");
});

await step("admin pages: site keys, integrations, suspended credentials (reactivate), settings", async () => {
  const actx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const ap = await actx.newPage();
  try {
    let r = await api("/v1/credentials", { token: ADMIN_TOKEN, method: "POST", body: { exchange: "binance", label: "admin-key", api_key: API_KEY, api_secret: API_SECRET } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    r = await api(`/v1/credentials/${r.body.id}`, { token: ADMIN_TOKEN, method: "PATCH", body: { status: "suspended" } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await ap.goto(ADMIN_LINK);
    await ap.locator("#link-continue").click();
    await ap.waitForURL(/\/ui\/$/);
    await ap.locator('nav a[href="/ui/admin"]').click();
    await ap.getByRole("heading", { name: "Admin", exact: true }).waitFor();
    await check(ap, "admin");
    await ap.goto(`${BASE}/ui/admin/site-keys`);
    await check(ap, "admin-site-keys");
    await ap.goto(`${BASE}/ui/admin/integrations`);
    await check(ap, "admin-integrations");
    await ap.goto(`${BASE}/ui/admin/settings`);
    const settings = await ap.locator("#settings").textContent();
    assert.match(settings, /KEYGATE_JWT_SECRET\s*set/);
    await check(ap, "admin-settings");
    await ap.goto(`${BASE}/ui/admin/credentials`);
    assert.match(await ap.locator("#suspended").textContent(), /admin-key/);
    await check(ap, "admin-credentials");
    await ap.getByRole("button", { name: "Reactivate" }).click();
    await ap.locator(".notice").waitFor();
    await ap.locator("#no-suspended").waitFor();
  } finally {
    await actx.close();
  }
});

await step("lock the vault: next proxied call refused, overview says why", async () => {
  await page.goto(`${BASE}/ui/vault`);
  await page.locator("#lock").click();
  await page.locator("#vault-state.bad").waitFor();
  const r = await botCall();
  assert.equal(r.status, 403);
  const body = await r.json();
  assert.equal(body.code, "vault_locked");
  await page.goto(`${BASE}/ui/`);
  const state = await page.locator("#vault-state").textContent();
  assert.match(state, /locked/i);
  await check(page, "overview-locked");
});

await step("crypto-shred with the exact phrase destroys the keys", async () => {
  await page.goto(`${BASE}/ui/credentials`);
  await page.getByLabel("To confirm, type").fill("SHRED ALL MY SECRETS");
  await page.locator("#shred").click();
  await page.locator(".notice").waitFor();
  assert.match(await page.locator(".notice").textContent(), /crypto-shredded/);
  const { body } = await api("/v1/credentials");
  assert.ok(body.items.length === 2 && body.items.every((c) => c.status === "shredded"), JSON.stringify(body.items.map((c) => c.status)));
  await check(page, "credentials-shredded", { shot: false });
});

await step("narrow screen (375 px) and logout", async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  for (const p of ["/ui/credentials", `/ui/credentials/${genId}`, "/ui/credentials/generate", `/ui/connections/${connId}`, "/ui/rotation", "/ui/webhooks", "/ui/audit", "/ui/vault"]) {
    await noOverflow(page, p);
  }
  await noOverflow(page, "/ui/");
  await page.screenshot({ path: `${SHOTS}overview-375.png`, fullPage: true });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.goto(`${BASE}/ui/`);
  assert.ok(page.url().endsWith("/ui/login"));
});

await browser.close();
console.log(failures === 0 ? "all browser tests passed" : `${failures} browser test(s) failed`);
process.exit(failures === 0 ? 0 : 1);
