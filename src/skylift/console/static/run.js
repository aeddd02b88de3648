/* One run: curves, epoch table and results drawn from /api/runs/<id>, polled while the run trains. */
"use strict";

(function () {
  const page = sky.data();
  const url = "/api/runs/" + encodeURIComponent(page.run_id);
  const SKIP = new Set(["epoch", "seconds", "samples_per_s", "peak_mb", "lr"]);
  let drawnResults = false;

  function series(history, key) {
    return { x: history.map(r => r.epoch), y: history.map(r => (key in r ? r[key] : null)), name: key, mode: "lines+markers", type: "scatter" };
  }

  function curves(d) {
    const h = d.history;
    const keys = Object.keys(Object.assign({}, ...h));
    const lossKeys = ["loss", "val_loss"]; // drawn (empty) before the first epoch ends
    const metricKeys = keys.filter(k => !SKIP.has(k) && !lossKeys.includes(k) && !k.endsWith("_per_s") && !k.startsWith("tokens"));
    const best = d.best_epoch ? { shapes: [{ type: "line", x0: d.best_epoch, x1: d.best_epoch, yref: "paper", y0: 0, y1: 1, line: { dash: "dot", color: "#999" } }] } : {};
    const axes = { xaxis: { title: { text: "epoch" }, dtick: h.length < 12 ? 1 : undefined }, ...best };
    Plotly.react("chart-loss", lossKeys.map(k => series(h, k)), sky.layout("Loss", axes), sky.config);
    Plotly.react("chart-metrics", metricKeys.map(k => series(h, k)), sky.layout("Validation metrics", axes), sky.config);
  }

  function facts(d) {
    const run = d.run;
    const status = document.getElementById("run-status");
    status.textContent = run.status;
    status.className = "badge " + run.status;
    const epochs = run.epochs + (run.epochs_total ? " of " + run.epochs_total : "") + " epochs";
    const workers = run.workers === null ? "" : " · " + run.workers + " worker(s)";
    document.getElementById("run-facts").textContent =
      run.name + " · " + run.task + " · " + epochs + " · train time " + sky.seconds(run.train_seconds) + workers + " · updated " + sky.ago(run.updated);
    const reg = document.getElementById("run-registered");
    if (d.registered) {
      const [name, version] = d.registered.split(":");
      reg.replaceChildren("registered as ", sky.link("/models/" + encodeURIComponent(name) + "?version=" + encodeURIComponent(version), d.registered));
    }
  }

  function epochs(d) {
    const table = document.getElementById("epochs-table");
    const keys = Object.keys(Object.assign({}, ...d.history)).filter(k => k !== "peak_mb");
    table.tHead.replaceChildren(sky.el("tr", {}, keys.map(k => sky.el("th", {}, k))));
    sky.fill(table.tBodies[0], d.history.map(r =>
      sky.el("tr", { class: r.epoch === d.best_epoch ? "selected" : null }, keys.map(k => sky.el("td", {}, k === "epoch" ? r[k] : sky.num(r[k]))))));
  }

  function results(d) {
    const done = d.run.status !== "running" && d.run.status !== "stopped";
    document.getElementById("results-pending").hidden = done;
    if (!done || drawnResults) return;
    drawnResults = true;
    sky.fill(document.querySelector("#test-table tbody"), Object.entries(d.test).map(([k, v]) =>
      sky.el("tr", {}, sky.el("th", {}, "test " + k), sky.el("td", {}, sky.num(v)))));
    if (d.confusion) {
      const names = (d.classes || d.confusion.map((_, i) => String(i))).map(sky.plain);
      const box = document.getElementById("chart-confusion");
      box.hidden = false;
      Plotly.newPlot(box, [{ z: d.confusion, x: names, y: names, type: "heatmap", colorscale: "Blues", hovertemplate: "true %{y}, predicted %{x}: %{z}<extra></extra>" }],
        sky.layout("Confusion matrix (test set)", { xaxis: { title: { text: "predicted" }, type: "category" }, yaxis: { title: { text: "true" }, type: "category", autorange: "reversed" } }), sky.config);
    }
    sky.fill(document.getElementById("pictures"), d.pictures.map(p =>
      sky.el("figure", {}, sky.el("img", { src: "/runs/" + encodeURIComponent(page.run_id) + "/files/" + encodeURIComponent(p), alt: p }), sky.el("figcaption", { class: "muted" }, p))));
    if (d.samples.length) {
      const last = d.samples[d.samples.length - 1].epoch;
      document.getElementById("samples").replaceChildren(sky.el("h3", {}, "Samples after epoch " + last),
        ...d.samples.filter(s => s.epoch === last).map(s => sky.el("p", {}, sky.el("span", { class: "muted" }, s.prompt), " → ", s.continuation)));
    }
  }

  function draw(d) { facts(d); curves(d); epochs(d); results(d); }

  draw(page.detail);
  if (page.detail.run.status === "running") {
    setTimeout(() => sky.poll(async () => {
      const d = await sky.get(url);
      draw(d);
      return d.run.status === "running";
    }, 1500), 1500);
  }
})();
