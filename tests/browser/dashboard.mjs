// End-to-end test of the dashboard in headless Chromium, as a person uses it:
// `ferry up --free-ports` in a fresh data directory, the dashboard opened from the URL table,
// a course created and an invoice requested from the page, each result awaited on the page
// (live, without reloading), the services' health pills checked, a full-page screenshot taken,
// and ferry stopped with Ctrl-C (SIGINT), which must exit 0. First every service's
// /asyncapi.json is validated against the AsyncAPI 3.0.0 schema (asyncapi.mjs).
//
//   node tests/browser/dashboard.mjs            # from the repository root, after `cargo build`
//   node tests/browser/dashboard.mjs --docs     # also a score, and the screenshot copied to docs/dashboard.png
//
// Environment: FERRY_BIN (default target/debug/ferry), CHROMIUM_BIN (default /usr/bin/chromium).
// Exits non-zero with a message on the first failure; the whole run is bounded (TOTAL_MS).
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { checkAsyncApi } from './asyncapi.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FERRY_BIN = resolve(process.env.FERRY_BIN ?? join(ROOT, 'target', 'debug', 'ferry'));
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const SCREENSHOT = join(ROOT, 'target', 'browser', 'dashboard.png');
const FAILURE_SCREENSHOT = join(ROOT, 'target', 'browser', 'failure.png');
const DOCS_SCREENSHOT = join(ROOT, 'docs', 'dashboard.png');
const UPDATE_DOCS = process.argv.includes('--docs');

const TOTAL_MS = 85_000; // the whole run
const START_MS = 30_000; // `ferry up` until its URL table
const STEP_MS = 15_000; // one page interaction or one awaited element
const RESULT_MS = 30_000; // a request until its result is on the page
const STOP_MS = 20_000; // SIGINT until exit
const LOG_TAIL_LINES = 60;

const started = Date.now();
const log = (message) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${message}`);

class Failure extends Error {}

// ---- ferry up --------------------------------------------------------------------------------

/** Starts `ferry up --free-ports`; resolves with the process, its URL table and its log tail. */
function startFerry(data) {
  // The built-in broker and SQLite files, whatever the caller's environment says.
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' };
  delete env.FERRY_BROKERS;
  delete env.DATABASE_URL;
  const child = spawn(FERRY_BIN, ['up', '--free-ports', '--data', data], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const ferry = { child, services: new Map(), startSeconds: NaN, logTail: [], exit: null };
  ferry.exited = new Promise((resolveExit) => {
    child.on('exit', (code, signal) => {
      ferry.exit = { code, signal };
      resolveExit(ferry.exit);
    });
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    ferry.logTail.push(line);
    if (ferry.logTail.length > LOG_TAIL_LINES) ferry.logTail.shift();
  });
  const table = new Promise((resolveTable, rejectTable) => {
    const timer = setTimeout(() => rejectTable(new Failure(`ferry up printed no URL table within ${START_MS / 1000} s`)), START_MS);
    child.on('error', (error) => { clearTimeout(timer); rejectTable(new Failure(`cannot run ${FERRY_BIN}: ${error.message}`)); });
    ferry.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rejectTable(new Failure(`ferry up exited (code ${code}, signal ${signal}) before printing its URL table`));
    });
    let inTable = false;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const up = /^ferry is up in ([\d.]+) s/.exec(line);
      if (up) ferry.startSeconds = Number(up[1]);
      const fields = line.trim().split(/\s+/).filter(Boolean);
      if (!inTable) {
        inTable = fields[0] === 'SERVICE';
        return;
      }
      if (fields.length === 0) {
        inTable = false;
        clearTimeout(timer);
        resolveTable(ferry);
      } else if (fields[0] !== 'broker') {
        ferry.services.set(fields[0], fields[1]);
      }
    });
  });
  return { ferry, table };
}

/** Ctrl-C; resolves with the exit code, or fails after STOP_MS. */
async function stopFerry(ferry) {
  if (ferry.exit) throw new Failure(`ferry up had already exited (code ${ferry.exit.code}, signal ${ferry.exit.signal})`);
  ferry.child.kill('SIGINT');
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`ferry up did not stop within ${STOP_MS / 1000} s of SIGINT`)), STOP_MS);
  });
  try {
    const { code, signal } = await Promise.race([ferry.exited, timeout]);
    if (code !== 0) throw new Failure(`ferry up exited with code ${code} (signal ${signal}) on SIGINT, expected 0`);
  } finally {
    clearTimeout(timer);
  }
}

// ---- the page --------------------------------------------------------------------------------

/** Waits for `locator`, failing with `what` rather than Playwright's generic timeout message. */
async function expectVisible(locator, what, timeout = STEP_MS) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    throw new Failure(`${what} did not appear within ${timeout / 1000} s`);
  }
}

/** Waits until a result line in `list` is done; fails at once when the page reports a failed request. */
async function awaitResult(page, list, what) {
  const done = page.locator(`${list} li.done`);
  const failed = page.locator(`${list} li.failed`);
  try {
    await done.or(failed).first().waitFor({ state: 'visible', timeout: RESULT_MS });
  } catch {
    const pending = await page.locator(`${list} li`).allInnerTexts();
    throw new Failure(`${what}: no result in ${list} within ${RESULT_MS / 1000} s (shown: ${JSON.stringify(pending)})`);
  }
  if (await failed.count()) {
    throw new Failure(`${what} failed on the page: ${(await failed.first().innerText()).replace(/\s+/g, ' ')}`);
  }
  return (await done.first().innerText()).replace(/\s+/g, ' ');
}

async function run(ferry, browser) {
  const dashboard = ferry.services.get('dashboard');
  if (!dashboard) throw new Failure(`no dashboard in the URL table: ${[...ferry.services.keys()].join(', ')}`);
  const url = `http://${dashboard}/`;
  log(`ferry is up in ${ferry.startSeconds} s; services: ${[...ferry.services.keys()].join(', ')}`);

  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(STEP_MS);
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') log(`page console: ${message.text()} (${message.location().url})`);
  });
  let navigations = 0;
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations += 1; });

  log(`opening ${url}`);
  await page.goto(url, { waitUntil: 'load', timeout: STEP_MS });
  // A reload would drop this marker: it proves the results below arrived without one.
  await page.evaluate(() => { window.ferryBrowserTest = 'same page'; });
  await expectVisible(page.locator('#stream-state', { hasText: /^live$/ }), 'the live stream pill (#stream-state) saying "live"');
  log('the event stream is live');

  // Services: one health pill per service of the table but the broker and the dashboard itself.
  const expected = [...ferry.services.keys()].filter((name) => name !== 'dashboard');
  for (const name of expected) {
    await expectVisible(page.locator(`#services [data-service="${name}"]`), `the health pill of ${name} in #services`);
  }
  const down = await page.locator('#services .pill.down').allInnerTexts();
  if (down.length) throw new Failure(`services shown as down: ${down.join(', ')}`);
  log(`health pills: ${expected.join(', ')}`);

  // Courses: create one; its event must reach the live table and the panel's result list.
  await page.getByRole('tab', { name: 'Courses' }).click();
  const code = `WEB-${Date.now().toString(36).toUpperCase()}`;
  await page.fill('#course-form [name=name]', 'Event-driven systems');
  await page.fill('#course-form [name=code]', code);
  const created = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/v1/courses');
  await page.click('#create-course');
  const response = await created;
  if (response.status() !== 201) throw new Failure(`POST /api/v1/courses from the page: ${response.status()} ${await response.text()}`);
  const course = await response.json();
  log(`course ${code} created with id ${course.id}`);
  const courseResult = await awaitResult(page, '#courses-results', `course ${code}`);
  if (!courseResult.includes(code) || !courseResult.includes('POST')) {
    throw new Failure(`the course result does not show ${code} and its POST event: ${courseResult}`);
  }
  log(`courses result: ${courseResult}`);
  const courseRow = page.locator('#events tbody tr')
    .filter({ has: page.locator('td:nth-child(2)', { hasText: /^test\[/ }) })
    .filter({ has: page.locator('td:nth-child(4)', { hasText: course.id }) });
  await expectVisible(courseRow, `a row of topic test[…] with key ${course.id} in the live events table`);
  log(`live events row: ${(await courseRow.first().innerText()).replace(/\s+/g, ' ')}`);

  // Invoices: request one; its result must arrive on the page.
  if (!ferry.services.has('invoice-generator')) {
    throw new Failure(`ferry up does not run invoice-generator (its table lists ${[...ferry.services.keys()].join(', ')}), so no invoice can be generated`);
  }
  await page.getByRole('tab', { name: 'Invoices & scores' }).click();
  await page.fill('#invoice-form [name=customer]', 'acme');
  await page.fill('#invoice-form [name=description]', 'Widget');
  await page.fill('#invoice-form [name=quantity]', '3');
  await page.fill('#invoice-form [name=unitPrice]', '19.99');
  await page.click('#request-invoice');
  const invoiceResult = await awaitResult(page, '#billing-results', 'the invoice request');
  if (!/invoice #\d+/.test(invoiceResult)) throw new Failure(`the invoice result shows no invoice number: ${invoiceResult}`);
  log(`billing result: ${invoiceResult}`);

  // Past results: the invoice generator's own list, through the gateway.
  await page.click('#past-billing');
  const number = invoiceResult.match(/invoice #(\d+)/)[1];
  await expectVisible(page.locator('#past-invoices tbody tr', { hasText: `#${number}` }), `invoice #${number} in the past results`, RESULT_MS);

  // For the README's picture, a score too (it counts the invoice above).
  if (UPDATE_DOCS && ferry.services.has('score-calculator')) {
    await page.click('#request-score');
    const score = page.locator('#billing-results li.done', { hasText: /score \d/ });
    await expectVisible(score, 'the score result in #billing-results', RESULT_MS);
    log(`billing result: ${(await score.first().innerText()).replace(/\s+/g, ' ')}`);
  }

  if (navigations !== 1 || (await page.evaluate(() => window.ferryBrowserTest)) !== 'same page') {
    throw new Failure(`the page navigated or reloaded (${navigations} navigations); results must arrive live`);
  }
  if (pageErrors.length) throw new Failure(`uncaught errors on the page: ${pageErrors.join(' | ')}`);

  // Screenshot of the steady state: wait (briefly, best effort) for every pill to turn ready and for
  // the topics table (refreshed every few seconds) to count the course's message.
  await page.waitForFunction(
    (count) => document.querySelectorAll('#services .pill.up').length >= count
      && [...document.querySelectorAll('#topics tbody tr')].some((tr) => tr.cells[0].textContent === 'test' && Number(tr.cells[2].textContent) > 0)
      && document.querySelectorAll('#groups tbody tr').length > 0,
    expected.length,
    { timeout: STEP_MS },
  ).catch(() => log('the page has not caught up with every service and topic; taking the screenshot anyway'));
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  log(`screenshot: ${SCREENSHOT}`);
  if (UPDATE_DOCS) {
    mkdirSync(dirname(DOCS_SCREENSHOT), { recursive: true });
    copyFileSync(SCREENSHOT, DOCS_SCREENSHOT);
    log(`copied to ${DOCS_SCREENSHOT}`);
  }
  return page;
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const data = mkdtempSync(join(tmpdir(), 'ferry-browser-'));
  const { ferry, table } = startFerry(data);
  let browser = null;
  let page = null;
  const watchdog = setTimeout(() => {
    console.error(`FAIL: the browser test did not finish within ${TOTAL_MS / 1000} s`);
    printLogTail(ferry);
    ferry.child.kill('SIGKILL');
    rmSync(data, { recursive: true, force: true });
    process.exit(1);
  }, TOTAL_MS);
  try {
    await table;
    for (const line of await checkAsyncApi(ferry.services, Failure)) log(`AsyncAPI ${line}`);
    browser = await chromium.launch({
      executablePath: CHROMIUM_BIN,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
      timeout: STEP_MS,
    });
    page = await run(ferry, browser);
    await browser.close();
    browser = null;
    await stopFerry(ferry);
    log('ferry stopped with exit code 0 on SIGINT');
    log('PASS');
    return 0;
  } catch (error) {
    console.error(`FAIL: ${error instanceof Failure ? error.message : error.stack ?? error}`);
    if (browser) {
      const pages = browser.contexts().flatMap((c) => c.pages());
      const shown = page ?? pages[0];
      if (shown) {
        mkdirSync(dirname(FAILURE_SCREENSHOT), { recursive: true });
        await shown.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true }).then(
          () => console.error(`page at the failure: ${FAILURE_SCREENSHOT}`),
          () => {},
        );
      }
    }
    printLogTail(ferry);
    return 1;
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close().catch(() => {});
    if (!ferry.exit) ferry.child.kill('SIGKILL');
    rmSync(data, { recursive: true, force: true });
  }
}

function printLogTail(ferry) {
  if (!ferry.logTail.length) return;
  console.error(`--- last ${ferry.logTail.length} lines of the log of ferry up ---`);
  for (const line of ferry.logTail) console.error(line);
}

process.exit(await main());
