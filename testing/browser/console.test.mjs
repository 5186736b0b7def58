// Browser tests of the keygate web console: Debian chromium driven by playwright-core,
// axe-core on every page. Run by crates/keygate-server/tests/api/browser.rs with:
//   KG_BASE, KG_LOGIN_LINK, KG_EXPIRED_LINK, KG_TOKEN (bot token of the same user),
//   KG_MOCK_URL, KG_API_KEY, KG_API_SECRET.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const axeSource = require("axe-core").source;
const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const BASE = env("KG_BASE"), LINK = env("KG_LOGIN_LINK"), EXPIRED = env("KG_EXPIRED_LINK");
const TOKEN = env("KG_TOKEN"), MOCK = env("KG_MOCK_URL");
const API_KEY = env("KG_API_KEY"), API_SECRET = env("KG_API_SECRET");
const VAULT_PASSWORD = "correct horse battery staple 42";
const SECRETS = [API_KEY, API_SECRET, VAULT_PASSWORD, TOKEN, LINK.split("/").pop()];
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

async function check(page, name) {
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
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
}

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

await step("connection with limits; API validation errors shown by field", async () => {
  await page.goto(`${BASE}/ui/connections`);
  await page.getByLabel("Name", { exact: true }).fill("bot-1");
  await page.getByLabel("Base URL").fill(MOCK);
  await page.locator("#l-max_trade_usd").fill("-5");
  await page.locator("#create").click();
  await page.locator(".field-error").first().waitFor();
  const err = await page.locator("#err-max_trade_usd, #err-limits").first().textContent();
  assert.ok(err && err.length > 0);
  await check(page, "connections-error");
  await page.getByLabel("Name", { exact: true }).fill("bot-1");
  await page.locator("#l-max_trade_usd").fill("500");
  await page.locator("#l-max_requests_per_minute").fill("120");
  await page.locator("#l-allowed_symbols").fill("BTCUSDT, ETHUSDT");
  await page.locator("#create").click();
  await page.locator("#conn-id").waitFor();
  connId = (await page.locator("#conn-id").textContent()).trim();
  assert.equal(await page.locator("#l-max_trade_usd").inputValue(), "500");
  await check(page, "connection");
});

const botCall = () => fetch(`${BASE}/v1/connections/${connId}/proxy/api/v3/account`, { headers: { authorization: `Bearer ${TOKEN}` } });

await step("bot call through the gateway shows in the audit view", async () => {
  const r = await botCall();
  assert.equal(r.status, 200, await r.text());
  await page.goto(`${BASE}/ui/audit?category=gateway`);
  const rows = await page.locator("#audit tbody tr").allTextContents();
  assert.ok(rows.some((t) => t.includes("gateway")), rows.join("\n"));
  await page.locator("svg.chart").waitFor();
  await check(page, "audit");
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

await step("non-admin gets 404 on admin pages", async () => {
  const r = await page.goto(`${BASE}/ui/admin/site-keys`);
  assert.equal(r.status(), 404);
  await check(page, "admin-404");
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

await step("narrow screen (375 px) and logout", async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto(`${BASE}/ui/`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  assert.equal(overflow, false, "page scrolls horizontally at 375 px");
  await page.screenshot({ path: `${SHOTS}overview-375.png`, fullPage: true });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.goto(`${BASE}/ui/`);
  assert.ok(page.url().endsWith("/ui/login"));
});

await browser.close();
console.log(failures === 0 ? "all browser tests passed" : `${failures} browser test(s) failed`);
process.exit(failures === 0 ? 0 : 1);
