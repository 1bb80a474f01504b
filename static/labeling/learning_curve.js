/* Learning curve on the metrics page: object F1 against the labels learnt so far, for the
   project's own cycles and for the simulated reviewer's runs per strategy (mean over runs, the
   band from the lowest to the highest run). Random is the baseline. Inline SVG, no library. */
(function () {
  "use strict";
  const node = document.getElementById("learning-curve-data");
  const box = document.getElementById("learning-curve");
  if (!node || !box) return;
  const data = JSON.parse(node.textContent);
  const fixed3 = window.LabelingApi.fixed3;  // every figure with three decimals, ticks too
  const own = data.project || [];
  const sims = data.simulations || [];
  if (!own.length && !sims.length) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 290, L = 64, R = 24, T = 16, B = 46;
  const palette = ["#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080", "#9a6324"];
  const lines = [];
  if (own.length)
    lines.push({name: "this project's cycles", colour: "#e6194b", width: 3,
      points: own.map(function (p) { return {labels: p.labels, f1: p.object_f1, note: "v" + p.version}; })});
  let k = 0;
  for (const s of sims) {
    lines.push({
      name: s.strategy + " (simulated, " + s.per_cycle + "/cycle, " + s.runs + " run" + (s.runs === 1 ? "" : "s") + ")" + (s.baseline ? " — baseline" : ""),
      colour: s.baseline ? "#667085" : palette[k++ % palette.length], width: 2, dash: s.baseline ? "6 4" : "",
      points: s.points.map(function (p) {
        return {labels: p.labels, f1: p.object_f1, low: p.low, high: p.high, note: "cycle " + p.cycle + ", " + p.runs + " run" + (p.runs === 1 ? "" : "s")};
      }),
    });
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [key, v] of Object.entries(attrs)) e.setAttribute(key, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const all = [].concat.apply([], lines.map(function (l) { return l.points; }));
  const maxLabels = Math.max(1, ...all.map(function (p) { return p.labels; }));
  const top = Math.min(1, Math.ceil(10 * Math.max(0.1, ...all.map(function (p) { return p.high || p.f1; }))) / 10 + 0.0001);
  const x = function (v) { return L + (v / maxLabels) * (W - L - R); };
  const y = function (v) { return T + (1 - v / top) * (H - T - B); };
  const root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "object F1 against labels learnt"});
  for (let i = 0; i <= 5; i++) {
    const v = top * i / 5;
    root.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb"}));
    root.appendChild(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085", class: "tick-y"}, fixed3(v)));
    const lv = Math.round(maxLabels * i / 5);
    root.appendChild(svg("text", {x: x(lv), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#667085"}, String(lv)));
  }
  // Both axes say what they measure and in which unit.
  root.appendChild(svg("text", {x: (W - R + L) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12, fill: "#344054", class: "axis-x"},
    "labels learnt (reviewed windows and corrections, count)"));
  root.appendChild(svg("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, fill: "#344054", class: "axis-y",
    transform: "rotate(-90 14 " + (T + H - B) / 2 + ")"}, "object F1 (0 to 1, ground truth)"));
  for (const line of lines) {
    const band = line.points.filter(function (p) { return p.low !== undefined && p.high > p.low; });
    if (band.length > 1) {
      const upper = band.map(function (p) { return x(p.labels).toFixed(1) + " " + y(p.high).toFixed(1); });
      const lower = band.slice().reverse().map(function (p) { return x(p.labels).toFixed(1) + " " + y(p.low).toFixed(1); });
      root.appendChild(svg("path", {d: "M " + upper.concat(lower).join(" L ") + " Z", fill: line.colour, opacity: 0.15}));
    }
    const d = line.points.map(function (p, i) { return (i ? "L " : "M ") + x(p.labels).toFixed(1) + " " + y(p.f1).toFixed(1); }).join(" ");
    const attrs = {d: d, fill: "none", stroke: line.colour, "stroke-width": line.width};
    if (line.dash) attrs["stroke-dasharray"] = line.dash;
    root.appendChild(svg("path", attrs));
    for (const p of line.points) {
      const dot = svg("circle", {cx: x(p.labels), cy: y(p.f1), r: 4, fill: line.colour});
      dot.appendChild(svg("title", {}, line.name + " · " + p.note + ": " + p.labels + " labels, object F1 " + fixed3(p.f1) +
        (p.low !== undefined && p.high > p.low ? " (runs " + fixed3(p.low) + "–" + fixed3(p.high) + ")" : "")));
      root.appendChild(dot);
    }
  }
  box.appendChild(root);
  const legend = document.getElementById("learning-curve-legend");
  if (legend) {
    for (const line of lines) {
      const item = document.createElement("span");
      item.innerHTML = '<span class="swatch"></span>';
      item.firstChild.style.background = line.colour;
      item.appendChild(document.createTextNode(line.name + "  "));
      legend.appendChild(item);
    }
  }
})();
