/* Shared helpers of the console's pages: page data, fetch with the CSRF token, DOM building
   (text only: values are never parsed as HTML), number formats and Plotly defaults. */
"use strict";

const sky = {
  data() {
    return JSON.parse(document.getElementById("page-data").textContent);
  },

  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },

  signedOut() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  },

  async get(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) { sky.signedOut(); throw new Error("signed out"); }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  },

  async post(url, payload, headers) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: Object.assign({ "Content-Type": "application/json", "X-CSRF-Token": sky.csrf() }, headers || {}),
      body: JSON.stringify(payload),
    });
  },

  /* el("td", {class: "x"}, "text", childNode, ...): strings become text nodes. */
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  },

  link(href, text) { return sky.el("a", { href: href }, text); },

  /* Plotly reads a few HTML-like tags in labels: escape user text so it shows as typed. */
  plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  },

  num(v, digits) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "-";
    if (Number.isInteger(v) && Math.abs(v) >= 1) return v.toLocaleString("en-US");
    if (Math.abs(v) >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 1 });
    const d = digits || 4;
    return Math.abs(v) < 1e-3 && v !== 0 ? v.toPrecision(d) : v.toFixed(d);
  },

  seconds(s) {
    if (s === null || s === undefined) return "-";
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60);
    return m < 60 ? m + " min " + String(Math.floor(s % 60)).padStart(2, "0") + " s" : Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  },

  ago(stamp) { return stamp ? sky.seconds(Math.max(0, Date.now() / 1000 - stamp)) + " ago" : "-"; },

  /* Calls fn now and every `ms` while it returns true (fn may be async). */
  poll(fn, ms) {
    const tick = async () => {
      let again = true;
      try { again = await fn(); } catch (e) { if (e.message === "signed out") return; again = true; }
      if (again !== false) setTimeout(tick, ms);
    };
    tick();
  },

  layout(title, extra) {
    return Object.assign({
      title: { text: title, font: { size: 14 } },
      margin: { l: 56, r: 16, t: 40, b: 44 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    }, extra || {});
  },

  config: { displaylogo: false, responsive: true },

  fill(tbody, rows) { tbody.replaceChildren(...rows); },
};
