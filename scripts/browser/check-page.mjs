// Opens lifeboat's status page in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) and prints what a person
// would see there as figures, read from the page's data-* attributes
// (crates/agent/src/page.rs lists them), then saves a full-page screenshot.
//
//   node scripts/browser/check-page.mjs URL SCREENSHOT.png [TOKEN]
//
// TOKEN is sent as `Authorization: Bearer TOKEN`. playwright-core is loaded
// from $LIFEBOAT_PLAYWRIGHT_DIR (default ${XDG_CACHE_HOME:-~/.cache}/
// lifeboat/playwright), where scripts/install-playwright.sh (run by
// scripts/test.sh) puts it; $LIFEBOAT_CHROMIUM overrides /usr/bin/chromium.
//
// Exit 0 and one JSON object on stdout once the page loaded (whatever its
// HTTP status); exit 2 when playwright-core or Chromium is missing, 1 on
// any other failure (message on stderr). The object, stable for tests:
//
// {
//   "url": "...", "http_status": 200, "title": "...",
//   "generated": "RFC 3339", "hostname": "...", "version": "...",
//   "repository_up": true,
//   "headline": "2 sources need attention", "attention": 2,
//   "alerts": [{ "name": "LifeboatBackupFailed", "severity": "critical",
//                "source": "main", "since": "RFC 3339", "text": "..." }],
//   "sources": [{ "source": "postgres/main", "kind": "postgres", "name": "main",
//                 "health": "green", "badge": "Protected", "reason": "...",
//                 "rpo_seconds": 90000,
//                 "age_seconds": 11520, "size_bytes": 1288490188,   // null without a good backup
//                 "stored_bytes": ..., "duration_seconds": ..., "backup_type": "full",
//                 "backup_time": "RFC 3339", "next_run": "RFC 3339" | null,
//                 "wal_age_seconds": 40 | null, "wal_lag_seconds": 2.5 | null,
//                 "history_points": 60, "alerts": ["LifeboatBackupFailed"],
//                 "chart": { "points": 60, "width": 1000, "height": 240, "marks": 120 } | null,
//                 "chart_empty": false }],
//   "schedule": [{ "job": "postgres.main.full", "next_run": "RFC 3339" | null, "running": false }],
//   "log": [{ "job": "postgres.main.full", "outcome": "failed", "started": "RFC 3339",
//             "duration_seconds": 12.5, "error": "..." | null }],
//   "script_elements": 0,        // <script> elements in the DOM (the page has none)
//   "console_errors": [],         // console errors and CSP violations, as text
//   "page_size": { "width": 1280, "height": 2400 },
//   "screenshot": "SCREENSHOT.png"
// }
//
// "chart" is the SVG's rendered bounding box: width and height are > 0 only
// when Chromium really laid it out; "marks" counts bars and points with a
// non-empty box. Numbers are the attributes read with Number().

import { withPage } from './browser.mjs';

const [url, shot, token] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node check-page.mjs URL SCREENSHOT.png [TOKEN]');
  process.exit(2);
}

await withPage(url, shot, token, (page) =>
  page.evaluate(() => {
    const num = (el, name) => (el && el.hasAttribute(name) ? Number(el.getAttribute(name)) : null);
    const str = (el, name) => (el && el.hasAttribute(name) ? el.getAttribute(name) : null);
    const text = (el) => (el ? el.textContent.trim().replace(/\s+/g, ' ') : null);
    const box = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
    const body = document.body;
    const h1 = document.querySelector('[data-headline]');
    return {
      title: document.title,
      generated: str(body, 'data-generated'),
      hostname: str(body, 'data-hostname'),
      version: str(body, 'data-version'),
      repository_up: str(body, 'data-repository-up') === 'true',
      headline: text(h1),
      attention: num(h1, 'data-attention'),
      alerts: [...document.querySelectorAll('[data-alert]')].map((a) => ({
        name: str(a, 'data-alert'),
        severity: str(a, 'data-severity'),
        source: str(a, 'data-alert-source'),
        since: str(a, 'data-since'),
        text: text(a),
      })),
      sources: [...document.querySelectorAll('section[data-source]')].map((s) => {
        const svg = s.querySelector('svg[data-chart]');
        const r = svg ? svg.getBoundingClientRect() : null;
        return {
          source: str(s, 'data-source'),
          kind: str(s, 'data-kind'),
          name: str(s, 'data-name'),
          health: str(s, 'data-health'),
          badge: text(s.querySelector('.badge')),
          reason: text(s.querySelector('.reason')),
          rpo_seconds: num(s, 'data-rpo-seconds'),
          age_seconds: num(s, 'data-age-seconds'),
          size_bytes: num(s, 'data-size-bytes'),
          stored_bytes: num(s, 'data-stored-bytes'),
          duration_seconds: num(s, 'data-duration-seconds'),
          backup_type: str(s, 'data-backup-type'),
          backup_time: str(s, 'data-backup-time'),
          next_run: str(s, 'data-next-run'),
          wal_age_seconds: num(s, 'data-wal-age-seconds'),
          wal_lag_seconds: num(s, 'data-wal-lag-seconds'),
          history_points: num(s, 'data-history-points'),
          alerts: [...s.querySelectorAll('[data-source-alert]')].map((a) => str(a, 'data-source-alert')),
          chart: svg
            ? {
                points: num(svg, 'data-points'),
                width: r.width,
                height: r.height,
                marks: [...svg.querySelectorAll('rect, circle')].filter(box).length,
              }
            : null,
          chart_empty: s.querySelector('[data-chart-empty]') !== null,
        };
      }),
      schedule: [...document.querySelectorAll('[data-scheduled-job]')].map((j) => ({
        job: str(j, 'data-scheduled-job'),
        next_run: str(j, 'data-next-run'),
        running: str(j, 'data-running') === 'true',
      })),
      log: [...document.querySelectorAll('tr[data-job-outcome]')].map((r) => ({
        job: str(r, 'data-job'),
        outcome: str(r, 'data-job-outcome'),
        started: str(r, 'data-started'),
        duration_seconds: num(r, 'data-duration-seconds'),
        error: r.querySelector('[data-job-error]') ? r.querySelector('[data-job-error]').textContent : null,
      })),
      script_elements: document.querySelectorAll('script').length,
      page_size: { width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight },
    };
  }));
