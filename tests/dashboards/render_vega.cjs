// Renders Vega-Lite (or Vega) specs to PNG in Node, without a browser: vega builds the
// scene and its SVG, resvg rasterises the SVG. A spec whose data comes from OpenSearch
// (`data.url`) is given the real response of that query, read at its
// `data.format.property` as OpenSearch Dashboards does.
//
// Usage: node render_vega.cjs JOBS.json
//   JOBS.json: {"font": "DejaVuSans.ttf", "jobs": [{"name", "spec", "response"?, "png"}]}
// Prints one JSON line per job: marks counted by type in the scene (role "mark" only, so
// axes and legends are left out), the image size, and how much the pixels vary.
// (CommonJS, so that NODE_PATH finds the packages where scripts/test.sh installed them.)
const fs = require("fs");
const vega = require("vega");
const vl = require("vega-lite");
const { Resvg } = require("@resvg/resvg-js");

function property(value, path) {
  return path.split(".").reduce((v, key) => (v == null ? undefined : v[key]), value);
}

// Items per mark type of the marks that draw data (not axes, legends or titles).
function countMarks(node, counts) {
  if (node.marktype && node.role === "mark") {
    counts[node.marktype] = (counts[node.marktype] || 0) + node.items.length;
  }
  for (const item of node.items || []) {
    countMarks(item, counts);
  }
  return counts;
}

async function render(job, font) {
  const spec = JSON.parse(JSON.stringify(job.spec));
  if (job.response !== undefined) {
    const data = spec.data;
    const values = data.format && data.format.property ? property(job.response, data.format.property) : job.response;
    if (!Array.isArray(values)) throw new Error(`${job.name}: ${data.format && data.format.property} is not a list`);
    spec.data = { values };
  }
  const isLite = String(spec.$schema || "").includes("vega-lite");
  const compiled = isLite ? vl.compile(spec).spec : spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  await view.runAsync();
  const marks = countMarks(view.scenegraph().root, {});
  const svg = await view.toSVG();
  view.finalize();
  const resvg = new Resvg(svg, {
    background: "white",
    fitTo: { mode: "zoom", value: 1.5 },
    font: { fontFiles: [font], loadSystemFonts: false, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
  });
  const image = resvg.render();
  const pixels = image.pixels;
  let sum = 0, sumSq = 0, nonWhite = 0;
  const n = pixels.length / 4;
  for (let i = 0; i < pixels.length; i += 4) {
    const y = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
    sum += y;
    sumSq += y * y;
    if (y < 250) nonWhite += 1;
  }
  const mean = sum / n;
  const png = image.asPng();
  fs.writeFileSync(job.png, png);
  return {
    name: job.name,
    marks,
    width: image.width,
    height: image.height,
    variance: sumSq / n - mean * mean,
    nonWhite: nonWhite / n,
    bytes: png.length,
  };
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node render_vega.cjs JOBS.json");
    process.exit(2);
  }
  const { font, jobs } = JSON.parse(fs.readFileSync(file, "utf8"));
  for (const job of jobs) {
    console.log(JSON.stringify(await render(job, font)));
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
