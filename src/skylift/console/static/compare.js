/* Compare 2-4 runs: one line per run for the chosen metric. */
"use strict";

(function () {
  const runs = sky.data().runs;
  const select = document.getElementById("metric");

  function draw() {
    const key = select.value;
    const traces = Object.entries(runs).map(([id, d]) => ({
      x: d.history.map(r => r.epoch), y: d.history.map(r => (key in r ? r[key] : null)),
      name: sky.plain(id), mode: "lines+markers", type: "scatter",
    }));
    Plotly.react("chart-compare", traces, sky.layout(key + " by epoch", { xaxis: { title: { text: "epoch" } } }), sky.config);
  }

  select.addEventListener("change", draw);
  draw();
})();
