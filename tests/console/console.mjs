// Drives the card issuing console in Debian's Chromium with an operator client certificate:
// sign in, find a professional, enrol a card in the simulated reader, follow the progress, see
// the two certificates, suspend the card and see it suspended; then Swagger UI renders the
// API's generated OpenAPI document. A screenshot is kept for each step. Exit status 0 and a
// last line "console e2e: ok ..." when everything was seen.
//
// Environment:
//   CONSOLE_URL          https://127.0.0.1:<port> (the appliance's mutual-TLS listener)
//   CONSOLE_CERT         operator certificate (PEM)
//   CONSOLE_KEY          operator private key (PEM)
//   CONSOLE_OPERATOR     operator name the console must show
//   CONSOLE_READER       PC/SC reader holding the blank card
//   CONSOLE_SEARCH       search text that finds the professional
//   CONSOLE_IDNAT        the professional's IdNat_PS
//   CONSOLE_STRUCTURE    structure identifier of the activity to enrol
//   CONSOLE_SCREENSHOTS  directory for the screenshots
//   CONSOLE_CHROMIUM     browser executable (default /usr/bin/chromium)
//   PLAYWRIGHT_CORE      directory of the playwright-core package (default: the repository's
//                        .peers/node/node_modules/playwright-core)

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`console e2e: ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const url = env('CONSOLE_URL').replace(/\/$/, '');
const certPath = env('CONSOLE_CERT');
const keyPath = env('CONSOLE_KEY');
const operator = env('CONSOLE_OPERATOR');
const reader = env('CONSOLE_READER');
const search = env('CONSOLE_SEARCH');
const idnat = env('CONSOLE_IDNAT');
const structure = env('CONSOLE_STRUCTURE');
const shots = env('CONSOLE_SCREENSHOTS');
const chromiumPath = process.env.CONSOLE_CHROMIUM || '/usr/bin/chromium';
const pwDir = process.env.PLAYWRIGHT_CORE
  || fileURLToPath(new URL('../../.peers/node/node_modules/playwright-core', import.meta.url));

const require = createRequire(import.meta.url);
const { chromium } = require(pwDir);

mkdirSync(shots, { recursive: true });

let shotNo = 0;
async function shot(page, name) {
  shotNo += 1;
  const file = join(shots, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const text = async (page, sel) => ((await page.textContent(sel)) || '').trim();

// Snapshot mode: CONSOLE_SNAPSHOTS="name=/path;name=/path" opens each page, checks that it
// answers 200 for the operator without a browser error, and keeps a screenshot (numbered from
// CONSOLE_SNAPSHOT_FIRST + 1); the enrolment walk is skipped.
const snapshots = (process.env.CONSOLE_SNAPSHOTS || '').split(';').filter(Boolean)
  .map((s) => { const i = s.indexOf('='); return [s.slice(0, i), s.slice(i + 1)]; });

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
let failed = false;
let page;
try {
  const context = await browser.newContext({
    clientCertificates: [{ origin: url, certPath, keyPath }],
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 900 },
  });
  page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  if (snapshots.length > 0) {
    shotNo = Number(process.env.CONSOLE_SNAPSHOT_FIRST || '0');
    for (const [name, path] of snapshots) {
      const r = await page.goto(`${url}${path}`);
      check(r.status() === 200, `${path} answers 200 (got ${r.status()})`);
      check((await text(page, '#operator-name')) === operator, `${path} shows operator '${operator}'`);
      await shot(page, name);
    }
    check(consoleErrors.length === 0, `no error in the browser console (${consoleErrors.join(' | ')})`);
    console.log(`console snapshots: ok ${snapshots.length}`);
    await browser.close();
    process.exit(0);
  }

  // 1. Sign in: the TLS client certificate is the credential; the home shows who we are.
  const home = await page.goto(`${url}/console/`);
  check(home.status() === 200, `console home answers 200 (got ${home.status()})`);
  check((await text(page, '#operator-name')) === operator, `home shows operator '${operator}'`);
  const headers = home.headers();
  check((headers['content-security-policy'] || '').includes("default-src 'self'"), 'CSP default-src self');
  check(headers['x-frame-options'] === 'DENY', 'X-Frame-Options DENY');
  check((await page.locator('.readers li', { hasText: reader }).count()) === 1, `home lists reader '${reader}'`);
  await shot(page, 'home');

  // 2. Find the professional.
  await page.fill('#q', search);
  await Promise.all([page.waitForURL(/\/console\/professionals\?/), page.click('form.search button[type=submit]')]);
  check((await page.locator('table.results tbody tr').count()) >= 1, `search '${search}' finds at least one professional`);
  await shot(page, 'search');
  const row = page.locator('table.results tbody tr', { hasText: idnat });
  check((await row.count()) === 1, `results contain IdNat_PS ${idnat}`);
  await Promise.all([page.waitForURL(/\/console\/professionals\/[^?]+$/), row.locator('a').first().click()]);
  check((await text(page, '#idnat')) === idnat, 'professional page shows the IdNat_PS');
  await shot(page, 'professional');

  // 3. Enrol a card for the activity, in the simulated reader.
  const enrolLink = page.locator(`a[href*="/enrol?activity=${encodeURIComponent(structure)}"]`);
  check((await enrolLink.count()) === 1, `an "Enrol a card" link for activity ${structure}`);
  await Promise.all([page.waitForURL(/\/enrol\?/), enrolLink.click()]);
  await page.check(`input[name=structure_id][value="${structure}"]`);
  await page.check(`input[name=reader][value="${reader}"]`);
  await shot(page, 'enrol-form');
  await Promise.all([page.waitForURL(/\/console\/jobs\/[0-9a-z._-]+$/), page.click('#enrol-form button[type=submit]')]);
  const jobUrl = page.url();
  console.log(`job page ${jobUrl}`);
  const stepStates = () => page.$$eval('ol.steps li[data-step]',
    (lis) => lis.map((li) => `${li.dataset.step}=${li.className.replace('step step-', '')}`));
  const first = await stepStates();
  check(first.length === 10, 'the job page lists the ten enrolment steps');
  console.log(`first view of the steps: ${first.join(' ')}`);
  await shot(page, 'progress');

  // 4. Progress: the page follows the steps (script polling, or reload without script) until
  // it shows the outcome.
  const seen = new Set(first);
  const deadline = Date.now() + 60000;
  for (;;) {
    const h1 = await text(page, 'h1').catch(() => '');
    if (h1 === 'Card enrolled' || h1 === 'Enrolment failed') break;
    (await stepStates().catch(() => [])).forEach((s) => seen.add(s));
    if (Date.now() > deadline) throw new Error('enrolment did not finish within 60 s');
    await page.waitForTimeout(50);
  }
  console.log(`step states seen while running: ${[...seen].join(' ')}`);
  const h1 = await text(page, 'h1');
  if (h1 !== 'Card enrolled') {
    await shot(page, 'enrolment-failed');
    throw new Error(`enrolment failed: ${await text(page, '.notice')}`);
  }
  const steps = await page.$$eval('ol.steps li[data-step]', (lis) => lis.map((li) => [li.dataset.step, li.className]));
  check(steps.length === 10, 'ten enrolment steps listed');
  check(steps.every(([, c]) => /step-(done|skipped)/.test(c)), 'every step done or skipped');
  check(steps.filter(([, c]) => c.includes('step-done')).length >= 8, 'at least eight steps done');
  const certRows = page.locator('#card-certificates tbody tr');
  check((await certRows.count()) === 2, 'the enrolled card shows two certificates');
  const certText = await page.textContent('#card-certificates');
  check(certText.includes('cps-auth') && certText.includes('cps-sign'), 'cps-auth and cps-sign certificates');
  const pin = await text(page, '#pin');
  const puk = await text(page, '#puk');
  check(/^[0-9]{6,8}$/.test(pin), 'the PIN mailer shows a PIN');
  check(/^[0-9]{8}$/.test(puk), 'the PIN mailer shows a PUK');
  const serial = await text(page, '#card-link');
  // For the harness, which goes on to use the card with these codes.
  console.log(`card codes: serial=${serial} pin=${pin} puk=${puk}`);
  await shot(page, 'enrolled');

  // Printed, the page is the PIN mailer alone.
  await page.emulateMedia({ media: 'print' });
  check(await page.isVisible('.mailer-sheet'), 'print layout shows the PIN mailer');
  check(!(await page.isVisible('#card-certificates')), 'print layout hides the rest of the page');
  await shot(page, 'pin-mailer-print');
  await page.emulateMedia({ media: 'screen' });

  // Shown once: opening the page again no longer shows the codes.
  await page.goto(jobUrl);
  check((await page.locator('#pin').count()) === 0, 'the PIN is not shown a second time');
  check((await page.textContent('main')).includes('shown once'), 'the page says the codes were shown once');

  // 5. The card page: both certificates valid at the CA.
  await Promise.all([page.waitForURL(/\/console\/cards\//), page.click('#card-link')]);
  check((await page.getAttribute('#card-status', 'data-status')) === 'active', `card ${serial} is active`);
  const valid = await page.$$eval('#certificates td.cert-status', (tds) => tds.map((td) => td.textContent.trim()));
  check(valid.length === 2 && valid.every((s) => s === 'valid'), `both certificates valid at the CA (${valid.join(', ')})`);
  await shot(page, 'card');

  // 6. Suspend it.
  await Promise.all([page.waitForURL(/done=suspended/), page.click('#suspend-form button[type=submit]')]);
  check((await page.getAttribute('#card-status', 'data-status')) === 'suspended', 'the card is suspended');
  const held = await page.$$eval('#certificates td.cert-status', (tds) => tds.map((td) => td.textContent.trim()));
  check(held.length === 2 && held.every((s) => s === 'on hold'), `both certificates on hold (${held.join(', ')})`);
  check((await text(page, '.notice.success')).includes('suspended'), 'a notice says the card is suspended');
  check((await page.locator('#resume-form').count()) === 1, 'the card can be resumed');
  await shot(page, 'suspended');

  // 7. The API's documentation: Swagger UI (served from the binary) renders the generated
  // OpenAPI document, operations of every part of the API listed.
  const docs = await page.goto(`${url}/api/docs/`);
  check(docs.status() === 200, `/api/docs/ answers 200 (got ${docs.status()})`);
  await page.waitForSelector('.opblock-summary-path', { timeout: 30000 });
  check((await text(page, '.info .title')).startsWith('cps-trust API'), 'Swagger UI shows the API title');
  const ops = await page.$$eval('.opblock',
    (els) => els.map((el) => {
      const m = el.querySelector('.opblock-summary-method');
      const p = el.querySelector('.opblock-summary-path');
      return `${m ? m.textContent.trim() : '?'} ${p ? (p.getAttribute('data-path') || p.textContent.trim()) : '?'}`;
    }));
  console.log(`Swagger UI lists ${ops.length} operations`);
  for (const op of ['POST /api/v1/login', 'POST /api/v1/login/challenge', 'POST /api/v1/xua/validate',
    'GET /api/v1/cards/{serial}', 'POST /api/v1/cards/{serial}/{action}', 'POST /api/v1/cards/enrol',
    'GET /api/v1/professionals', 'GET /api/v1/certificates', 'GET /api/v1/audit/events']) {
    check(ops.includes(op), `Swagger UI lists ${op}`);
  }
  check(ops.length >= 28, `Swagger UI lists every operation (${ops.length})`);
  // An operation opens with its schemas (the login's answer and its refusal body).
  const login = page.locator('.opblock', { has: page.locator('.opblock-summary-path[data-path="/api/v1/login"]') });
  await login.locator('.opblock-summary').first().click();
  await page.waitForSelector('.opblock.is-open .responses-wrapper', { timeout: 10000 });
  const opened = await login.first().textContent();
  check(opened.includes('200') && opened.includes('401') && opened.includes('assertion_id'),
    'the login operation shows its answer (with its fields) and its refusal');
  check((await page.locator('.models, section.models').count()) >= 1, 'Swagger UI lists the schemas');
  // (OpenAPI 3.1: Swagger UI draws the schemas with its JSON Schema 2020-12 components.)
  const schemas = await page.$$eval('section.models .json-schema-2020-12__title',
    (els) => els.map((el) => el.textContent.trim()));
  check(schemas.includes('LoginResult') && schemas.includes('ErrorBody') && schemas.includes('Card'),
    `Swagger UI lists the schemas LoginResult, ErrorBody, Card (${schemas.length} schemas)`);
  await shot(page, 'api-docs');

  check(consoleErrors.length === 0, `no error in the browser console (${consoleErrors.join(' | ')})`);
  console.log(`console e2e: ok card=${serial} screenshots=${shots}`);
} catch (e) {
  failed = true;
  console.error(`console e2e: FAILED: ${e && e.stack ? e.stack : e}`);
  if (page) await shot(page, 'failure').catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
