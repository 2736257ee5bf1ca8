// A person in a real browser, for the end-to-end tests: headless Chromium (Debian's,
// /usr/bin/chromium or $CHROMIUM) driven by playwright-core through the DevTools protocol.
//
//   node person.mjs < plan.json      prints the outcome as JSON on stdout
//
// The plan: {"visits": [visit, ...]}, one browser (one set of cookies) for all of them, in
// order. A visit:
//
//   {"url": "...",                    where the person goes
//    "stop_at": "http://127.0.0.1:PORT/cb",   the application's redirect URI: the visit
//                                     ends when the browser is sent there (not loaded)
//    "login": "alice@example.com",    typed into the identity provider's sign-in page
//    "decision": "approve" | "deny",  on D2's consent page
//    "uncheck": ["scope-or-tool", ...],  unchecked there first
//    "withdraw": true}                on D2's consents page: withdraw the first consent
//
// Each visit's outcome: {"redirected": URL or null, "consent": {"agent", "host", "scopes",
// "tools", "heading"} or null, "pages": [{"url", "title", "status", "text"}, ...]}, the
// pages being every D2 or provider page the person saw, in order.
import { chromium } from 'playwright-core';

const MAX_PAGES = 20;

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
    process.stdin.on('error', reject);
  });
}

async function checkboxValues(page, name) {
  return page.$$eval(`input[type=checkbox][name=${name}]`, (boxes) => boxes.map((b) => b.value));
}

async function visit(context, plan) {
  const page = await context.newPage();
  const outcome = { redirected: null, consent: null, pages: [] };
  let lastStatus = null;
  page.on('response', (response) => {
    if (response.request().isNavigationRequest() && response.request().frame() === page.mainFrame()) {
      lastStatus = response.status();
    }
  });
  // The application's redirect URI is not loaded (nothing listens there): the visit ends
  // when the browser is sent there. Routes do not see redirects, requests do.
  let arrived;
  const arrival = new Promise((resolve) => { arrived = resolve; });
  page.on('request', (request) => {
    if (outcome.redirected === null && request.url().startsWith(plan.stop_at)) {
      outcome.redirected = request.url();
      arrived();
    }
  });

  // Clicking only dispatches the click: what counts is the next document of the page
  // (loaded), or the arrival at the application's redirect URI (a navigation that ends
  // there may reject as it is replaced). Waiting for the click alone would read the page
  // the person is leaving, and close it before its form is answered.
  const settled = async (act) => {
    const navigated = page.waitForEvent('framenavigated', {
      predicate: (frame) => frame === page.mainFrame(),
    });
    await Promise.race([
      Promise.all([navigated, act()]).catch((error) => {
        if (outcome.redirected === null) throw error;
      }),
      arrival,
    ]);
    await page.waitForLoadState('load').catch(() => {});
  };

  await settled(() => page.goto(plan.url));
  for (let step = 0; step < MAX_PAGES && outcome.redirected === null; step += 1) {
    outcome.pages.push({
      url: page.url(),
      title: await page.title(),
      status: lastStatus,
      text: (await page.innerText('body').catch(() => '')).slice(0, 2000),
    });
    if (await page.$('input[name=login]')) {
      await page.fill('input[name=login]', plan.login ?? 'nobody@example.com');
      await page.fill('input[name=password]', 'any password');
      await settled(() => page.click('button[type=submit]'));
    } else if (await page.$('#approve')) {
      outcome.consent = {
        heading: await page.innerText('h1'),
        agent: await page.innerText('#agent'),
        host: await page.innerText('#redirect-host'),
        scopes: await checkboxValues(page, 'scope'),
        tools: await checkboxValues(page, 'tool'),
      };
      for (const value of plan.uncheck ?? []) {
        await page.uncheck(`input[type=checkbox][value="${value}"]`);
      }
      const button = plan.decision === 'deny' ? '#deny' : '#approve';
      await settled(() => page.click(button));
    } else if (plan.withdraw && (await page.$('button[id^=withdraw-]'))) {
      plan.withdraw = false;
      await settled(() => page.click('button[id^=withdraw-]'));
    } else {
      break;
    }
  }
  await page.close();
  return outcome;
}

const plan = JSON.parse(await readStdin());
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const context = await browser.newContext();
  const outcomes = [];
  for (const step of plan.visits) {
    outcomes.push(await visit(context, step));
  }
  process.stdout.write(JSON.stringify({ visits: outcomes }));
} finally {
  await browser.close();
}
