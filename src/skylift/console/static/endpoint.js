/* A server's live traffic from its /metrics (through the console): requests/s and latency. */
"use strict";

const endpointKey = () => {
  const input = document.getElementById("endpoint-key");
  return input && input.value.trim() ? { "X-Endpoint-Key": input.value.trim() } : {};
};

(function () {
  const page = sky.data();
  const url = "/api/endpoints/" + page.endpoint.id + "/metrics";
  const state = document.getElementById("endpoint-state");
  const note = document.getElementById("metrics-note");
  const WINDOW = 150; // points kept: 5 minutes at one scrape per 2 s
  const axes = { xaxis: { type: "date" } };
  Plotly.newPlot("chart-throughput", [
    { x: [], y: [], name: "requests/s", mode: "lines+markers", type: "scatter" },
    { x: [], y: [], name: "errors/s", mode: "lines+markers", type: "scatter" },
    { x: [], y: [], name: "tokens/s", mode: "lines+markers", type: "scatter", yaxis: "y2", visible: "legendonly" },
  ], sky.layout("Throughput (prediction requests)", Object.assign({ yaxis: { rangemode: "tozero" }, yaxis2: { overlaying: "y", side: "right", rangemode: "tozero", showgrid: false, zeroline: false } }, axes)), sky.config);
  Plotly.newPlot("chart-latency", [
    { x: [], y: [], name: "mean ms", mode: "lines+markers", type: "scatter" },
    { x: [], y: [], name: "p50 ms (bucket bound)", mode: "lines+markers", type: "scatter" },
    { x: [], y: [], name: "p99 ms (bucket bound)", mode: "lines+markers", type: "scatter" },
  ], sky.layout("Latency", Object.assign({ yaxis: { rangemode: "tozero" } }, axes)), sky.config);

  sky.poll(async () => {
    const r = await fetch(url, { headers: Object.assign({ Accept: "application/json" }, endpointKey()), credentials: "same-origin" });
    if (r.status === 401) { sky.signedOut(); return false; }
    const m = await r.json();
    if (r.status === 404) { state.textContent = "stopped"; state.className = "badge stopped"; note.textContent = m.error; return false; }
    state.textContent = m.state === "ok" ? "up" : m.state;
    state.className = "badge " + (m.state === "ok" ? "ok" : m.state);
    if (m.state !== "ok") { note.textContent = m.message + (m.status === 401 || m.status === 403 ? " (type a key with the metrics scope above)" : ""); return true; }
    const replicas = Object.entries(m.rss).map(([r, b]) => "replica " + r + " " + (b / 2 ** 20).toFixed(0) + " MiB").join(", ");
    note.textContent = sky.num(m.requests) + " prediction requests so far · " + replicas;
    if (m.rps === null) return true; // the first scrape: rates need two
    const t = [new Date(m.at * 1000)];
    Plotly.extendTraces("chart-throughput", { x: [t, t, t], y: [[m.rps], [m.errors_ps], [m.tokens_ps]] }, [0, 1, 2], WINDOW);
    Plotly.extendTraces("chart-latency", { x: [t, t, t], y: [[m.mean_ms], [m.p50_ms], [m.p99_ms]] }, [0, 1, 2], WINDOW);
    return true;
  }, 2000);
})();
