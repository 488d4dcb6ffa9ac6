// A person's walk through the worker's console in a real browser (Debian's Chromium,
// driven by playwright-core), for tests/it/console.rs: sign in, read every page,
// find a record, resolve a conflict, replay a dead letter, pause and resume a rule,
// sign out. Each page is checked for what a keyboard and a screen reader need, and
// photographed. It prints one JSON line of what it did and exits 1 on the first
// problem, saying which.
//
// Input (environment): CONSOLE_URL, CONSOLE_TOKEN (an operator's), WALK (JSON: rule,
// record, target, conflict, candidate, dead_letter), SCREENSHOTS (a folder, optional),
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const walk = JSON.parse(process.env.WALK || "{}");
const shots = process.env.SCREENSHOTS || "";
const done = [];
let current = null;

function fail(message) {
  throw new Error(message);
}

function expect(cond, message) {
  if (!cond) fail(message);
}

// What a keyboard and a screen reader need of a page: a language, one h1, every field
// labelled, every button named, every table's header cells scoped, a skip link first.
async function accessible(page, name) {
  const problems = await page.evaluate(() => {
    const out = [];
    if (!document.documentElement.lang) out.push("the page has no language");
    const h1 = document.querySelectorAll("h1");
    if (h1.length !== 1) out.push(`${h1.length} h1 headings`);
    for (const f of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
      if (!f.labels || f.labels.length === 0) out.push(`a field without a label: ${f.outerHTML}`);
    }
    for (const b of document.querySelectorAll("button")) {
      if (!b.textContent.trim()) out.push(`a button without a name: ${b.outerHTML}`);
    }
    for (const th of document.querySelectorAll("th")) {
      if (!th.getAttribute("scope")) out.push(`a header cell without a scope: ${th.textContent}`);
    }
    for (const t of document.querySelectorAll("table")) {
      if (!t.querySelector("caption")) out.push("a table without a caption");
    }
    if (document.querySelector("script")) out.push("a script on the page");
    return out;
  });
  expect(problems.length === 0, `${name}: ${problems.join("; ")}`);
  // The first Tab lands on the skip link.
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  expect(first && first.includes("Skip to"), `${name}: the first Tab lands on ${first}`);
}

async function photograph(page, name) {
  if (!shots) return;
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function visit(page, name, heading) {
  const h1 = (await page.locator("h1").textContent()).trim();
  expect(h1 === heading, `${name}: the heading is "${h1}", not "${heading}"`);
  await photograph(page, name);
  await accessible(page, name);
  done.push(name);
}

// A page of the console's navigation, as a person reaches it.
async function nav(page, name) {
  await page.getByRole("navigation", { name: "Console" }).getByRole("link", { name, exact: true }).click();
}

async function status(page) {
  return (await page.getByRole("status").textContent()).trim();
}

async function main() {
  if (shots) mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    current = page;
    page.setDefaultTimeout(20000);

    // Signing in: a page asks for a sign-in first; a wrong token is refused in words.
    await page.goto(`${base}/console`);
    expect(page.url().endsWith("/console/login"), `not sent to sign in: ${page.url()}`);
    await page.getByLabel("Token").fill("not-a-token-of-ours-0123456789");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = (await page.getByRole("alert").textContent()).trim();
    expect(alert.includes("not known"), `a wrong token says: ${alert}`);
    await visit(page, "login", "Sign in");
    await page.getByLabel("Token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`${base}/console`);
    const cookies = await context.cookies();
    const cookie = cookies.find((c) => c.name === "recordsync_console");
    expect(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `the sign-in cookie: ${JSON.stringify(cookies)}`);
    expect((await page.locator(".who").textContent()).includes("olga"), "the header does not say who is signed in");

    // The overview: health, queues, the ledger with the walk's rule.
    const ledgerRow = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: walk.rule }) });
    expect((await ledgerRow.count()) === 1, "the ledger has no row for the rule");
    expect((await page.getByText("Database: answering").count()) === 1, "the database is not shown as answering");
    await visit(page, "overview", "Overview");

    // Finding a record by the other system's id leads to its page and timeline.
    await nav(page, "Records");
    await visit(page, "records", "Find a record");
    await page.getByLabel("Record id").fill(walk.target);
    await page.getByRole("button", { name: "Find" }).click();
    await page.waitForURL(/\/console\/records\/.+\/.+/);
    const items = await page.locator(".timeline li").count();
    expect(items >= 2, `the record's timeline has ${items} steps`);
    expect((await page.getByText(`record ${walk.target}`).count()) >= 1, "the record page does not name its linked target");
    await visit(page, "record", `Record ${walk.record}`);

    // A conflict with two candidates, resolved by choosing one.
    await nav(page, "Conflicts");
    await visit(page, "conflicts", "Open conflicts");
    const card = page.locator("article").filter({ has: page.getByRole("heading", { name: `Conflict ${walk.conflict}:` }) });
    await card.getByRole("button", { name: `Link to ${walk.candidate}` }).click();
    await page.waitForURL(/done=resolved/);
    expect((await status(page)).includes("resolution is queued"), "no confirmation after resolving");

    // A dead letter: inspected, then replayed.
    await nav(page, "Dead letters");
    await visit(page, "dead-letters", "Dead letters");
    await page.getByRole("link", { name: String(walk.dead_letter), exact: true }).click();
    await visit(page, "dead-letter", `Dead letter ${walk.dead_letter}`);
    await page.getByRole("button", { name: `Replay ${walk.dead_letter}` }).click();
    await page.waitForURL(/done=replayed/);
    expect((await status(page)).includes("queued again"), "no confirmation after replaying");

    // Pausing and resuming a rule, with a reason, by keyboard.
    await nav(page, "Rules and systems");
    await visit(page, "rules", "Rules and systems");
    const row = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: walk.rule, exact: true }) }).first();
    await row.getByLabel("Why").fill("walk: checking the pause");
    await row.getByRole("button", { name: `Pause ${walk.rule}` }).focus();
    await page.keyboard.press("Enter");
    await page.waitForURL(/done=paused/);
    expect((await row.textContent()).includes("paused"), "the rule is not shown paused");
    await photograph(page, "rules-paused");
    await row.getByRole("button", { name: `Resume ${walk.rule}` }).click();
    await page.waitForURL(/done=resumed/);
    expect((await row.textContent()).includes("running"), "the rule is not shown running again");

    // Reconcile runs.
    await nav(page, "Reconcile");
    await visit(page, "reconcile", "Reconcile runs");
    expect((await page.locator("tbody tr").count()) >= 1, "no reconcile run is listed");

    // Signing out ends the sign-in.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${base}/console/login`);
    await page.goto(`${base}/console/conflicts`);
    expect(page.url().endsWith("/console/login"), "a page still opens after signing out");
    done.push("signed out");
  } catch (err) {
    // Where the walk stood: the address and the page's text, for the test's message.
    const text = await current.evaluate(() => document.body.innerText).catch(() => "");
    err.message += `\nat ${current.url()}:\n${text.slice(0, 2000)}`;
    throw err;
  } finally {
    await browser.close();
  }
}

main().then(
  () => {
    console.log(JSON.stringify({ ok: true, done }));
  },
  (err) => {
    console.log(JSON.stringify({ ok: false, done, error: err.message }));
    process.exit(1);
  },
);
