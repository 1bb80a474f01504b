/* Project dashboard: live job progress (polls the jobs API every 2 s), the Retrain button
   (202 -> the cycle's jobs appear; 409 -> the server's message), make-current / roll back, and a
   refresh of the versions, runs and scenes when a job finishes. */
(function () {
  "use strict";
  const api = window.LabelingApi;
  const cfg = api.config("dashboard-config");
  const ACTIVE = ["queued", "running"];
  const known = new Map();  // job id -> status seen last
  let timer = null;
  let polled = false;  // the first answer only records what is there

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
      api.el("td", {text: String(job.id)}), api.el("td", {text: job.kind}),
      api.el("td", {class: "job-status", text: job.status}),
      api.el("td", {}, [bar, api.el("span", {class: "hint", text: " " + done + "/" + total})]),
      msg,
    ]);
  }

  function refreshSections() {
    // Re-read this page and swap the parts a finished job changes (no full reload).
    return fetch(location.pathname, {credentials: "same-origin"}).then(function (r) { return r.text(); })
      .then(function (html) {
        const doc = new DOMParser().parseFromString(html, "text/html");
        for (const id of ["version-table", "run-table", "scene-list", "pending-count", "retrain-hint"]) {
          const fresh = doc.getElementById(id), old = document.getElementById(id);
          if (fresh && old) old.replaceWith(fresh);
          else if (fresh && !old && id !== "pending-count") location.reload();
        }
        const freshButton = doc.getElementById("retrain-button"), button = document.getElementById("retrain-button");
        if (freshButton && button) { button.disabled = freshButton.disabled; button.title = freshButton.title; }
        bindForms();
      });
  }

  function render(jobs) {
    const body = document.querySelector("#job-table tbody");
    if (!body) return false;
    let finished = false, active = false;
    body.replaceChildren();
    if (!jobs.length) body.appendChild(api.el("tr", {class: "empty"}, [api.el("td", {colspan: "5", text: "No jobs yet."})]));
    for (const job of jobs.slice(0, 15)) {
      body.appendChild(jobRow(job));
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
    if (finished) refreshSections();
    return active;
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
          message("Retrain cycle started: model v" + data.version + " (job " + data.job + ").", "ok");
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
  poll();
})();
