/* Runs list: re-drawn from /api/runs every 2 s, so a new run appears and a running one moves on. */
"use strict";

(function () {
  const tbody = document.querySelector("#runs-table tbody");
  const empty = document.getElementById("runs-empty");
  const button = document.getElementById("compare-button");
  const ticked = new Set();

  function metrics(run) {
    const keys = Object.keys(run.metrics).filter(k => k.startsWith("val_")).slice(0, 3);
    return keys.map(k => k + " " + sky.num(run.metrics[k])).join(", ") || "-";
  }

  function update() {
    const n = ticked.size;
    button.disabled = n < 2 || n > 4;
    button.textContent = n ? "Compare " + n : "Compare";
  }

  function draw(runs) {
    empty.hidden = runs.length > 0;
    sky.fill(tbody, runs.map(run => {
      const box = sky.el("input", { type: "checkbox", name: "run", value: run.run_id, checked: ticked.has(run.run_id) });
      box.addEventListener("change", () => { box.checked ? ticked.add(run.run_id) : ticked.delete(run.run_id); update(); });
      const epochs = run.epochs + (run.epochs_total ? " / " + run.epochs_total : "");
      return sky.el("tr", { "data-run": run.run_id },
        sky.el("td", {}, box),
        sky.el("td", {}, sky.link("/runs/" + encodeURIComponent(run.run_id), run.run_id), sky.el("div", { class: "muted" }, run.name)),
        sky.el("td", {}, sky.el("span", { class: "badge " + run.status }, run.status)),
        sky.el("td", {}, run.task),
        sky.el("td", {}, epochs),
        sky.el("td", {}, metrics(run)),
        sky.el("td", {}, sky.seconds(run.train_seconds)),
        sky.el("td", {}, run.workers === null ? "-" : run.workers),
        sky.el("td", {}, sky.ago(run.started)));
    }));
    update();
  }

  draw(sky.data().runs);
  setTimeout(() => sky.poll(async () => { draw((await sky.get("/api/runs")).runs); return true; }, 2000), 2000);
})();
