// Loads rcfd's live page in headless Chromium (driven by playwright-core, with the
// Debian chromium, no browser download) and checks what a user sees: every entity's
// chart has a score line with points, the simulator's flagged points are marked, the
// latest-anomalies table lists one, nothing was fetched from another host and the page
// raised no error. Saves a screenshot. Usage: node live_page.cjs URL SCREENSHOT.png
// (CommonJS, so that NODE_PATH finds playwright-core where scripts/test.sh installed it.)
const { chromium } = require("playwright-core");

async function main() {

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node live_page.cjs URL SCREENSHOT.png");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.RCFD_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  const origin = new URL(url).origin;
  const foreign = [];
  const errors = [];
  page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) foreign.push(r.url()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  // The page polls every 2 s; wait until a refresh has drawn charts and an anomaly row.
  await page.waitForFunction(
    () => document.querySelectorAll("#charts svg path.score").length > 0
      && document.querySelectorAll("#charts svg circle.flag").length > 0
      && document.querySelectorAll("#anomalies tr").length > 1,
    null,
    { timeout: 60_000 },
  );
  const seen = await page.evaluate(() => ({
    charts: document.querySelectorAll("#charts svg path.score").length,
    flags: document.querySelectorAll("#charts svg circle.flag").length,
    pathLengths: [...document.querySelectorAll("#charts svg path.score")].map((p) => (p.getAttribute("d") || "").split("L").length),
    anomalyRows: [...document.querySelectorAll("#anomalies tr")].slice(1).map((r) => r.textContent),
    status: document.getElementById("status").textContent,
  }));
  await page.screenshot({ path: screenshot, fullPage: true });
  const problems = [];
  if (seen.pathLengths.some((n) => n < 10)) problems.push(`a chart has fewer than 10 points: ${seen.pathLengths}`);
  if (!seen.anomalyRows.some((r) => r.includes("Demo"))) problems.push(`no simulator anomaly listed: ${seen.anomalyRows}`);
  if (!seen.status.startsWith("updated")) problems.push(`status: ${seen.status}`);
  if (foreign.length) problems.push(`fetched from elsewhere: ${foreign}`);
  if (errors.length) problems.push(`page errors: ${errors}`);
  console.log(JSON.stringify({ ...seen, problems }));
  process.exitCode = problems.length ? 1 : 0;
} finally {
  await browser.close();
}
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
