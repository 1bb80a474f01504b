/* Metrics chart: object F1, COCO AP@0.5 and window F1 (precision / recall on hover) per model
   version as inline SVG, with the labels each version learnt from as bars. No library, no CDN. */
(function () {
  "use strict";
  const node = document.getElementById("metrics-data");
  const box = document.getElementById("metrics-chart");
  if (!node || !box) return;
  const rows = (JSON.parse(node.textContent).rows || []);
  const fixed3 = window.LabelingApi.fixed3;  // every figure with three decimals, ticks too
  if (!rows.length) return;
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 280, L = 48, R = 56, T = 16, B = 36;
  // Object F1 is the headline; COCO AP@0.5 beside it; window F1 is a diagnostic.
  const series = [
    {key: "object", name: "object F1 (ground truth)", colour: "#e6194b", field: "f1"},
    {key: "coco", name: "COCO AP@0.5 (ground truth)", colour: "#f58231", field: "ap50"},
    {key: "window", name: "window F1 (ground truth, diagnostic)", colour: "#2f6fde", field: "f1"},
    {key: "window_annotations", name: "window F1 (annotations)", colour: "#3cb44b", field: "f1"},
  ].filter(function (s) { return rows.some(function (r) { return r[s.key]; }); });
  function tip(r, s, m) {
    if (s.key === "coco")
      return "v" + r.number + " COCO AP@0.5 " + fixed3(m.ap50) + " · AP@[.5:.95] " + fixed3(m.ap);
    return "v" + r.number + " " + s.name + ": F1 " + fixed3(m.f1) +
      " · precision " + fixed3(m.precision) + " · recall " + fixed3(m.recall) + " (tp " + m.tp + ", fp " + m.fp + ", fn " + m.fn + ")";
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "F1 per model version"});
  const n = rows.length;
  const x = function (i) { return L + (n === 1 ? (W - L - R) / 2 : i * (W - L - R) / (n - 1)); };
  const y = function (v) { return T + (1 - v) * (H - T - B); };
  const maxLabels = Math.max(1, ...rows.map(function (r) { return r.labels_cumulative; }));
  const yl = function (v) { return T + (1 - v / maxLabels) * (H - T - B); };

  for (let k = 0; k <= 5; k++) {  // grid and left axis (0..1)
    const v = k / 5;
    root.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb"}));
    root.appendChild(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085", class: "tick-y"}, fixed3(v)));
  }
  if (rows.some(function (r) { return r.labels_cumulative; }))
    root.appendChild(svg("text", {x: W - R + 6, y: T + 4, "font-size": 11, fill: "#98a2b3"}, maxLabels + " labels"));
  const barW = Math.max(6, Math.min(28, (W - L - R) / Math.max(1, n) / 3));
  rows.forEach(function (r, i) {  // labels learnt so far, as bars behind the lines
    if (r.labels_cumulative) {
      const bar = svg("rect", {x: x(i) - barW / 2, y: yl(r.labels_cumulative), width: barW,
        height: H - B - yl(r.labels_cumulative), fill: "#d0d5dd", opacity: 0.7});
      bar.appendChild(svg("title", {}, "v" + r.number + ": " + r.labels_cumulative + " labels learnt in total (" + r.labels_used + " new)"));
      root.appendChild(bar);
    }
    root.appendChild(svg("text", {x: x(i), y: H - B + 16, "text-anchor": "middle", "font-size": 12, fill: "#1d2330"},
      "v" + r.number + (r.is_current ? " ★" : "")));
  });
  root.appendChild(svg("text", {x: (W - R + L) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#667085"}, "model version (cycle)"));
  for (const s of series) {
    let d = "";
    rows.forEach(function (r, i) {
      const m = r[s.key];
      if (!m) return;
      d += (d ? " L " : "M ") + x(i).toFixed(1) + " " + y(m[s.field]).toFixed(1);
    });
    root.appendChild(svg("path", {d: d, fill: "none", stroke: s.colour, "stroke-width": 2.5}));
    rows.forEach(function (r, i) {
      const m = r[s.key];
      if (!m) return;
      const dot = svg("circle", {cx: x(i), cy: y(m[s.field]), r: 4.5, fill: s.colour, "data-series": s.key});
      dot.appendChild(svg("title", {}, tip(r, s, m)));
      root.appendChild(dot);
    });
  }
  box.appendChild(root);
  const legend = document.getElementById("chart-legend");
  for (const s of series) {
    const item = document.createElement("span");
    item.innerHTML = '<span class="swatch"></span>';
    item.firstChild.style.background = s.colour;
    item.appendChild(document.createTextNode(s.name + "  "));
    legend.appendChild(item);
  }
  const bars = document.createElement("span");
  bars.innerHTML = '<span class="swatch" style="background:#d0d5dd"></span>labels learnt (right axis)';
  legend.appendChild(bars);
})();
