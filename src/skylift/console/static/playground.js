/* The playground: a real request to the server for each served model, by kind: draw or upload a
   digit (28x28 image models), a row of numbers, a text, or a streamed chat (language models). */
"use strict";

(function () {
  const page = sky.data();
  const base = "/api/endpoints/" + page.endpoint.id;
  const SIDE = 280; // drawing canvas, pixels; the model sees 28x28

  function output(answer, name) {
    return (answer.outputs || []).find(o => o.name === name);
  }

  function showAnswer(box, model, reply) {
    box.replaceChildren();
    if (reply.status >= 400 || !reply.answer || reply.answer.error) {
      const msg = reply.answer && reply.answer.error ? reply.answer.error : reply.error || ("HTTP " + reply.status);
      box.append(sky.el("p", { class: "error result-error" }, "the server answered " + reply.status + ": " + (typeof msg === "string" ? msg : JSON.stringify(msg))));
      return;
    }
    const a = reply.answer;
    const probs = output(a, "probabilities"), label = output(a, "label");
    if (probs) {
      const classes = (model.card.signature.classes || probs.data.map((_, i) => i)).map(c => sky.plain(c));
      box.append(sky.el("p", { class: "result" }, "predicted ", sky.el("span", { class: "label", id: "label-" + model.name }, label ? label.data[0] : "?"),
        sky.el("span", { class: "muted" }, " in " + reply.ms + " ms (" + a.model_name + ":" + a.model_version + ")")));
      const chart = sky.el("div", { class: "chart probabilities" });
      box.append(chart);
      const row = probs.data.slice(0, classes.length);
      Plotly.newPlot(chart, [{ x: classes, y: row, type: "bar" }], sky.layout("Probabilities", { xaxis: { type: "category" }, yaxis: { range: [0, 1] } }),
        Object.assign({}, sky.config, { displayModeBar: false }));
      box.dataset.probabilities = JSON.stringify(row);
      return;
    }
    const preds = output(a, "predictions"), emb = output(a, "embedding");
    if (preds) box.append(sky.el("p", { class: "result" }, "predicted ", sky.el("span", { class: "label" }, preds.data.map(v => sky.num(v)).join(", ")), sky.el("span", { class: "muted" }, " in " + reply.ms + " ms")));
    else if (emb) box.append(sky.el("p", { class: "result" }, "embedding of " + emb.shape[emb.shape.length - 1] + " values: " + emb.data.slice(0, 8).map(v => sky.num(v)).join(", ") + ", ..."));
    box.append(sky.el("details", {}, sky.el("summary", {}, "raw answer"), sky.el("pre", { class: "code" }, JSON.stringify(a, null, 1))));
  }

  async function infer(model, payload, box) {
    box.replaceChildren(sky.el("p", { class: "muted" }, "asking the server..."));
    const r = await sky.post(base + "/infer", Object.assign({ model: model.name }, payload), endpointKey());
    if (r.status === 401 && r.headers.get("www-authenticate")) { sky.signedOut(); return; }
    const body = await r.json();
    showAnswer(box, model, body.answer || body.error ? body : { status: r.status, error: body.error });
  }

  /* 28x28 features in [0, 1] from an image source: the ink's bounding box scaled to 20 px and
     centred, as MNIST (and builtin:digits28) centre their digits. */
  function features(source, w, h) {
    const probe = sky.el("canvas", { width: w, height: h }).getContext("2d", { willReadFrequently: true });
    probe.drawImage(source, 0, 0);
    const px = probe.getImageData(0, 0, w, h).data;
    let x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (px[(y * w + x) * 4] > 20) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
    }
    if (x1 < 0) return null;
    const bw = x1 - x0 + 1, bh = y1 - y0 + 1, scale = 20 / Math.max(bw, bh);
    const small = sky.el("canvas", { width: 28, height: 28 }).getContext("2d", { willReadFrequently: true });
    small.fillStyle = "#000"; small.fillRect(0, 0, 28, 28);
    small.imageSmoothingEnabled = true; small.imageSmoothingQuality = "high";
    small.drawImage(source, x0, y0, bw, bh, (28 - bw * scale) / 2, (28 - bh * scale) / 2, bw * scale, bh * scale);
    return grey(small);
  }

  function grey(ctx) {
    const d = ctx.getImageData(0, 0, 28, 28).data, out = [];
    for (let i = 0; i < 784; i++) out.push(d[i * 4] / 255);
    return out;
  }

  function preview(canvas, values) {
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(28, 28);
    values.forEach((v, i) => { const c = Math.round(v * 255); img.data.set([c, c, c, 255], i * 4); });
    const tmp = sky.el("canvas", { width: 28, height: 28 });
    tmp.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  }

  function digitPad(model, body) {
    const canvas = sky.el("canvas", { class: "digit", width: SIDE, height: SIDE, id: "pad-" + model.name });
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, SIDE, SIDE); };
    clear();
    let last = null;
    const at = e => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * SIDE / r.width, (e.clientY - r.top) * SIDE / r.height]; };
    canvas.addEventListener("pointerdown", e => { last = at(e); canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointermove", e => {
      if (!last) return;
      const p = at(e);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
      last = p;
    });
    canvas.addEventListener("pointerup", () => { last = null; });
    const seen = sky.el("canvas", { width: 112, height: 112, class: "digit", title: "what the model sees (28x28)" });
    const result = sky.el("div", { class: "answer", id: "answer-" + model.name });
    const send = values => { preview(seen, values); infer(model, { rows: [values] }, result); };
    const predict = sky.el("button", { type: "button", id: "predict-" + model.name }, "Predict");
    predict.addEventListener("click", () => {
      const values = features(canvas, SIDE, SIDE);
      if (!values) { result.replaceChildren(sky.el("p", { class: "error" }, "draw a digit first")); return; }
      send(values);
    });
    const wipe = sky.el("button", { type: "button", class: "secondary" }, "Clear");
    wipe.addEventListener("click", () => { clear(); result.replaceChildren(); });
    const upload = sky.el("input", { type: "file", accept: "image/*", id: "upload-" + model.name });
    upload.addEventListener("change", async () => {
      const file = upload.files[0];
      if (!file) return;
      const img = await createImageBitmap(file);
      const probe = sky.el("canvas", { width: img.width, height: img.height }).getContext("2d", { willReadFrequently: true });
      probe.drawImage(img, 0, 0);
      const px = probe.getImageData(0, 0, img.width, img.height).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) sum += px[i];
      const light = sum / (px.length / 4) > 127; // dark ink on a light page: invert to white on black
      probe.globalCompositeOperation = "difference";
      if (light) { probe.fillStyle = "#fff"; probe.fillRect(0, 0, img.width, img.height); }
      if (img.width === 28 && img.height === 28) { send(grey(probe)); return; } // already MNIST-shaped
      const values = features(probe.canvas, img.width, img.height);
      if (!values) { result.replaceChildren(sky.el("p", { class: "error" }, "the image is blank")); return; }
      send(values);
    });
    body.append(sky.el("div", { class: "row" },
      sky.el("div", {}, canvas, sky.el("div", {}, predict, " ", wipe, " or upload an image ", upload)),
      sky.el("div", {}, sky.el("div", { class: "muted" }, "the model sees"), seen),
      result));
  }

  function numbersPad(model, body, width) {
    const area = sky.el("textarea", { rows: 3, cols: 80, id: "rows-" + model.name }, JSON.stringify([Array(width).fill(0)]));
    const result = sky.el("div", { class: "answer" });
    const go = sky.el("button", { type: "button" }, "Predict");
    go.addEventListener("click", () => {
      let rows;
      try { rows = JSON.parse(area.value); } catch (e) { result.replaceChildren(sky.el("p", { class: "error" }, "not JSON: " + e.message)); return; }
      infer(model, { rows: rows }, result);
    });
    body.append(sky.el("p", { class: "muted" }, "rows of " + width + " numbers, as JSON"), area, sky.el("div", {}, go), result);
  }

  function textPad(model, body) {
    const area = sky.el("textarea", { rows: 3, cols: 80, id: "text-" + model.name, placeholder: "a text to send" });
    const result = sky.el("div", { class: "answer" });
    const go = sky.el("button", { type: "button", id: "predict-" + model.name }, "Send");
    go.addEventListener("click", () => infer(model, { texts: [area.value] }, result));
    body.append(area, sky.el("div", {}, go), result);
  }

  function chatPad(model, body) {
    const log = sky.el("div", { class: "chat-log", id: "chat-" + model.name });
    const input = sky.el("textarea", { rows: 2, cols: 80, id: "chat-input-" + model.name, placeholder: "a message" });
    const tokens = sky.el("input", { type: "number", min: 1, max: 1024, value: 32, size: 5 });
    const go = sky.el("button", { type: "button", id: "chat-send-" + model.name }, "Send");
    const messages = [];
    go.addEventListener("click", async () => {
      if (!input.value.trim()) return;
      messages.push({ role: "user", content: input.value });
      log.append(sky.el("div", { class: "user" }, "you: " + input.value));
      input.value = "";
      const said = sky.el("span", { class: "reply" });
      log.append(sky.el("div", { class: "assistant" }, "model: ", said));
      go.disabled = true;
      try {
        const r = await sky.post(base + "/chat", { model: model.name, messages: messages, max_tokens: Number(tokens.value) }, endpointKey());
        if (!r.ok) { const b = await r.json(); said.append(sky.el("span", { class: "error" }, b.error)); return; }
        const reader = r.body.getReader(), text = new TextDecoder();
        let pending = "", reply = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += text.decode(value, { stream: true });
          const events = pending.split("\n\n");
          pending = events.pop();
          for (const ev of events) {
            const data = ev.replace(/^data: ?/, "");
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) { said.append(sky.el("span", { class: "error" }, typeof chunk.error === "string" ? chunk.error : chunk.error.message)); continue; }
            const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content) || "";
            reply += delta;
            said.append(delta);
          }
        }
        messages.push({ role: "assistant", content: reply });
        said.dataset.done = "1";
      } finally { go.disabled = false; }
    });
    body.append(log, input, sky.el("div", {}, go, " max tokens ", tokens));
  }

  for (const model of page.served) {
    const section = document.querySelector('.playground[data-model="' + CSS.escape(model.name) + '"] .playground-body');
    const sig = model.card.signature || {};
    if (!section || !model.card.kind) continue;
    const input = (sig.inputs || [{}])[0];
    const width = (input.shape || []).slice(1).reduce((a, b) => a * b, 1);
    if (model.card.kind === "generator") chatPad(model, section);
    else if (input.datatype === "BYTES") textPad(model, section);
    else if (width === 784) digitPad(model, section);
    else numbersPad(model, section, width);
  }
})();
