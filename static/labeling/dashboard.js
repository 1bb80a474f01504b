/* Project dashboard: live job progress and durations (polls the jobs API every 2 s), the Retrain
   button (202 -> the cycle's jobs appear; 409 -> the server's message), make-current / roll back,
   and a refresh of the versions, runs, scenes, pending annotations and the last cycle's effect
   whenever a job moves (a new status, phase or progress), so nothing waits for a reload. */
(function () {
  "use strict";
  const api = window.LabelingApi;
  const cfg = api.config("dashboard-config");
  const ACTIVE = ["queued", "running"];
  const known = new Map();  // job id -> status seen last
  let timer = null;
  let polled = false;  // the first answer only records what is there
  const seen = new Map();  // job id -> "status|done|message" seen last
  let refreshing = null;
  // The retrain cycle the status line follows (started here, or running when the page loaded).
  const followed = {job: cfg.cycle_job || null, version: null};

  /* "12 s", "3 min 05 s" */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    return m < 60 ? m + " min " + String(s % 60).padStart(2, "0") + " s"
      : Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function jobSeconds(job) {
    const start = job.started_at || (job.finished_at ? job.created_at : null);
    if (!start) return null;
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return (end - Date.parse(start)) / 1000;
  }

  /* Running jobs' times tick every second between polls. */
  function tick() {
    document.querySelectorAll("#job-table tr.job-running td.job-time[data-started]").forEach(function (td) {
      if (td.dataset.started) td.textContent = duration((Date.now() - Date.parse(td.dataset.started)) / 1000);
    });
  }

  function pct(job) {
    if (job.status === "done") return 100;
    const total = job.progress_total !== undefined ? job.progress_total : job.total;
    const done = job.progress_done !== undefined ? job.progress_done : job.done;
    return total ? Math.min(100, Math.round(100 * done / total)) : 0;
  }

  function jobRow(job) {
    const total = job.progress_total !== undefined ? job.progress_total : job.total;
    const done = job.progress_done !== undefined ? job.progress_done : job.done;
    const p = pct(job);
    const bar = api.el("div", {class: "progress", role: "progressbar", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": String(p)}, [api.el("span", {style: "width: " + p + "%"})]);
    const msg = api.el("td", {class: "job-message"});
    if (job.error) msg.appendChild(api.el("span", {class: "error", text: job.error.slice(0, 160)}));
    else msg.textContent = job.message || "";
    return api.el("tr", {"data-job": String(job.id), class: "job-" + job.status}, [
      api.el("td", {text: String(job.id)}), api.el("td", {class: "job-kind", title: job.kind, text: job.label || job.kind}),
      api.el("td", {class: "job-status", text: job.status}),
      api.el("td", {}, [bar, api.el("span", {class: "hint", text: " " + done + "/" + total})]),
      api.el("td", {class: "job-time", "data-started": job.started_at || "", text: duration(jobSeconds(job))}),
      msg,
    ]);
  }

  function refreshSections() {
    // Re-read this page and swap the parts a job changes (no full reload); one read at a time.
    if (refreshing) return refreshing;
    refreshing = fetch(location.pathname, {credentials: "same-origin"}).then(function (r) { return r.text(); })
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        for (const id of ["version-table", "run-table", "scene-list", "pending-line", "retrain-hint", "cycle-effect"]) {
          const fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) old.replaceWith(fresh);
          else if (fresh && !old && id !== "pending-line") location.reload();
        }
        const freshButton = doc.getElementById("retrain-button"), button = document.getElementById("retrain-button");
        if (freshButton && button) { button.disabled = freshButton.disabled; button.title = freshButton.title; button.textContent = freshButton.textContent; }
        bindForms();
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      }).finally(function () { refreshing = null; });
    return refreshing;
  }

  function render(jobs) {
    const body = document.querySelector("#job-table tbody");
    if (!body) return false;
    let finished = false, active = false;
    body.replaceChildren();
    if (!jobs.length) body.appendChild(api.el("tr", {class: "empty"}, [api.el("td", {colspan: "6", text: "No jobs yet."})]));
    for (const job of jobs.slice(0, 15)) {
      body.appendChild(jobRow(job));
      // A cycle's phases move its version (training, scoring, ready) and the pending count.
      const signature = job.status + "|" + (job.progress_done !== undefined ? job.progress_done : job.done) + "|" + job.message;
      if (polled && seen.get(job.id) !== signature) finished = true;
      seen.set(job.id, signature);
      const before = known.get(job.id);
      if (before !== undefined && ACTIVE.includes(before) && !ACTIVE.includes(job.status)) finished = true;
      if (before === undefined && polled) finished = true;  // a new job: show its version
      if (ACTIVE.includes(job.status)) active = true;
      known.set(job.id, job.status);
    }
    const cycle = jobs.some(function (j) { return j.kind === "retrain_cycle" && ACTIVE.includes(j.status); });
    const button = document.getElementById("retrain-button");
    if (button && cycle) { button.disabled = true; button.title = "A cycle is running"; }
    polled = true;
    followCycle(jobs);
    if (finished) refreshSections();
    return active;
  }

  /* The status line says where the followed cycle is, never "started" after it ended: running
     (with its phase), scoring the scenes, ended, or failed (with the reason). */
  function followCycle(jobs) {
    if (!followed.job) return;
    const job = jobs.find(function (j) { return j.id === followed.job; });
    if (!job) return;
    // "First model (model v1, job 5)", "Retrain cycle (job 9)": the job's kind in words.
    const what = (job.label || job.kind) + " (" + (followed.version ? "model v" + followed.version + ", " : "") + "job " + job.id + ")";
    if (ACTIVE.includes(job.status)) {
      message(what + " running" + (job.message ? ": " + job.message : "") + ".", "ok");
    } else if (job.status === "failed") {
      message(what + " failed: " + (job.error || "no reason recorded"), "error");
      followed.job = null;
    } else if (jobs.some(function (j) { return j.kind === "score" && ACTIVE.includes(j.status); })) {
      message(what + ": trained; scoring the scenes…", "ok");
    } else {
      message(what + " ended: see its version in Model versions.", "ok");
      followed.job = null;
    }
  }

  function poll() {
    if (!cfg.jobs_url) return;
    if (document.hidden) { timer = setTimeout(poll, cfg.poll_ms || 2000); return; }
    api.get(cfg.jobs_url + "?limit=15").then(function (data) {
      render(data.jobs || []);
    }).catch(function () { /* keep polling: the server may be restarting */ })
      .finally(function () { timer = setTimeout(poll, cfg.poll_ms || 2000); });
  }

  function message(text, kind) {
    const box = document.getElementById("retrain-message");
    if (!box) return;
    box.hidden = false; box.textContent = text; box.className = kind || "";
  }

  function bindForms() {
    const form = document.getElementById("retrain-form");
    if (form && !form.dataset.bound) {
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const button = document.getElementById("retrain-button");
        button.disabled = true;
        api.post(form.action).then(function (data) {
          followed.job = data.job; followed.version = data.version;
          message((data.label || "Retrain cycle") + " started: model v" + data.version + " (job " + data.job + ").", "ok");
          clearTimeout(timer); poll();
        }).catch(function (err) {
          message(err.message, err.status === 409 ? "warn" : "error");
          button.disabled = err.status === 409;
        });
      });
    }
    document.querySelectorAll("form.make-current").forEach(function (f) {
      if (f.dataset.bound) return;
      f.dataset.bound = "1";
      f.addEventListener("submit", function (event) {
        event.preventDefault();
        api.post(f.action).then(function (data) {
          message("Model v" + data.number + " is now current.", "ok");
          refreshSections();
        }).catch(function (err) { message(err.message, "error"); });
      });
    });
  }

  document.querySelectorAll("#job-table tbody tr[data-job]").forEach(function (tr) {
    known.set(Number(tr.dataset.job), tr.querySelector(".job-status").textContent.trim());
  });
  bindForms();
  setInterval(tick, 1000);
  poll();
})();
