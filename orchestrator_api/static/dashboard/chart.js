/* Dashboard: small charts as inline SVG (no library, nothing from a CDN): bars per minute
 * for several series, and a line. A minute without data (before the page heard events) is
 * drawn as a gap, not as zero. */

import { svg } from "./util.js";

const WIDTH = 600;
const HEIGHT = 140;
const PAD = { left: 34, right: 8, top: 10, bottom: 20 };

function frame(label, max, buckets) {
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img",
    "aria-label": label, preserveAspectRatio: "none" });
  const title = svg("title");
  title.textContent = label;
  root.append(title);
  const y = (v) => HEIGHT - PAD.bottom - (v / max) * (HEIGHT - PAD.top - PAD.bottom);
  for (const v of [0, max / 2, max]) {
    root.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v),
      class: "chart-grid" }));
    const text = svg("text", { x: PAD.left - 4, y: y(v) + 4, class: "chart-axis",
      "text-anchor": "end" });
    text.textContent = String(Math.round(v * 10) / 10);
    root.append(text);
  }
  const step = (WIDTH - PAD.left - PAD.right) / buckets.length;
  buckets.forEach((b, i) => {
    if (i % 5 !== buckets.length % 5) return;
    const text = svg("text", { x: PAD.left + i * step + step / 2, y: HEIGHT - 5,
      class: "chart-axis", "text-anchor": "middle" });
    text.textContent = new Date(b.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    root.append(text);
  });
  return { root, y, step };
}

/** Grouped bars: series [{key, label, cls}] read from each bucket (null: no data). */
export function barChart(buckets, series, label) {
  const values = buckets.flatMap((b) => series.map((s) => b[s.key] || 0));
  const max = Math.max(4, ...values);
  const { root, y, step } = frame(label, max, buckets);
  const width = Math.max(1, (step - 2) / series.length);
  buckets.forEach((b, i) => {
    series.forEach((s, j) => {
      const value = b[s.key];
      if (value === null || value === undefined) return;
      const rect = svg("rect", { x: PAD.left + i * step + 1 + j * width, y: y(value),
        width, height: Math.max(0, y(0) - y(value)), class: `chart-bar ${s.cls}` });
      const tip = svg("title");
      tip.textContent = `${new Date(b.at).toLocaleTimeString()}: ${value} ${s.label}`;
      rect.append(tip);
      root.append(rect);
    });
  });
  return root;
}

/** A line of one key (gaps where null). */
export function lineChart(buckets, key, label, cls) {
  const values = buckets.map((b) => b[key]).filter((v) => v !== null && v !== undefined);
  const max = Math.max(4, ...values);
  const { root, y, step } = frame(label, max, buckets);
  let d = "";
  let pen = false;
  const dots = [];
  buckets.forEach((b, i) => {
    const value = b[key];
    if (value === null || value === undefined) {
      pen = false;
      return;
    }
    const x = PAD.left + i * step + step / 2;
    d += `${pen ? "L" : "M"} ${x.toFixed(1)} ${y(value).toFixed(1)} `;
    pen = true;
    dots.push(svg("circle", { cx: x, cy: y(value), r: 2.2, class: `chart-dot ${cls}` }));
  });
  if (d) root.append(svg("path", { d, class: `chart-line ${cls}` }));
  root.append(...dots);
  return root;
}
