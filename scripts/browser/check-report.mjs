// Opens a drill report (`lifeboat drill --report DIR`: drill-<id>.html) in
// headless Chromium and prints what a person sees there as figures, read
// from the page's data-* attributes (crates/scenarios/src/drill.rs, `html`),
// then saves a full-page screenshot.
//
//   node scripts/browser/check-report.mjs file:///…/drill-ID.html SCREENSHOT.png
//
// Exit codes and the browser as scripts/browser/browser.mjs says. The
// object, stable for tests:
//
// {
//   "url": "...", "http_status": null (a file), "title": "...",
//   "drill": "ID", "passed": true, "verdict": "PASSED: ...",
//   "sources": [{ "source": "main", "kind": "postgres", "passed": true,
//                 "rto_ms": 5300, "rpo_s": 12, "visible": true,
//                 "checks": [{ "name": "pg_amcheck", "passed": true, "text": "..." }] }],
//   "script_elements": 0, "console_errors": [], "screenshot": "SCREENSHOT.png"
// }

import { withPage } from './browser.mjs';

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node check-report.mjs URL SCREENSHOT.png');
  process.exit(2);
}

await withPage(url, shot, undefined, (page) =>
  page.evaluate(() => {
    const str = (el, name) => (el && el.hasAttribute(name) ? el.getAttribute(name) : null);
    const num = (el, name) => (el && el.hasAttribute(name) && el.getAttribute(name) !== '' ? Number(el.getAttribute(name)) : null);
    const text = (el) => (el ? el.textContent.trim().replace(/\s+/g, ' ') : null);
    const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
    const body = document.body;
    return {
      title: document.title,
      drill: str(body, 'data-drill'),
      passed: str(body, 'data-passed') === 'true',
      verdict: text(document.querySelector('#verdict')),
      sources: [...document.querySelectorAll('tr[data-source]')].map((r) => {
        const name = str(r, 'data-source');
        const kind = str(r, 'data-kind');
        const list = document.querySelector(`ul[data-checks-of="${CSS.escape(name + '/' + kind)}"]`);
        return {
          source: name,
          kind,
          passed: str(r, 'data-passed') === 'true',
          rto_ms: num(r, 'data-rto-ms'),
          rpo_s: num(r, 'data-rpo-s'),
          visible: visible(r),
          checks: list
            ? [...list.querySelectorAll('li[data-check]')].map((c) => ({
                name: str(c, 'data-check'),
                passed: str(c, 'data-passed') === 'true',
                text: text(c),
              }))
            : [],
        };
      }),
      script_elements: document.querySelectorAll('script').length,
    };
  }));
