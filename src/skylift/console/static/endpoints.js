/* The running servers, re-read every 3 s. */
"use strict";

(function () {
  const tbody = document.querySelector("#endpoints-table tbody");
  const empty = document.getElementById("endpoints-empty");

  function draw(list) {
    empty.hidden = list.length > 0;
    sky.fill(tbody, list.map(e => sky.el("tr", { "data-id": e.id },
      sky.el("td", {}, sky.link("/endpoints/" + e.id, (e.host ? e.host + " " : "") + "pid " + e.pid)),
      sky.el("td", {}, e.url),
      sky.el("td", {}, Object.entries(e.models).map(([n, v]) => n + ":" + v).join(", ")),
      sky.el("td", {}, e.replicas),
      sky.el("td", {}, e.auth ? "on" : "off"),
      sky.el("td", {}, e.tls ? "on" : "off"),
      sky.el("td", {}, sky.ago(e.started)))));
  }

  draw(sky.data().endpoints);
  setTimeout(() => sky.poll(async () => { draw((await sky.get("/api/endpoints")).endpoints); return true; }, 3000), 3000);
})();
