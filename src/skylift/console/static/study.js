/* A study: Optuna's own figures (Plotly JSON) and the trials table, polled while trials run. */
"use strict";

(function () {
  const page = sky.data();
  for (const [key, fig] of Object.entries(page.figures)) {
    const layout = Object.assign({}, fig.layout || {}, { margin: { l: 64, r: 16, t: 48, b: 48 } });
    Plotly.newPlot("figure-" + key, fig.data || [], layout, sky.config);
  }

  function draw(data) {
    const table = document.getElementById("trials-table");
    const params = [...new Set(data.trials.flatMap(t => Object.keys(t.params)))].sort();
    const metric = data.study.metric || "value";
    table.tHead.replaceChildren(sky.el("tr", {},
      ["trial", "state", metric, ...params, "pruned", "time", "run"].map(h => sky.el("th", {}, h))));
    sky.fill(table.tBodies[0], data.trials.map(t => sky.el("tr", { id: "trial-" + t.number, class: t.number === data.study.best_trial ? "selected" : null },
      sky.el("td", {}, t.number),
      sky.el("td", {}, sky.el("span", { class: "badge " + t.state }, t.state)),
      sky.el("td", {}, sky.num(t.value)),
      params.map(p => sky.el("td", {}, p in t.params ? (typeof t.params[p] === "number" ? sky.num(t.params[p]) : t.params[p]) : "-")),
      sky.el("td", {}, t.pruned ? "at epoch " + t.last_epoch : "no"),
      sky.el("td", {}, sky.seconds(t.seconds)),
      sky.el("td", {}, t.run_id ? sky.link("/runs/" + encodeURIComponent(t.run_id), t.run_id) : "-"))));
    return data.trials.some(t => t.state === "running" || t.state === "waiting");
  }

  const running = draw(page.data);
  if (running) {
    const url = "/api/studies/" + encodeURIComponent(page.name);
    setTimeout(() => sky.poll(async () => draw(await sky.get(url)), 3000), 3000);
  }
})();
