// Shared by the page checks: headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core from $LIFEBOAT_PLAYWRIGHT_DIR, default
// ${XDG_CACHE_HOME:-~/.cache}/lifeboat/playwright, installed by
// scripts/install-playwright.sh; $LIFEBOAT_CHROMIUM overrides the browser).
//
// withPage(url, shot, token, read) opens url, calls read(page) for the
// figures, saves a full-page screenshot, prints one JSON object
// {url, http_status, ...figures, console_errors, screenshot} and exits 0;
// exit 2 when playwright-core or Chromium is missing, 1 on any other failure.

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import path from 'node:path';

export async function withPage(url, shot, token, read) {
  const dir =
    process.env.LIFEBOAT_PLAYWRIGHT_DIR ||
    path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'lifeboat', 'playwright');
  let chromium;
  try {
    ({ chromium } = createRequire(path.join(dir, 'package.json'))('playwright-core'));
  } catch (e) {
    console.error(`playwright-core not found in ${dir}: run scripts/test.sh (or scripts/install-playwright.sh) to install it`);
    process.exit(2);
  }
  const executablePath = process.env.LIFEBOAT_CHROMIUM || '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    console.error(`${executablePath} not found: run scripts/test.sh (or scripts/install-playwright.sh) to install Debian's chromium`);
    process.exit(2);
  }
  const profile = mkdtempSync(path.join(tmpdir(), 'lifeboat-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
      viewport: { width: 1280, height: 900 },
      extraHTTPHeaders: token ? { Authorization: `Bearer ${token}` } : {},
      timeout: 60_000,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    const response = await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    const figures = await read(page);
    await page.screenshot({ path: shot, fullPage: true });
    const out = {
      url,
      http_status: response ? response.status() : null,
      ...figures,
      console_errors: consoleErrors,
      screenshot: shot,
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } catch (e) {
    console.error(`check: ${e && e.stack ? e.stack : e}`);
    process.exitCode = 1;
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}
