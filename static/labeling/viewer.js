/* Scene viewer: the deep-zoom scene (OpenSeadragon), the detections of the latest run drawn on
   ONE canvas overlay (only boxes in view, found through a grid index), a threshold slider that
   re-filters in the browser, raw windows vs merged boxes, per-class toggles and a legend with
   counts; corrections saved at once (optimistic, with retry) and undoable.

   Coordinates: everything is kept in scene pixels; each frame maps the visible part of the
   scene to the overlay with one scale and offset. */
(function () {
  "use strict";
  const api = window.LabelingApi;
  const cfg = api.config("viewer-config");
  const $ = function (id) { return document.getElementById(id); };

  const classNames = cfg.classes.map(function (c) { return c.name; });
  const colourOf = Object.fromEntries(cfg.classes.map(function (c) { return [c.name, c.color]; }));
  colourOf[cfg.negative] = "#9e9e9e";
  const SCENE_W = cfg.scene.width, SCENE_H = cfg.scene.height;

  const state = {
    kind: "merged",
    threshold: cfg.threshold,
    // Per-class thresholds (the run's: calibrated ones travel with the model version) until the
    // reviewer moves the slider; then one threshold for every class.
    perClass: !cfg.threshold_from_url && Object.keys(cfg.class_thresholds || {}).length > 0,
    hidden: new Set(),
    feeds: {merged: null, window: null},
    loading: {},
    annotations: [],     // every annotation of the scene known here (history + this session's)
    effective: [],       // the ones that decide a label (newest per place, undo applied)
    mine: [],            // this session's corrections, for undo (newest last)
    selected: null,      // {source: "feed"|"annotation", i|a, x, y, w, h, label, score, detection}
    draft: null,         // a missed-object box waiting for its class {x, y, w, h}
    drawing: null,       // shift-drag (or region) start in scene pixels {x, y, region}
    regionMode: false,   // b: a drag draws a background region ("nothing here", any class)
    hover: null,         // {x, y} scene pixels
    firstBoxes: false,
  };
  let viewer = null, tiled = null, overlay = null, ctx = null, frame = 0;

  // ---------------------------------------------------------------- the feed and its index

  /* Compact columns -> typed arrays and a uniform grid index (cell lists in CSR form), so a
     viewport query touches only the cells it overlaps. */
  function buildFeed(data) {
    const n = data.count;
    const f = {
      n: n, kind: data.kind, run: data.run, classes: data.classes,
      id: data.id, x: Float32Array.from(data.x), y: Float32Array.from(data.y),
      w: Float32Array.from(data.w), h: Float32Array.from(data.h),
      label: Uint8Array.from(data.label), score: Float64Array.from(data.score),  // float32 would turn 0.9 into 0.8999
      probs: null, stamp: new Uint32Array(n), tick: 0,
    };
    if (data.probs) {
      const c = data.classes.length;
      f.probs = new Float32Array(n * c);
      for (let i = 0; i < n; i++) for (let k = 0; k < c; k++) f.probs[i * c + k] = data.probs[i][k];
    }
    // Map the feed's class order to the page's (the feed may list the negative class too).
    f.colour = data.classes.map(function (name) { return colourOf[name] || "#ffffff"; });
    const cell = Math.max(128, (cfg.window || 32) * 8);
    const cols = Math.max(1, Math.ceil(SCENE_W / cell)), rows = Math.max(1, Math.ceil(SCENE_H / cell));
    const counts = new Uint32Array(cols * rows + 1);
    const span = function (i, fn) {
      const c0 = Math.max(0, Math.floor(f.x[i] / cell)), c1 = Math.min(cols - 1, Math.floor((f.x[i] + f.w[i]) / cell));
      const r0 = Math.max(0, Math.floor(f.y[i] / cell)), r1 = Math.min(rows - 1, Math.floor((f.y[i] + f.h[i]) / cell));
      for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) fn(r * cols + c);
    };
    for (let i = 0; i < n; i++) span(i, function (k) { counts[k + 1]++; });
    for (let k = 1; k < counts.length; k++) counts[k] += counts[k - 1];
    const items = new Uint32Array(counts[counts.length - 1]);
    const fill = counts.slice(0, cols * rows);
    for (let i = 0; i < n; i++) span(i, function (k) { items[fill[k]++] = i; });
    f.index = {cell: cell, cols: cols, rows: rows, start: counts, items: items};
    return f;
  }

  /* Calls fn(i) once for every box of feed f overlapping the scene rectangle. */
  function query(f, x0, y0, x1, y1, fn) {
    const ix = f.index;
    f.tick = (f.tick + 1) >>> 0;
    if (f.tick === 0) { f.stamp.fill(0); f.tick = 1; }
    const c0 = Math.max(0, Math.floor(x0 / ix.cell)), c1 = Math.min(ix.cols - 1, Math.floor(x1 / ix.cell));
    const r0 = Math.max(0, Math.floor(y0 / ix.cell)), r1 = Math.min(ix.rows - 1, Math.floor(y1 / ix.cell));
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const k = r * ix.cols + c;
        for (let j = ix.start[k]; j < ix.start[k + 1]; j++) {
          const i = ix.items[j];
          if (f.stamp[i] === f.tick) continue;
          f.stamp[i] = f.tick;
          if (f.x[i] > x1 || f.x[i] + f.w[i] < x0 || f.y[i] > y1 || f.y[i] + f.h[i] < y0) continue;
          fn(i);
        }
      }
    }
  }

  const classThresholds = cfg.class_thresholds || {};
  // The run's own values (0.575 stays 0.575; the server's slider start is rounded to 0.01).
  const lowestThreshold = Object.keys(classThresholds).length
    ? Math.min.apply(null, Object.values(classThresholds)) : cfg.threshold;
  const sliderMin = Math.min(0.5, Math.floor(lowestThreshold * 100) / 100);
  /* Merged boxes exist only at or above the run's thresholds (NMS ran there), so in merged mode
     the slider starts at the lowest of them: every position of it changes what is shown. */
  function lowestFor(kind) { return kind === "merged" ? lowestThreshold : sliderMin; }

  /* The score a box of this class needs to be shown. */
  function cut(name) {
    if (state.perClass && classThresholds[name] !== undefined) return classThresholds[name];
    return state.threshold;
  }

  function shown(f, i) {
    const name = f.classes[f.label[i]];
    return f.score[i] >= cut(name) - 1e-9 && !state.hidden.has(name);
  }

  /* Raw windows of a big scene (cfg.raw_windows.whole_pixels and more) come by region: the
     blocks of the scene in view, once the view's longer side is at most max_view scene pixels;
     the newest max_blocks blocks are kept. A smaller scene's come whole, at once. */
  const rawCfg = cfg.raw_windows || {whole_pixels: Infinity, block: 2048, max_view: 6144, max_blocks: 24};
  const rawByRegion = SCENE_W * SCENE_H > rawCfg.whole_pixels;
  const rawBlocks = {data: new Map(), loading: new Set()};

  function rawViewTooWide() {
    if (!rawByRegion || !tiled) return false;
    const v = visibleRect(transform());
    return Math.max(v.x1 - v.x0, v.y1 - v.y0) > rawCfg.max_view;
  }

  /* One feed of every loaded block's windows (a window on a block edge comes in each). */
  function mergedBlocks() {
    const out = {count: 0, kind: "window", run: null, classes: [], id: [], x: [], y: [], w: [], h: [], label: [], score: [], probs: []};
    const seen = new Set();
    for (const data of rawBlocks.data.values()) {
      out.run = data.run; out.classes = data.classes;
      for (let i = 0; i < data.count; i++) {
        if (seen.has(data.id[i])) continue;
        seen.add(data.id[i]);
        for (const col of ["id", "x", "y", "w", "h", "label", "score", "probs"]) out[col].push(data[col][i]);
      }
    }
    out.count = out.id.length;
    return out;
  }

  function loadRawInView() {
    const tooWide = rawViewTooWide();
    $("raw-hint").hidden = !(tooWide && state.kind === "window");
    if (!cfg.run || !tiled || tooWide) return Promise.resolve(state.feeds.window);
    const v = visibleRect(transform()), size = rawCfg.block, wanted = [];
    for (let by = Math.max(0, Math.floor(v.y0 / size)); by * size < Math.min(SCENE_H, v.y1); by++) {
      for (let bx = Math.max(0, Math.floor(v.x0 / size)); bx * size < Math.min(SCENE_W, v.x1); bx++) {
        const key = bx + "," + by;
        if (!rawBlocks.data.has(key) && !rawBlocks.loading.has(key)) wanted.push([bx * size, by * size, key]);
      }
    }
    if (!wanted.length) return Promise.resolve(state.feeds.window);
    return Promise.all(wanted.map(function (b) {
      rawBlocks.loading.add(b[2]);
      const region = [b[0], b[1], Math.min(SCENE_W, b[0] + size), Math.min(SCENE_H, b[1] + size)].join(",");
      return api.get(cfg.urls.detections + "?kind=window&region=" + region).then(function (data) {
        rawBlocks.data.delete(b[2]);
        rawBlocks.data.set(b[2], data);  // newest last
        while (rawBlocks.data.size > rawCfg.max_blocks) rawBlocks.data.delete(rawBlocks.data.keys().next().value);
      }).catch(function (err) {
        showViewerError("Could not load the raw windows here: " + err.message);
      }).finally(function () { rawBlocks.loading.delete(b[2]); });
    })).then(function () {
      state.feeds.window = buildFeed(mergedBlocks());
      if (state.kind === "window") updateLegend();
      schedule();
      return state.feeds.window;
    });
  }

  function loadFeed(kind) {
    if (!cfg.run || !cfg.urls.detections) return Promise.resolve(null);
    if (kind === "window" && rawByRegion) return loadRawInView();
    if (state.feeds[kind]) return Promise.resolve(state.feeds[kind]);
    if (state.loading[kind]) return state.loading[kind];
    state.loading[kind] = api.get(cfg.urls.detections + "?kind=" + kind).then(function (data) {
      state.feeds[kind] = buildFeed(data);
      if (kind === state.kind) { updateLegend(); schedule(); }
      return state.feeds[kind];
    }).catch(function (err) {
      showViewerError("Could not load the " + kind + " detections: " + err.message);
      state.loading[kind] = null;
      return null;
    });
    return state.loading[kind];
  }

  // ---------------------------------------------------------------- annotations

  function place(a) { return a.x + "," + a.y + "," + a.w + "," + a.h; }

  /* As labeling.cycle.effective_annotations: newest first, undo rows cancel what they undo (an
     undone undo restores its target), the newest annotation per place wins. */
  function recomputeEffective() {
    const rows = state.annotations.slice().sort(function (a, b) { return b.order - a.order; });
    const cancelled = new Set();
    for (const a of rows) if (a.kind === "undo" && !cancelled.has(a) && a.target) cancelled.add(a.target);
    const seen = new Set(), out = [];
    for (const a of rows) {
      if (a.kind === "undo" || cancelled.has(a) || a.state === "dropped") continue;
      const key = place(a);
      if (seen.has(key)) continue;
      seen.add(key); out.push(a);
    }
    state.effective = out;
    $("annotation-count").textContent = out.length;
    $("history-count").textContent = state.annotations.filter(function (a) { return a.state !== "dropped"; }).length;
  }

  let order = 0;
  function fromServer(row, byId) {
    const a = {
      id: row.id, client_id: row.client_id, kind: row.kind, label: row.label,
      x: row.x, y: row.y, w: row.w, h: row.h, detection: row.detection,
      user: row.user, state: "saved", order: Date.parse(row.created_at) * 1000 + (row.id % 1000),
      target: null, undoesId: row.undoes, was: row.detection_label,
    };
    byId.set(row.id, a);
    return a;
  }

  function loadAnnotations() {
    if (!cfg.urls.annotations) { $("save-status").textContent = "Annotations are not available."; return Promise.resolve(); }
    // The list comes a page at a time (newest first): follow `next` until the last page.
    function allPages(url, history) {
      return api.get(url).then(function (data) {
        history = history.concat(data.history || []);
        return data.next ? allPages(data.next, history) : history;
      });
    }
    return allPages(cfg.urls.annotations, []).then(function (history) {
      const byId = new Map();
      const rows = history.map(function (r) { return fromServer(r, byId); });
      for (const a of rows) if (a.undoesId) a.target = byId.get(a.undoesId) || {id: a.undoesId};
      order = rows.reduce(function (m, a) { return Math.max(m, a.order); }, 0);
      state.annotations = rows.concat(state.annotations);  // keep anything added meanwhile
      recomputeEffective(); updateSaveStatus(); schedule();
    }).catch(function (err) { showViewerError("Could not load the annotations: " + err.message); });
  }

  function nextOrder() { order = Math.max(order + 1, Date.now() * 1000); return order; }

  function post(a) {
    a.state = "saving"; a.error = "";
    updateSaveStatus(); schedule();
    let request;
    if (a.kind === "undo") {
      // The target must exist on the server first.
      request = Promise.resolve(a.target.promise).then(function () {
        if (!a.target.id) throw new Error("the correction it undoes was never saved");
        return api.post(api.fill(cfg.urls.undo, {id: a.target.id}), {client_id: a.client_id});
      });
    } else {
      request = api.post(cfg.urls.annotations, {
        client_id: a.client_id, kind: a.kind, label: a.label,
        x: a.x, y: a.y, w: a.w, h: a.h, detection: a.detection,
      });
    }
    a.promise = request.then(function (row) {
      a.id = row.id; a.state = "saved"; a.user = row.user;
    }).catch(function (err) {
      a.state = "failed"; a.error = err.message;
    }).finally(function () { updateSaveStatus(); schedule(); });
    return a.promise;
  }

  function annotate(kind, label, box, detection, was) {
    const b = clampBox(box);
    const a = {
      id: null, client_id: api.uuid(), kind: kind, label: label, x: b.x, y: b.y, w: b.w, h: b.h,
      detection: detection === undefined ? null : detection, state: "saving", order: nextOrder(),
      target: null, was: was || null,
    };
    state.annotations.push(a); state.mine.push(a);
    recomputeEffective();
    post(a);
    return a;
  }

  function undo() {
    if (state.mine.length) undoMark(state.mine[state.mine.length - 1]);
    else flash("Nothing of yours to undo in this session.");
  }

  /* Cancel one annotation (your last one, or a region picked at its edge): an undo row. */
  function undoMark(target) {
    const k = state.mine.indexOf(target);
    if (k >= 0) state.mine.splice(k, 1);
    if (target.state === "failed" && !target.id) {
      target.state = "dropped";  // never reached the server: nothing to undo there
      recomputeEffective(); updateSaveStatus(); schedule();
      return;
    }
    const a = {
      id: null, client_id: api.uuid(), kind: "undo", label: target.label, x: target.x,
      y: target.y, w: target.w, h: target.h, detection: target.detection, state: "saving",
      order: nextOrder(), target: target,
    };
    state.annotations.push(a);
    recomputeEffective();
    post(a);
    flash("Undone: " + describe(target));
  }

  /* b: a drag draws a background region instead of panning (until b again). */
  function setRegionMode(on) {
    state.regionMode = on;
    $("region-mode").setAttribute("aria-pressed", on ? "true" : "false");
    $("region-hint").hidden = !on;
    // Inline, not in app.css: the crosshair and the lit button say the drag draws, not pans.
    $("osd").style.cursor = on ? "crosshair" : "";
    $("region-mode").style.background = on ? "#ffd600" : "";
  }

  function retryFailed() {
    for (const a of state.annotations) if (a.state === "failed") post(a);
  }

  function updateSaveStatus() {
    const saving = state.annotations.filter(function (a) { return a.state === "saving"; }).length;
    const failed = state.annotations.filter(function (a) { return a.state === "failed"; });
    const box = $("save-status");
    box.className = failed.length ? "error" : "hint";
    box.textContent = failed.length ? failed.length + " correction(s) not saved"
      : (saving ? "Saving " + saving + "…" : "All changes saved");
    $("save-error").hidden = !failed.length;
    if (failed.length) $("save-error-text").textContent = "Could not save: " + failed[failed.length - 1].error;
  }

  /* A correction's own words, on the image (its tag) and in the legend, popup and toasts. */
  function correctionText(a) {
    if (a.kind === "region") return "nothing here (region)";
    if (a.kind === "false_positive" || (a.label === cfg.negative && a.kind !== "review")) return "not an object";
    if (a.kind === "review" && a.label === cfg.negative && !a.detection) return "nothing here";
    if (a.kind === "wrong_class") return (a.was ? "was " + a.was : "class") + " → " + a.label;
    if (a.kind === "false_negative") return "missed: " + a.label;
    if (a.kind === "confirm") return "correct: " + a.label;
    if (a.kind === "review") return "reviewed: " + a.label;
    return a.kind + ": " + a.label;
  }

  function describe(a) {
    return correctionText(a) + " at (" + a.x + ", " + a.y + ")";
  }

  function clampBox(b) {
    let w = Math.max(1, Math.min(Math.round(b.w), SCENE_W)), h = Math.max(1, Math.min(Math.round(b.h), SCENE_H));
    let x = Math.round(b.x), y = Math.round(b.y);
    x = Math.max(0, Math.min(x, SCENE_W - w)); y = Math.max(0, Math.min(y, SCENE_H - h));
    return {x: x, y: y, w: w, h: h};
  }

  // ---------------------------------------------------------------- drawing

  function transform() {
    const p0 = tiled.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const p1 = tiled.imageToViewerElementCoordinates(new OpenSeadragon.Point(SCENE_W, 0));
    const s = (p1.x - p0.x) / SCENE_W;
    return {ox: p0.x, oy: p0.y, s: s};
  }

  function visibleRect(t) {
    const w = overlay.clientWidth, h = overlay.clientHeight;
    return {x0: -t.ox / t.s, y0: -t.oy / t.s, x1: (w - t.ox) / t.s, y1: (h - t.oy) / t.s};
  }

  function schedule() {
    if (!frame && overlay) frame = requestAnimationFrame(draw);
  }

  /* Corrections never speak the class colours' language: a white dotted frame on a black halo,
     CORRECTION_GAP screen pixels outside the box (so the model's box under it stays visible), and a
     black tag under it saying what was corrected ("missed: car", "not an object", "was boat →
     car"). The legend's samples use the same style (app.css .ann-sample). */
  const CORRECTION_GAP = 4;
  const CORRECTION_DOTS = [2, 3];
  const LABEL_MIN_PX = 36;  // model boxes narrower than this on screen get no "class score" text

  const TAG_H = 15, LABEL_H = 13;

  function overlaps(r, rects) {
    for (const o of rects) if (r.x < o.x + o.w && o.x < r.x + r.w && r.y < o.y + o.h && o.y < r.y + r.h) return true;
    return false;
  }

  /* Where a correction's tag goes: under its frame, else above it, whichever overlaps no tag
     placed before (the last choice when both do). */
  function placeTag(a, t, taken) {
    const g = CORRECTION_GAP;
    const x = t.ox + a.x * t.s - g, y = t.oy + a.y * t.s - g, w = a.w * t.s + 2 * g, h = a.h * t.s + 2 * g;
    ctx.font = "600 11px system-ui, sans-serif";
    const text = correctionText(a) + (a.state === "failed" ? " (not saved)" : "");
    const tw = ctx.measureText(text).width + 8;
    const below = {x: x, y: y + h + 1, w: tw, h: TAG_H}, above = {x: x, y: y - TAG_H - 1, w: tw, h: TAG_H};
    const tag = !overlaps(below, taken) || overlaps(above, taken) ? below : above;
    taken.push(tag);
    return {a: a, text: text, frame: {x: x, y: y, w: w, h: h}, tag: tag};
  }

  function drawCorrection(placed, drawn) {
    const a = placed.a, f = placed.frame, tag = placed.tag, text = placed.text;
    const x = f.x, y = f.y, w = f.w, h = f.h;
    ctx.globalAlpha = a.state === "saving" ? 0.6 : 1;
    ctx.setLineDash([]); ctx.lineWidth = 4; ctx.strokeStyle = "rgba(0,0,0,0.85)";
    ctx.strokeRect(x, y, w, h);
    ctx.setLineDash(CORRECTION_DOTS); ctx.lineWidth = 2;
    ctx.strokeStyle = a.state === "failed" ? "#ff1744" : "#ffffff";
    ctx.strokeRect(x, y, w, h);
    ctx.setLineDash([]);
    ctx.font = "600 11px system-ui, sans-serif";
    ctx.fillStyle = a.state === "failed" ? "#b71c1c" : "rgba(0,0,0,0.85)";
    ctx.fillRect(tag.x, tag.y, tag.w, tag.h);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(text, tag.x + 4, tag.y + 11);
    ctx.globalAlpha = 1;
    drawn.push({id: a.id, kind: a.kind, text: text, x: x, y: y, w: w, h: h, tag: tag});
  }

  /* "boat 0.957" above a model box big enough on screen (else just inside its top edge, else
     under it): what the model says now; left out where it would overlap a tag or a label. */
  function drawModelLabel(f, i, t, labels, taken) {
    const x = t.ox + f.x[i] * t.s, y = t.oy + f.y[i] * t.s;
    const text = f.classes[f.label[i]] + " " + api.fixed3(f.score[i]);
    ctx.font = "11px system-ui, sans-serif";
    const tw = ctx.measureText(text).width + 6;
    let r = {x: x, y: y - 1 - LABEL_H - CORRECTION_GAP, w: tw, h: LABEL_H};
    if (overlaps(r, taken)) r = {x: x + 2, y: y + 2, w: tw, h: LABEL_H};
    if (overlaps(r, taken)) r = {x: x, y: y + f.h[i] * t.s + 1 + CORRECTION_GAP, w: tw, h: LABEL_H};
    if (overlaps(r, taken)) return;
    taken.push(r);
    ctx.fillStyle = f.colour[f.label[i]];
    ctx.fillRect(r.x, r.y, r.w, r.h);
    ctx.fillStyle = "#000000";
    ctx.fillText(text, r.x + 3, r.y + 10);
    labels.push({id: f.id[i], text: text});
  }

  function draw() {
    frame = 0;
    if (!tiled) return;
    const started = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const cw = overlay.clientWidth, ch = overlay.clientHeight;
    if (overlay.width !== Math.round(cw * dpr) || overlay.height !== Math.round(ch * dpr)) {
      overlay.width = Math.round(cw * dpr); overlay.height = Math.round(ch * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cw, ch);
    const t = transform(), v = visibleRect(t);
    const f = state.feeds[state.kind];
    let inView = 0;
    const labelled = [], labels = [];
    // Corrections' tags are placed first: model labels keep clear of them (and of each other).
    const placed = [], taken = [];
    for (const a of state.effective) {
      if (a.x > v.x1 || a.x + a.w < v.x0 || a.y > v.y1 || a.y + a.h < v.y0) continue;
      placed.push(placeTag(a, t, taken));
    }
    if (f) {
      const paths = f.classes.map(function () { return new Path2D(); });
      query(f, v.x0, v.y0, v.x1, v.y1, function (i) {
        if (!shown(f, i)) return;
        paths[f.label[i]].rect(t.ox + f.x[i] * t.s, t.oy + f.y[i] * t.s, f.w[i] * t.s, f.h[i] * t.s);
        if (f.w[i] * t.s >= LABEL_MIN_PX) labelled.push(i);
        inView++;
      });
      ctx.setLineDash([]);
      ctx.lineWidth = inView > 5000 ? 1 : 1.6;
      paths.forEach(function (p, k) { ctx.strokeStyle = f.colour[k]; ctx.stroke(p); });
      if (labelled.length <= 300) for (const i of labelled) drawModelLabel(f, i, t, labels, taken);
      if (!state.firstBoxes) {
        state.firstBoxes = true;
        performance.mark("first-boxes");
        document.body.dataset.firstBoxesMs = String(Math.round(performance.now()));
      }
    }
    $("legend-inview").textContent = inView;
    // Corrections on top in their own style, outside the box: the model's box stays visible.
    const corrections = [];
    for (const p of placed) drawCorrection(p, corrections);
    ctx.globalAlpha = 1;
    const outline = function (b, colour, dash, width) {
      ctx.setLineDash(dash); ctx.lineWidth = width; ctx.strokeStyle = colour;
      ctx.strokeRect(t.ox + b.x * t.s - 2, t.oy + b.y * t.s - 2, b.w * t.s + 4, b.h * t.s + 4);
    };
    if (state.hoverBox) outline(state.hoverBox, "rgba(255,255,255,0.85)", [], 1);
    if (state.selected) outline(state.selected, "#ffd600", [], 2.5);
    if (state.draft) outline(state.draft, "#ffffff", [5, 4], 2);
    if (state.popupAt) positionPopup();
    // taken: every tag and label drawn, as screen rectangles (tests check none overlap).
    state.lastDraw = {ms: performance.now() - started, boxes: inView, corrections: corrections, labels: labels, taken: taken};
  }

  // ---------------------------------------------------------------- legend and filters

  function updateLegend() {
    const f = state.feeds[state.kind];
    const counts = {};
    for (const name of classNames) counts[name] = 0;
    let total = 0;
    if (f) {
      for (let i = 0; i < f.n; i++) {
        const name = f.classes[f.label[i]];
        if (f.score[i] < cut(name) - 1e-9) continue;
        counts[name] = (counts[name] || 0) + 1;
        if (!state.hidden.has(name)) total++;
      }
    }
    document.querySelectorAll("[data-count]").forEach(function (node) {
      node.textContent = f ? String(counts[node.dataset.count] || 0) : (cfg.run ? "…" : "0");
    });
    $("legend-total").textContent = f ? String(total) : (cfg.run ? "…" : "0");
    const note = $("threshold-note");
    if (!cfg.run) note.textContent = "This scene has no scoring run yet: no detections to show.";
    else if (state.perClass)
      note.textContent = (cfg.threshold_source === "calibrated" ? "Calibrated thresholds of this model version: " : "The run's thresholds: ") +
        thresholdText() + ". Moving the slider sets one threshold for every class.";
    else note.textContent = "";
    if (cfg.run && state.kind === "merged")
      note.textContent += (note.textContent ? " " : "") + "Merged boxes exist from the run's thresholds up, so the slider starts at " +
        api.fixed3(lowestThreshold) + "; raw windows (r) go down to " + api.fixed3(sliderMin) + ".";
  }

  function thresholdText() {
    return Object.entries(classThresholds).map(function (e) { return e[0] + " " + api.fixed3(e[1]); }).join(", ");
  }

  /* The slider (and [ / ]) set one threshold for every class; perClass keeps the run's
     per-class thresholds (the slider then shows the lowest of them). */
  function setThreshold(value, perClass) {
    state.perClass = Boolean(perClass);
    // Per class: the run's exact thresholds; moved by hand: steps of 0.01.
    const stepped = state.perClass ? value : Math.round(value * 100) / 100;
    state.threshold = Math.max(lowestFor(state.kind), Math.min(1, stepped));
    $("threshold").min = String(Math.floor(lowestFor(state.kind) * 100) / 100);
    $("threshold").value = String(state.threshold);
    $("threshold-value").textContent = api.fixed3(state.threshold);
    updateLegend(); schedule();
  }

  function setKind(kind) {
    state.kind = kind;
    $("kind-" + kind).checked = true;
    setThreshold(state.threshold, state.perClass);  // the slider's range follows the kind
    $("raw-hint").hidden = !(kind === "window" && rawViewTooWide());
    closePopup();
    loadFeed(kind);
    updateLegend(); schedule();
  }

  // ---------------------------------------------------------------- picking and the popup

  function toScene(clientX, clientY) {
    const r = overlay.getBoundingClientRect();
    const t = transform();
    return {x: (clientX - r.left - t.ox) / t.s, y: (clientY - r.top - t.oy) / t.s, t: t};
  }

  /* The smallest shown box under the point (annotations first), within a few screen pixels. */
  function pick(p) {
    const tol = 3 / p.t.s;
    let best = null, bestArea = Infinity;
    for (const a of state.effective) {
      if (p.x < a.x - tol || p.x > a.x + a.w + tol || p.y < a.y - tol || p.y > a.y + a.h + tol) continue;
      // A background region is picked at its edge only: inside it, objects can still be marked.
      if (a.kind === "region" && p.x > a.x + tol && p.x < a.x + a.w - tol && p.y > a.y + tol && p.y < a.y + a.h - tol) continue;
      const area = a.w * a.h;
      if (area < bestArea) {
        bestArea = area;
        best = {source: "annotation", a: a, x: a.x, y: a.y, w: a.w, h: a.h, label: a.label,
          kindOf: a.kind, detection: a.detection, score: null};
      }
    }
    if (best) return best;
    const f = state.feeds[state.kind];
    if (!f) return null;
    let bi = -1;
    query(f, p.x - tol, p.y - tol, p.x + tol, p.y + tol, function (i) {
      if (!shown(f, i)) return;
      const area = f.w[i] * f.h[i];
      if (area < bestArea || (area === bestArea && f.score[i] > f.score[bi])) { bestArea = area; bi = i; }
    });
    if (bi < 0) return null;
    return {source: "feed", i: bi, x: f.x[bi], y: f.y[bi], w: f.w[bi], h: f.h[bi],
      label: f.classes[f.label[bi]], score: f.score[bi], detection: f.id[bi], kindOf: f.kind};
  }

  function button(text, onclick, attrs) {
    return api.el("button", Object.assign({type: "button", onclick: onclick}, attrs || {}), [text]);
  }

  function openPopup(at) {
    const box = $("box-popup");
    box.replaceChildren();
    state.popupAt = at;
    const sel = state.selected, draft = state.draft;
    if (sel && sel.kindOf === "region") {
      box.appendChild(api.el("p", {class: "popup-title", text: "your mark: " + describe(sel.a) + ", " + sel.w + "×" + sel.h + " px"}));
      box.appendChild(button("Undo this region (u)", function () { act("u"); }, {"data-action": "undo-region"}));
    } else if (sel) {
      const title = sel.source === "feed"
        ? sel.label + " " + api.fixed3(sel.score) + " (" + (sel.kindOf === "merged" ? "merged box" : "window") + ")"
        : "your correction: " + describe(sel.a);
      box.appendChild(api.el("p", {class: "popup-title", text: title}));
      box.appendChild(button("✓ Correct (c)", function () { act("c"); }, {"data-action": "confirm"}));
      box.appendChild(button("✗ Not an object (x)", function () { act("x"); }, {"data-action": "false_positive"}));
      classNames.forEach(function (name, k) {
        if (name === sel.label) return;
        box.appendChild(button("→ " + name + " (" + (k + 1) + ")", function () { act(String(k + 1)); },
          {"data-action": "class-" + name}));
      });
    } else if (draft && draft.region) {
      const problem = regionProblem(draft);
      box.appendChild(api.el("p", {class: "popup-title",
        text: problem || "No object of any class in this " + draft.w + "×" + draft.h + " px region?"}));
      if (!problem) box.appendChild(button("0 nothing here (region)", function () { act("0"); }, {"data-action": "background-region"}));
    } else if (draft) {
      box.appendChild(api.el("p", {class: "popup-title",
        text: "Missed object here (" + draft.w + "×" + draft.h + " px)? Its class, or nothing here:"}));
      classNames.forEach(function (name, k) {
        box.appendChild(button((k + 1) + " " + name, function () { act(String(k + 1)); },
          {"data-action": "missed-" + name, style: "border-left: 4px solid " + colourOf[name]}));
      });
      // Background is a mark too: a project that starts from its scenes alone learns
      // "negative" only where a reviewer said so, never from the unmarked rest.
      box.appendChild(button("0 nothing here (" + cfg.negative + ")", function () { act("0"); },
        {"data-action": "background"}));
    }
    box.appendChild(button("Esc", closePopup, {class: "link"}));
    box.hidden = false;
    positionPopup();
  }

  function positionPopup() {
    const box = $("box-popup"), b = state.selected || state.draft;
    if (box.hidden || !b) return;
    const t = transform();
    const wrap = $("viewer-wrap");
    let left = t.ox + (b.x + b.w) * t.s + 8, top = t.oy + b.y * t.s;
    left = Math.max(4, Math.min(left, wrap.clientWidth - box.offsetWidth - 4));
    top = Math.max(4, Math.min(top, wrap.clientHeight - box.offsetHeight - 4));
    box.style.left = left + "px"; box.style.top = top + "px";
  }

  /* The server's limits on a region (labeling.review.annotations.check_region), said at once. */
  function regionProblem(b) {
    const size = cfg.window || 32, most = cfg.region_max || 32 * size;
    if (b.w < size || b.h < size) return "Too small for a region: at least " + size + "×" + size + " px (one object); Esc.";
    if (b.w > most || b.h > most) return "Too large for one region: at most " + most + "×" + most + " px; draw several.";
    return "";
  }

  function closePopup() {
    state.selected = null; state.draft = null; state.popupAt = null;
    $("box-popup").hidden = true;
    schedule();
  }

  /* A key (or its popup button) applied to the selected box or the missed-object draft. */
  function act(key) {
    const sel = state.selected, draft = state.draft;
    const k = Number(key);
    if (sel && sel.kindOf === "region") {
      if (key !== "u") return false;
      undoMark(sel.a); closePopup();
      return true;
    } else if (sel) {
      const box = {x: sel.x, y: sel.y, w: sel.w, h: sel.h};
      const det = sel.detection === undefined ? null : sel.detection;
      let a = null;
      if (key === "c") a = annotate("confirm", sel.label === cfg.negative ? cfg.negative : sel.label, box, det);
      else if (key === "x" || key === "0" || key === "n") a = annotate("false_positive", cfg.negative, box, det);
      else if (k >= 1 && k <= classNames.length) {
        const name = classNames[k - 1];
        a = sel.source === "annotation" && sel.kindOf === "false_negative"
          ? annotate("false_negative", name, box, det)
          : annotate(name === sel.label ? "confirm" : "wrong_class", name, box, det,
            sel.source === "feed" ? sel.label : sel.a && sel.a.was);
      }
      if (a) { closePopup(); flash("Marked: " + describe(a)); return true; }
    } else if (draft && draft.region) {
      if ((key !== "0" && key !== "n" && key !== "x") || regionProblem(draft)) return false;
      const a = annotate("region", cfg.negative, draft, null);
      closePopup(); flash("Marked: " + describe(a));
      return true;
    } else if (draft && (key === "0" || key === "n" || key === "x")) {
      const a = annotate("review", cfg.negative, draft, null);
      closePopup(); flash("Marked: " + describe(a));
      return true;
    } else if (draft && k >= 1 && k <= classNames.length) {
      const a = annotate("false_negative", classNames[k - 1], draft, null);
      closePopup(); flash("Marked: " + describe(a));
      return true;
    }
    return false;
  }

  let toastTimer = 0;
  function flash(text) {
    const toast = $("toast");
    toast.textContent = text; toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.hidden = true; }, 1800);
  }

  function windowBoxAt(p) {
    const size = cfg.window || 32;
    return clampBox({x: p.x - size / 2, y: p.y - size / 2, w: size, h: size});
  }

  // ---------------------------------------------------------------- hover

  function hoverAt(clientX, clientY) {
    const p = toScene(clientX, clientY);
    const tip = $("hover-tip"), info = $("hover-info");
    state.hoverBox = null;
    if (p.x < 0 || p.y < 0 || p.x > SCENE_W || p.y > SCENE_H) { tip.hidden = true; schedule(); return; }
    const raw = state.feeds.window;
    let text = "", best = -1, bestDist = Infinity;
    if (raw && raw.probs) {
      query(raw, p.x, p.y, p.x, p.y, function (i) {
        const d = Math.hypot(raw.x[i] + raw.w[i] / 2 - p.x, raw.y[i] + raw.h[i] / 2 - p.y);
        if (d < bestDist) { bestDist = d; best = i; }
      });
      if (best >= 0) {
        const c = raw.classes.length;
        const parts = raw.classes.map(function (name, k) { return name + " " + api.fixed3(raw.probs[best * c + k]); });
        text = "window (" + raw.x[best] + ", " + raw.y[best] + "): " + parts.join(" · ");
        state.hoverBox = {x: raw.x[best], y: raw.y[best], w: raw.w[best], h: raw.h[best]};
      }
    }
    const hit = pick(p);
    if (hit && hit.source === "feed" && !text) text = hit.label + " " + api.fixed3(hit.score) + (hit.kindOf === "merged" ? " (merged box)" : "");
    if (hit && hit.source === "annotation") text = "your correction: " + describe(hit.a) + (text ? " — " + text : "");
    if (!text && rawViewTooWide()) text = "zoom in to see the windows' probabilities";
    else if (!text && raw) text = "no window scores 0.5 or more here";
    info.textContent = text || "Hover a box to see the model's probabilities.";
    if (text) {
      tip.textContent = text; tip.hidden = false;
      placeTip(tip, clientX, clientY);
    } else tip.hidden = true;
    schedule();
  }

  /* The tooltip beside the pointer, on the first side (below right, above right, below left,
     above left) where it covers no correction tag, inside the viewer. */
  function placeTip(tip, clientX, clientY) {
    const r = $("viewer-wrap").getBoundingClientRect();
    const px = clientX - r.left, py = clientY - r.top, tw = tip.offsetWidth, th = tip.offsetHeight;
    const tags = ((state.lastDraw && state.lastDraw.corrections) || []).map(function (c) { return c.tag; });
    const fit = function (x, y) {
      return {x: Math.max(0, Math.min(x, r.width - tw)), y: Math.max(0, Math.min(y, r.height - th)), w: tw, h: th};
    };
    const sides = [fit(px + 14, py + 16), fit(px + 14, py - th - 12), fit(px - tw - 14, py + 16), fit(px - tw - 14, py - th - 12)];
    const spot = sides.find(function (b) { return !overlaps(b, tags); }) || sides[0];
    tip.style.left = spot.x + "px"; tip.style.top = spot.y + "px";
  }

  // ---------------------------------------------------------------- wiring

  function showViewerError(text) {
    const e = $("viewer-error"); e.hidden = false; e.textContent = text;
  }

  function onKey(event) {
    if (api.typing(event)) return;
    const key = event.key;
    let handled = true;
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") undo();
    else if (event.ctrlKey || event.metaKey || event.altKey) handled = false;
    else if (key === "Escape") {
      if ($("box-popup").hidden && $("help-overlay").hidden && state.regionMode) setRegionMode(false);
      closePopup(); $("help-overlay").hidden = true;
    }
    else if (key === "?") $("help-overlay").hidden = !$("help-overlay").hidden;
    else if ((state.selected || state.draft) && act(key.toLowerCase())) handled = true;
    else if (key === "u") undo();
    else if (key === "b") setRegionMode(!state.regionMode);
    else if (key === "r") setKind(state.kind === "merged" ? "window" : "merged");
    else if (key === "[") setThreshold(state.threshold - 0.01);
    else if (key === "]") setThreshold(state.threshold + 0.01);
    else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); }
  }

  function startViewer() {
    viewer = OpenSeadragon({
      element: $("osd"),
      prefixUrl: cfg.osd_images,
      tileSources: cfg.dzi_url,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      maxZoomPixelRatio: 8,
      visibilityRatio: 0.5,
      gestureSettingsMouse: {clickToZoom: false, dblClickToZoom: true},
      crossOriginPolicy: false,
      imageSmoothingEnabled: false,
    });
    overlay = document.createElement("canvas");
    overlay.id = "overlay";
    overlay.className = "overlay";
    viewer.canvas.appendChild(overlay);
    ctx = overlay.getContext("2d");
    viewer.addHandler("open", function () {
      tiled = viewer.world.getItemAt(0);
      $("osd").dataset.ready = "1";
      schedule();
      if (rawByRegion) loadRawInView();
    });
    if (rawByRegion) viewer.addHandler("animation-finish", function () { loadRawInView(); });
    viewer.addHandler("open-failed", function (e) { showViewerError("The deep-zoom tiles could not be opened: " + e.message); });
    ["update-viewport", "animation", "resize"].forEach(function (name) { viewer.addHandler(name, schedule); });
    viewer.addHandler("canvas-key", function (e) {
      // OSD keeps panning and zooming keys; the rest (r rotates, f flips...) are ours.
      const key = (e.originalEvent && e.originalEvent.key) || "";
      if (!/^(Arrow\w+|[-+=_wasdWASD])$/.test(key)) e.preventDefaultAction = true;
    });
    viewer.addHandler("canvas-click", function (e) {
      if (!e.quick || !tiled) return;
      const oe = e.originalEvent;
      const p = toScene(oe.clientX, oe.clientY);
      if (p.x < 0 || p.y < 0 || p.x > SCENE_W || p.y > SCENE_H) { closePopup(); return; }
      const hit = pick(p);
      closePopup();
      if (hit) state.selected = hit;
      else state.draft = windowBoxAt(p);
      openPopup(p);
      schedule();
    });
    viewer.addHandler("canvas-press", function (e) {
      if (e.originalEvent && (e.originalEvent.shiftKey || state.regionMode) && tiled) {
        const p = toScene(e.originalEvent.clientX, e.originalEvent.clientY);
        state.drawing = {x: p.x, y: p.y, region: state.regionMode};
        closePopup();
      }
    });
    viewer.addHandler("canvas-drag", function (e) {
      if (!state.drawing) return;
      e.preventDefaultAction = true;
      const p = toScene(e.originalEvent.clientX, e.originalEvent.clientY);
      const d = state.drawing;
      state.draft = clampBox({x: Math.min(d.x, p.x), y: Math.min(d.y, p.y), w: Math.abs(p.x - d.x), h: Math.abs(p.y - d.y)});
      state.draft.region = d.region;
      schedule();
    });
    viewer.addHandler("canvas-release", function () {
      if (!state.drawing) return;
      state.drawing = null;
      if (state.draft && state.draft.w >= 3 && state.draft.h >= 3) openPopup(state.draft);
      else closePopup();
    });
    let hoverFrame = 0, last = null;
    $("viewer-wrap").addEventListener("pointermove", function (e) {
      last = e;
      if (!hoverFrame) hoverFrame = requestAnimationFrame(function () { hoverFrame = 0; if (tiled) hoverAt(last.clientX, last.clientY); });
    });
    $("viewer-wrap").addEventListener("pointerleave", function () { $("hover-tip").hidden = true; state.hoverBox = null; schedule(); });
    window.addEventListener("resize", schedule);
  }

  function waitForTiles() {
    const box = $("dzi-wait");
    if (!box || !box.dataset.url) return;
    api.get(box.dataset.url).then(function (s) {
      if (s.dzi_key) { location.reload(); return; }
      const job = (s.jobs || {}).dzi;
      if (job) {
        $("dzi-status").textContent = job.status;
        $("dzi-message").textContent = job.message || "";
        const pct = Math.round(100 * (job.fraction || 0));
        $("dzi-progress").querySelector("span").style.width = pct + "%";
        $("dzi-progress").setAttribute("aria-valuenow", pct);
        if (job.status === "failed") { $("dzi-error").hidden = false; $("dzi-error").textContent = job.error; return; }
      }
      setTimeout(waitForTiles, 1000);
    }).catch(function () { setTimeout(waitForTiles, 3000); });
  }

  function init() {
    $("threshold").addEventListener("input", function (e) { setThreshold(Number(e.target.value)); });
    $("threshold-calibrated").addEventListener("click", function () { setThreshold(lowestThreshold, true); });
    $("threshold-published").addEventListener("click", function () { setThreshold(cfg.published_threshold); });
    document.querySelectorAll("input[name=kind]").forEach(function (r) {
      r.addEventListener("change", function () { if (r.checked) setKind(r.value); });
    });
    document.querySelectorAll("[data-toggle]").forEach(function (box) {
      box.addEventListener("change", function () {
        if (box.checked) state.hidden.delete(box.dataset.toggle); else state.hidden.add(box.dataset.toggle);
        updateLegend(); schedule();
      });
    });
    $("retry-button").addEventListener("click", retryFailed);
    $("region-mode").addEventListener("click", function () { setRegionMode(!state.regionMode); });
    $("help-link").addEventListener("click", function (e) { e.preventDefault(); $("help-overlay").hidden = false; });
    $("help-close").addEventListener("click", function () { $("help-overlay").hidden = true; });
    window.addEventListener("keydown", onKey, true);
    window.addEventListener("beforeunload", function (e) {
      if (state.annotations.some(function (a) { return a.state === "saving" || a.state === "failed"; })) {
        e.preventDefault(); e.returnValue = "";
      }
    });
    setThreshold(state.perClass ? lowestThreshold : cfg.threshold, state.perClass);
    if (!cfg.dzi_url) { waitForTiles(); return; }
    startViewer();
    // Raw windows: hover probabilities (a big scene's: those in view, once zoomed in).
    loadFeed("merged").then(function () { return loadFeed("window"); });
    loadAnnotations();
    updateLegend();
  }

  // For tests and benchmarks: where a scene pixel is on the page, and what is drawn.
  window.sceneViewer = {
    ready: function () { return Boolean(tiled) && (!cfg.run || Boolean(state.feeds[state.kind])); },
    pageXY: function (x, y) {
      const t = transform(), r = overlay.getBoundingClientRect();
      return {x: r.left + t.ox + x * t.s, y: r.top + t.oy + y * t.s};
    },
    shownBoxes: function () {
      const f = state.feeds[state.kind], out = [];
      if (!f) return out;
      for (let i = 0; i < f.n; i++) if (shown(f, i)) out.push({id: f.id[i], x: f.x[i], y: f.y[i], w: f.w[i], h: f.h[i], label: f.classes[f.label[i]], score: f.score[i]});
      return out;
    },
    thresholds: function () { return {perClass: state.perClass, threshold: state.threshold, classes: classThresholds}; },
    effective: function () { return state.effective.map(function (a) { return {id: a.id, kind: a.kind, label: a.label, x: a.x, y: a.y, w: a.w, h: a.h, state: a.state}; }); },
    pending: function () { return state.annotations.filter(function (a) { return a.state === "saving"; }).length; },
    lastDraw: function () { return state.lastDraw; },
    overlayPixel: function (x, y) {  // RGBA of the overlay canvas at a page point (CSS pixels)
      const r = overlay.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
      return Array.from(ctx.getImageData(Math.round((x - r.left) * dpr), Math.round((y - r.top) * dpr), 1, 1).data);
    },
    loaded: function (kind) { return state.feeds[kind] ? state.feeds[kind].n : null; },
    setKind: setKind,
    zoomTo: function (x, y, w, h) {
      viewer.viewport.fitBounds(tiled.imageToViewportRectangle(x, y, w, h), true);
    },
  };

  init();
})();
