/* Review queue: one window at a time (enlarged, with context), the model's guess and
   probabilities beside it, answered from the keyboard. Answers are saved at once as "review"
   annotations (optimistic, retried with the same client_id); Backspace goes back and appends an
   undo; s skips a window (recorded as a skip, never a label: it comes back after other windows).
   The next window is fetched (and its image loaded) while the reviewer looks at this one. While
   it loads, the answered window is greyed out, the buttons are disabled and a key is refused
   with a visible note: an answer always applies to the window on screen. */
(function () {
  "use strict";
  const api = window.LabelingApi;
  const cfg = api.config("queue-config");
  const $ = function (id) { return document.getElementById(id); };
  const classNames = cfg.classes.map(function (c) { return c.name; });
  const colourOf = Object.fromEntries(cfg.classes.map(function (c) { return [c.name, c.color]; }));

  const state = {
    strategy: cfg.strategy, scene: cfg.scene,
    current: null,        // the item on screen
    ahead: [],            // items to show before asking the server again (after going back)
    prefetch: null,       // Promise of the next item from the server
    history: [],          // [{item, answer}] newest last
    answers: [],          // every answer object of this session (for retry)
    times: [],            // answer timestamps (ms) for the throughput counter
    count: 0,
    skips: 0,
    refused: 0,           // keys refused while the next window loaded
    loading: false,       // between an answer and the next window on screen
    generation: 0,        // bumps when strategy or scene changes: late answers are dropped
    done: false,
  };

  /* ahead: 1 when asked for while a window is on screen (its answer comes first). */
  function queueUrl(ahead) {
    const q = new URLSearchParams({strategy: state.strategy});
    if (ahead) q.set("ahead", "1");
    if (state.scene) q.set("scene", state.scene);
    return cfg.urls.queue + "?" + q.toString();
  }

  function imageUrl(item) {
    const q = new URLSearchParams({x: item.x, y: item.y, size: item.w, context: item.w});
    return api.fill(cfg.urls.window_image, {scene: item.scene}) + "?" + q.toString();
  }

  /* The next item from the server with its picture already loaded (or {done: true}). */
  function fetchItem(ahead) {
    const generation = state.generation;
    return api.get(queueUrl(ahead)).then(function (item) {
      if (!item || item.done) return {done: true, generation: generation};
      item.generation = generation;
      return new Promise(function (resolve) {
        const img = new Image();
        img.onload = img.onerror = function () { resolve(item); };
        img.src = imageUrl(item);
      });
    });
  }

  /* The window after the one on screen, asked for once this page's answers are saved (the
     server counts them, and the one on screen as ahead, so a skipped window comes back after
     exactly REVIEW_SKIP_RETURNS_AFTER answers, as the help says). */
  function prefetch() {
    if (state.prefetch) return;
    const saving = state.answers.filter(function (a) { return a.state === "saving"; }).map(function (a) { return a.promise; });
    state.prefetch = Promise.all(saving).then(function () { return fetchItem(1); });
  }

  /* Between an answer and the next window on screen: the old window greyed out, buttons off. */
  function setLoading(on) {
    state.loading = on;
    if (on) state.current = null;
    document.querySelector(".queue-window").classList.toggle("loading", on);
    $("queue-loading").hidden = !on;
    document.querySelectorAll("#answer-buttons button").forEach(function (b) { b.disabled = on; });
    if (!on) $("accept-guess").disabled = Boolean($("accept-guess").dataset.needsChoice);
  }

  function takeNext() {
    setLoading(true);
    if (state.ahead.length) { const item = state.ahead.shift(); prefetch(); return show(item); }
    const pending = state.prefetch || fetchItem();
    state.prefetch = null;
    setStatus("Loading the next window…");
    return pending.then(function (item) {
      if (item.generation !== state.generation) return takeNext();
      if (item.done) { showDone(); return; }
      return show(item).then(prefetch);
    }).catch(function (err) {
      setStatus("");
      showError("Could not get the next window: " + err.message, function () { hideError(); takeNext(); });
    });
  }

  /* Puts the item on screen; it becomes the one keys answer only once it is painted. */
  function show(item) {
    setLoading(true);
    const picture = new Image();
    picture.src = imageUrl(item);
    const decoded = picture.decode ? picture.decode().catch(function () {}) : Promise.resolve();
    return decoded.then(function () {
      if (item.generation !== undefined && item.generation !== state.generation) return;
      render(item);
      // Two frames: the new picture and texts are painted before a key can answer them.
      return new Promise(function (resolve) {
        requestAnimationFrame(function () { requestAnimationFrame(function () {
          state.current = item; state.done = false;
          setLoading(false);
          if ($("queue-status").textContent.startsWith("Loading") || state.refusedNote) { setStatus(""); state.refusedNote = false; }
          renderSaves();
          resolve();
        }); });
      });
    });
  }

  function render(item) {
    $("queue-empty").hidden = true;
    const img = $("queue-image");
    img.hidden = false;
    img.src = imageUrl(item);
    img.dataset.x = item.x; img.dataset.y = item.y; img.dataset.scene = item.scene;
    $("queue-guess").textContent = item.guess;
    $("queue-guess").style.color = colourOf[item.guess] || "";
    // No class reaches its threshold, yet one ranks above the negative class: Enter would take
    // the rule's word against the ranking, so the reviewer chooses (the reason says why).
    $("accept-label").textContent = item.needs_choice ? "off: choose a class or " + cfg.negative : item.guess;
    $("accept-guess").dataset.needsChoice = item.needs_choice ? "1" : "";
    $("queue-reason").classList.toggle("needs-choice", Boolean(item.needs_choice));
    $("queue-score").textContent = "p = " + api.fixed3(item.score) + (item.model_version ? " · model v" + item.model_version : "");
    $("queue-reason").textContent = item.reason ? "Why: " + item.reason + "." : "";
    const thresholds = item.thresholds || {};
    const body = $("queue-probs").querySelector("tbody");
    body.replaceChildren();
    const entries = Object.entries(item.probs || {}).sort(function (a, b) { return b[1] - a[1]; });
    for (const [name, p] of entries) {
      const bar = api.el("div", {class: "prob-bar"}, [api.el("span", {style: "width: " + Math.round(100 * p) + "%; background: " + (colourOf[name] || "#9e9e9e")})]);
      const t = thresholds[name];
      const cut = t === undefined ? "" : (p >= t ? "≥ " : "< ") + api.fixed3(t);
      body.appendChild(api.el("tr", {"data-class": name, class: t !== undefined && p < t ? "below" : ""}, [
        api.el("th", {text: name}), api.el("td", {text: api.fixed3(p)}), api.el("td", {}, [bar]),
        api.el("td", {class: "cut", text: cut, title: t === undefined ? "" : name + "'s threshold: below it the window counts as " + cfg.negative}),
      ]));
    }
    const viewer = api.fill(cfg.urls.viewer, {scene: item.scene});
    const where = $("queue-where");
    where.replaceChildren("Scene " + item.scene + ", window at (" + item.x + ", " + item.y + "), " + item.w + " px · ",
      api.el("a", {href: viewer, target: "_blank", text: "open the scene"}));
    if (item.remaining !== undefined) $("queue-remaining").textContent = String(item.remaining);
  }

  function showDone() {
    setLoading(false);
    state.current = null; state.done = true;
    $("queue-image").hidden = true;
    $("queue-empty").hidden = false;
    $("queue-guess").textContent = "—";
    $("queue-score").textContent = "";
    $("queue-reason").textContent = "";
    $("queue-probs").querySelector("tbody").replaceChildren();
    $("queue-where").textContent = "";
    $("queue-remaining").textContent = "0";
    setStatus("");
  }

  // ------------------------------------------------------------------ answers

  function post(answer) {
    answer.state = "saving";
    let request;
    if (answer.kind === "skip") {
      const it = answer.item;
      request = api.post(cfg.urls.queue_skip, {scene: it.scene, x: it.x, y: it.y});
    } else if (answer.kind === "undo") {
      request = Promise.resolve(answer.target.promise).then(function () {
        if (!answer.target.id) throw new Error("the answer it undoes was never saved");
        return api.post(api.fill(cfg.urls.undo, {id: answer.target.id}), {client_id: answer.client_id});
      });
    } else {
      const it = answer.item;
      request = api.post(api.fill(cfg.urls.annotations, {scene: it.scene}), {
        client_id: answer.client_id, kind: "review", label: answer.label,
        x: it.x, y: it.y, w: it.w, h: it.h, detection: null,
      });
    }
    answer.promise = request.then(function (row) {
      answer.id = row.id || row.skipped; answer.state = "saved";
    }).catch(function (err) {
      answer.state = "failed"; answer.error = err.message;
    }).finally(renderSaves);
    renderSaves();
    return answer.promise;
  }

  function renderSaves() {
    const failed = state.answers.filter(function (a) { return a.state === "failed"; });
    const saving = state.answers.filter(function (a) { return a.state === "saving"; }).length;
    if (failed.length) showError(failed.length + " answer(s) not saved: " + failed[failed.length - 1].error, retry);
    else hideError();
    $("queue-status").dataset.saving = String(saving);
    if (!failed.length && !state.refusedNote && !$("queue-status").textContent.startsWith("Loading"))
      setStatus(saving ? "Saving " + saving + "…" : (state.answers.length ? "All answers saved" : ""));
    renderHistory();
  }

  /* Not sure: the window is recorded as skipped (no label) and comes back after other windows. */
  function skip() {
    const item = state.current;
    if (!item) return;
    const a = {client_id: api.uuid(), kind: "skip", label: null, item: item, state: "saving"};
    state.answers.push(a);
    state.history.push({item: item, answer: a});
    state.skips++;
    post(a);
    takeNext();
  }

  /* A key pressed while the next window loads: refused, and the page says so. */
  function refuse(key) {
    state.refused++;
    state.refusedNote = true;
    setStatus("Not applied (" + (key === " " ? "space" : key) + "): the next window is still loading. Answer it when it shows.");
    const status = $("queue-status");
    status.classList.remove("refused"); void status.offsetWidth; status.classList.add("refused");
  }

  /* Enter (or space) accepts the guess, unless the guess needs a choice (item.needs_choice). */
  function accept(key) {
    const item = state.current;
    if (!item) return;
    if (!item.needs_choice) { answer(item.guess); return; }
    state.refusedNote = true;
    setStatus("Not applied (" + (key === " " ? "space" : key) + "): no class reaches its threshold, yet one ranks above " +
      cfg.negative + ". Choose: a class's number, or 0 / n for " + cfg.negative + ".");
    const status = $("queue-status");
    status.classList.remove("refused"); void status.offsetWidth; status.classList.add("refused");
  }

  function retry() {
    for (const a of state.answers) if (a.state === "failed") post(a);
  }

  function answer(label) {
    const item = state.current;
    if (!item || state.loading) return;
    const a = {client_id: api.uuid(), kind: "review", label: label, item: item, state: "saving"};
    state.answers.push(a);
    state.history.push({item: item, answer: a});
    state.count++;
    state.times.push(Date.now());
    $("review-count").textContent = String(state.count);
    updateRate();
    addToMix(label, 1);
    post(a);
    takeNext();
  }

  /* The class mix of this cycle's answers: the server's count at page load, plus this
     reviewer's answers since (minus the ones undone). */
  const mix = Object.assign({}, cfg.class_mix || {});
  function addToMix(label, n) {
    mix[label] = Math.max(0, (mix[label] || 0) + n);
    let total = 0;
    for (const v of Object.values(mix)) total += v;
    const bar = document.querySelector('#class-mix-bar span[data-class="' + CSS.escape(label) + '"]');
    if (bar) bar.style.flexGrow = String(mix[label]);
    const count = document.querySelector('#class-mix li[data-class="' + CSS.escape(label) + '"] strong');
    if (count) count.textContent = String(mix[label]);
    $("class-mix-total").textContent = String(total);
  }

  function back() {
    const last = state.history.pop();
    if (!last) { setStatus("Nothing to go back to."); return; }
    if (state.current) state.ahead.unshift(state.current);
    const target = last.answer;
    if (target.kind === "skip") {
      target.undone = true;  // nothing to take back on the server: a skip is no label
      state.skips = Math.max(0, state.skips - 1);
      show(last.item);
      setStatus("Back to the window you skipped: answer it (or skip it again).");
      return;
    }
    if (target.state === "failed" && !target.id) {
      target.state = "dropped";
    } else {
      const u = {client_id: api.uuid(), kind: "undo", target: target, item: last.item, state: "saving"};
      state.answers.push(u);
      post(u);
    }
    target.undone = true;
    addToMix(target.label, -1);
    state.count = Math.max(0, state.count - 1);
    state.times.pop();
    $("review-count").textContent = String(state.count);
    updateRate();
    show(last.item).then(function () { setStatus("Back to the previous window: its answer was undone; answer it again."); });
  }

  function renderHistory() {
    const list = $("queue-history");
    list.replaceChildren();
    const rows = state.answers.filter(function (a) { return a.kind === "review" || a.kind === "skip"; }).slice(-8).reverse();
    for (const a of rows) {
      const what = a.kind === "skip" ? "skipped (comes back later)" : a.label;
      const text = what + " at (" + a.item.x + ", " + a.item.y + ")" + (a.undone ? " — undone" : "");
      list.appendChild(api.el("li", {class: "answer-" + a.state + (a.undone ? " undone" : ""), text: text + (a.state === "saving" ? " …" : a.state === "failed" ? " — not saved" : "")}));
    }
  }

  function updateRate() {
    const now = Date.now();
    while (state.times.length && now - state.times[0] > 60000) state.times.shift();
    const first = state.times[0];
    let rate = state.times.length;
    if (first && now - first < 60000) {
      const seconds = Math.max(10, (now - first) / 1000);  // extrapolate short sessions, not wildly
      rate = state.times.length * 60 / seconds;
    }
    $("review-rate").textContent = rate >= 10 ? String(Math.round(rate)) : rate.toFixed(1);
  }

  // ------------------------------------------------------------------ page bits

  function setStatus(text) { $("queue-status").textContent = text; }

  let retryAction = null;
  function showError(text, onRetry) {
    $("queue-error").hidden = false; $("queue-error-text").textContent = text;
    retryAction = onRetry;
  }
  function hideError() { $("queue-error").hidden = true; retryAction = null; }

  /* Give a window back to the queue (we will not answer it), so other reviewers get it now. */
  function release(item) {
    if (!item || item.done) return Promise.resolve();
    return api.post(cfg.urls.queue_release, {scene: item.scene, x: item.x, y: item.y})
      .catch(function () { /* the lease expires by itself */ });
  }

  function restart() {
    state.generation++;
    const abandoned = [state.current].concat(state.ahead).map(release);
    if (state.prefetch) abandoned.push(state.prefetch.then(release, function () {}));
    state.prefetch = null; state.ahead = []; state.current = null;
    const q = new URLSearchParams(location.search);
    q.set("strategy", state.strategy);
    if (state.scene) q.set("scene", state.scene); else q.delete("scene");
    history.replaceState(null, "", location.pathname + "?" + q.toString());
    Promise.all(abandoned).then(takeNext);
  }

  function isAnswerKey(key) {
    return key === "Enter" || key === " " || key === "Backspace" || key === "0" || /^[1-9]$/.test(key) ||
      ["n", "s"].includes(key.toLowerCase());
  }

  function onKey(event) {
    if (api.typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const help = $("help-overlay");
    let handled = true;
    if (key === "?") help.hidden = !help.hidden;
    else if (key === "Escape") help.hidden = true;
    else if (key.toLowerCase() === "c" && !event.repeat) $("queue-centre").classList.toggle("off");
    else if (event.repeat) handled = key === "Enter" || key === " " || key === "Backspace";  // no runaway answers
    else if (state.loading && isAnswerKey(key)) refuse(key);
    else if (key === "Backspace") back();
    else if (key.toLowerCase() === "s") skip();
    else if (key === "Enter" || key === " ") accept(key);
    else if (key === "0" || key.toLowerCase() === "n" || key === String(classNames.length + 1)) answer(cfg.negative);
    else if (/^[1-9]$/.test(key) && Number(key) <= classNames.length) answer(classNames[Number(key) - 1]);
    else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); }
  }

  function init() {
    if (!cfg.urls.queue) { showError("The review queue API is not available on this server.", null); return; }
    document.querySelectorAll("[data-answer]").forEach(function (b) {
      b.addEventListener("click", function () { answer(b.dataset.answer); b.blur(); });
    });
    $("accept-guess").addEventListener("click", function (e) { accept("Enter"); e.currentTarget.blur(); });
    $("back-button").addEventListener("click", function (e) { back(); e.target.blur(); });
    $("skip-button").addEventListener("click", function (e) { skip(); e.currentTarget.blur(); });
    $("queue-retry").addEventListener("click", function () { if (retryAction) retryAction(); });
    $("strategy").addEventListener("change", function (e) { state.strategy = e.target.value; e.target.blur(); restart(); });
    $("scene-filter").addEventListener("change", function (e) { state.scene = e.target.value ? Number(e.target.value) : null; e.target.blur(); restart(); });
    $("help-link").addEventListener("click", function (e) { e.preventDefault(); $("help-overlay").hidden = false; });
    $("help-close").addEventListener("click", function () { $("help-overlay").hidden = true; });
    window.addEventListener("keydown", onKey, true);
    window.addEventListener("beforeunload", function (e) {
      if (state.answers.some(function (a) { return a.state === "saving" || a.state === "failed"; })) { e.preventDefault(); e.returnValue = ""; }
    });
    setInterval(updateRate, 1000);
    takeNext();
  }

  window.reviewQueue = {
    current: function () { return state.current; },
    count: function () { return state.count; },
    skips: function () { return state.skips; },
    loading: function () { return state.loading; },
    refused: function () { return state.refused; },
    classMix: function () { return Object.assign({}, mix); },
    pending: function () { return state.answers.filter(function (a) { return a.state === "saving"; }).length; },
  };
  init();
})();
