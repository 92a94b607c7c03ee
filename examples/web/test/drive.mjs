// Drives the page in Debian's headless Chromium (puppeteer-core, no browser download) for the
// tests: node test/drive.mjs URL OUT_DIR [SPEC_JSON]. Loads the page, waits for the first drawn
// rollout, runs what SPEC asks ({"generate": [{x0, steps, form}], "time": [{x0, steps, form}],
// "sample": [{prompt, inputs, steps, strategy, temperature, topK, topP, seed, form}]}),
// takes a screenshot (OUT_DIR/page.png) and prints one JSON object on stdout (with the chart's
// axes, ticks, labels and legend as the page drew them, and the token view's title and legend).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [url, outDir, specText] = process.argv.slice(2);
const spec = JSON.parse(specText || "{}");
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "rnn-web-chromium-"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  userDataDir: profile,
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
const logs = [];
try {
  const page = await browser.newPage();
  page.on("console", (message) => logs.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));
  await page.setViewport({ width: 960, height: 760 });
  await page.goto(url, { waitUntil: "load", timeout: 60000 });
  await page.waitForFunction(() => window.rnn && (window.rnn.timings.firstDrawMs || window.rnn.error), {
    timeout: 60000,
  });
  await page.evaluate(() => window.rnn.ready);
  const result = await page.evaluate(async (spec) => {
    const rnn = window.rnn;
    const out = {
      error: rnn.error,
      status: document.getElementById("status").textContent,
      statusClass: document.getElementById("status").className,
      timings: rnn.timings,
      selfCheck: rnn.selfCheck,
      checkedFiles: rnn.checkedFiles,
      form: document.getElementById("form").textContent,
      chart: rnn.chart || null, // what the chart drew (chart.js), as the canvas's data-chart says
      chartData: document.getElementById("plot").dataset.chart || null,
      chartLabel: document.getElementById("plot").getAttribute("aria-label"),
      chartShown: !document.getElementById("plot").hidden,
      textKey: document.getElementById("text-key").hidden ? null : document.getElementById("text-key").innerText,
      generated: [],
      timed: [],
      sampled: [],
      firstSample: rnn.lastSample || null,
    };
    if (!rnn.error) {
      for (const call of spec.generate || []) out.generated.push(await rnn.generate(call));
      for (const call of spec.time || []) out.timed.push(await rnn.time(call));
      for (const call of spec.sample || []) out.sampled.push(await rnn.sample(call));
    }
    return out;
  }, spec);
  await page.screenshot({ path: path.join(outDir, "page.png") });
  result.logs = logs;
  process.stdout.write(JSON.stringify(result) + "\n");
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
