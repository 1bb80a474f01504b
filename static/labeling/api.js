/* Shared helpers of the review pages: JSON calls with the CSRF header, UUIDs, small DOM bits.
   Plain JS, no build step; everything hangs off window.LabelingApi. */
(function () {
  "use strict";

  function cookie(name) {
    const hit = document.cookie.split(";").map(function (c) { return c.trim(); })
      .find(function (c) { return c.startsWith(name + "="); });
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return cookie("csrftoken") || (field ? field.value : "");
  }

  /* Resolves with the parsed JSON (or null for an empty body); rejects with an Error carrying
     .status and .body, whose message is the server's {"error": ...} when there is one. */
  function request(method, url, body, extra) {
    const headers = {"Accept": "application/json"};
    const init = {method: method, credentials: "same-origin", headers: headers};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    Object.assign(init, extra || {});
    return fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        let data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          const why = (data && data.error) || (response.status + " " + response.statusText);
          const err = new Error(why);
          err.status = response.status; err.body = data;
          throw err;
        }
        return data;
      });
    }, function (netErr) {
      const err = new Error("network error: " + netErr.message + " (is the server running?)");
      err.status = 0;
      throw err;
    });
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // Non-secure contexts (plain http on another host) lack randomUUID: RFC 4122 v4 by hand.
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, function (x) { return x.toString(16).padStart(2, "0"); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children || []) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  }

  function config(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : {};
  }

  /* Is the keyboard event typed into a form field (then page shortcuts stay out of the way)? */
  function typing(event) {
    const t = event.target;
    if (!t || !t.tagName) return false;
    if (t.isContentEditable) return true;
    if (t.tagName === "TEXTAREA" || t.tagName === "SELECT") return true;
    return t.tagName === "INPUT" && !["checkbox", "radio", "range", "button", "submit"].includes(t.type);
  }

  window.LabelingApi = {
    get: function (url, extra) { return request("GET", url, undefined, extra); },
    post: function (url, body) { return request("POST", url, body === undefined ? {} : body); },
    uuid: uuid, el: el, config: config, typing: typing, csrfToken: csrfToken,
    /* Every score, probability and threshold on the pages: three decimals (labeling.web.formatting
       prints the same on the server), so one number reads the same everywhere. */
    fixed3: function (x) { return x === null || x === undefined || !isFinite(x) ? "—" : Number(x).toFixed(3); },
    fill: function (template, values) {
      return template.replace(/\{(\w+)\}/g, function (_, k) { return encodeURIComponent(values[k]); });
    },
  };
})();
