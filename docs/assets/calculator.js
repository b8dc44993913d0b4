/* The handbook's "will it fit?" calculator: the same integer arithmetic as
 * experiments/lib/estimator.py (and `handbook estimate`), in BigInt so every
 * byte matches. Its constants (built-in shapes, bytes per element of each
 * precision, optimizer state tensors, card capacities) are not typed here:
 * the page embeds them from the named_models result as JSON. Offline: no
 * network, no libraries. A test fills this form in headless Chromium and
 * compares every number with the Python estimator. */
(function () {
  "use strict";

  const dataEl = document.getElementById("hb-calc-data");
  const form = document.getElementById("hb-calc");
  if (!dataEl || !form) return;
  const D = JSON.parse(dataEl.textContent);
  const FAMILIES = ["gpt2", "bert", "llama"];
  const DEFAULT_SEQ = 1024;

  const big = (x) => BigInt(x);
  const ceilDiv = (a, b) => (a + b - 1n) / b;
  const numel = (shape) => shape.reduce((acc, x) => acc * big(x), 1n);

  // ---- the shape --------------------------------------------------------------------------
  function checkShape(m) {
    for (const k of ["hidden", "layers", "heads", "vocab"]) {
      if (!Number.isInteger(m[k]) || m[k] < 1) throw new Error(`${k} must be a positive integer, not ${m[k]}`);
    }
    for (const k of ["kv_heads", "intermediate", "positions", "type_vocab", "head_dim"]) {
      if (!Number.isInteger(m[k]) || m[k] < 0) throw new Error(`${k} must be a non-negative integer, not ${m[k]}`);
    }
    if (!FAMILIES.includes(m.family)) throw new Error(`unknown model family ${m.family}`);
    if (m.family === "llama" && m.intermediate === 0) throw new Error("intermediate is required for a llama-style model");
    if (m.family !== "llama" && m.positions === 0) throw new Error(`positions is required for a ${m.family} model`);
    if (m.head_dim === 0 && m.hidden % m.heads) throw new Error(`hidden ${m.hidden} is not divisible by heads ${m.heads}`);
    const kv = kvHeads(m);
    if (kv > m.heads || m.heads % kv) throw new Error(`heads ${m.heads} is not a multiple of kv_heads ${kv}`);
  }
  const kvHeads = (m) => m.kv_heads || m.heads;
  const dHead = (m) => m.head_dim || Math.floor(m.hidden / m.heads);
  const dFF = (m) => m.intermediate || 4 * m.hidden;

  // Every parameter tensor's shape, in the layout of the Hugging Face classes (model_shapes.parameter_shapes).
  function parameterShapes(m) {
    const h = m.hidden, V = m.vocab, I = dFF(m), L = m.layers;
    const out = [];
    if (m.family === "gpt2") {
      out.push([V, h], [m.positions, h]);
      for (let i = 0; i < L; i++) {
        out.push([h], [h], [h, 3 * h], [3 * h], [h, h], [h], [h], [h], [h, I], [I], [I, h], [h]);
      }
      out.push([h], [h]);
      if (!m.tied_embeddings) out.push([V, h]);
    } else if (m.family === "bert") {
      out.push([V, h], [m.positions, h], [m.type_vocab, h], [h], [h]);
      for (let i = 0; i < L; i++) {
        out.push([h, h], [h], [h, h], [h], [h, h], [h], [h, h], [h], [h], [h], [I, h], [I], [h, I], [h], [h], [h]);
      }
      out.push([h, h], [h]);
    } else {
      const q = m.heads * dHead(m), kv = kvHeads(m) * dHead(m);
      out.push([V, h]);
      for (let i = 0; i < L; i++) {
        out.push([q, h], [kv, h], [kv, h], [h, q], [I, h], [I, h], [h, I], [h], [h]);
      }
      out.push([h]);
      if (!m.tied_embeddings) out.push([V, h]);
    }
    return out;
  }

  // ---- the terms ---------------------------------------------------------------------------
  function adafactorElems(s) {
    if (s.length >= 2) return numel(s.slice(0, -2)) * (big(s[s.length - 2]) + big(s[s.length - 1]));
    return numel(s);
  }

  function optimizerBytes(opt, shapes, elemBytes) {
    let total = 0n;
    for (const s of shapes) {
      const n = numel(s);
      if (opt === "adamw-8bit") {
        total += n >= big(D.bnb_min_8bit_size) ? 2n * n + 8n * ceilDiv(n, big(D.bnb_block)) : 8n * n;
        continue;
      }
      if (opt === "adafactor") total += adafactorElems(s) * big(elemBytes);
      else total += big(D.state_tensors_per_param[opt]) * n * big(elemBytes);
      if (D.has_step_tensor[opt]) total += big(D.step_tensor_bytes);
    }
    return total;
  }

  function layerTerms(m, s, b, e, mask) {
    const h = big(m.hidden), a = big(m.heads), I = big(dFF(m)), dh = big(dHead(m));
    const sbh = s * b * h, sbI = s * b * I, as2b = a * s * s * b;
    const d = m.dropout ? 1n : 0n;
    const qkv = e * sbh + 2n * e * s * b * big(kvHeads(m)) * dh;
    return {
      norm: 4n * e * sbh,
      attention: qkv + e * s * b * a * dh,
      scores: e * as2b + d * (mask + e) * as2b,
      mlp: (m.family === "llama" ? 4n : 2n) * e * sbI,
      masks: d * 2n * mask * sbh,
    };
  }

  function activationBytes(m, setup) {
    const e = big(D.precisions[setup.precision][3]);
    const s = big(setup.seq), b = big(setup.batch), h = big(m.hidden), mask = 1n;
    const t = layerTerms(m, s, b, e, mask);
    const perLayer = t.norm + t.attention + t.scores + t.mlp + t.masks;
    let layers;
    if (setup.checkpointing === "none") layers = big(m.layers) * perLayer;
    else if (setup.checkpointing === "selective") layers = big(m.layers) * (perLayer - t.scores) + t.scores;
    else layers = big(m.layers) * e * s * b * h + perLayer;
    const embedding = (m.dropout ? mask : 0n) * s * b * h + (m.family === "bert" ? e * s * b * h : 0n);
    const head = 2n * e * s * b * h;
    const logits = 4n * s * b * big(m.vocab);
    return layers + embedding + head + logits;
  }

  function estimate(m, setup) {
    checkShape(m);
    if (!D.optimizers.includes(setup.optimizer)) throw new Error(`unknown optimizer ${setup.optimizer}`);
    if (!(setup.precision in D.precisions)) throw new Error(`unknown precision ${setup.precision}`);
    if (!D.checkpointing.includes(setup.checkpointing)) throw new Error(`unknown checkpointing ${setup.checkpointing}`);
    for (const k of ["batch", "seq", "gpus"]) {
      if (!Number.isInteger(setup[k]) || setup[k] < 1) throw new Error(`${k} must be a positive integer, not ${setup[k]}`);
    }
    if (![0, 1, 2, 3].includes(setup.zero)) throw new Error(`zero must be 0, 1, 2 or 3, not ${setup.zero}`);
    if (m.positions && setup.seq > m.positions) {
      throw new Error(`seq ${setup.seq} exceeds the model's ${m.positions} learned positions`);
    }
    if (m.context && setup.seq > m.context) {
      throw new Error(`seq ${setup.seq} exceeds the model's context of ${m.context} positions (max_position_embeddings)`);
    }
    const shapes = parameterShapes(m);
    const n = shapes.reduce((acc, s) => acc + numel(s), 0n);
    const [w, g, o] = D.precisions[setup.precision].map(big);
    const full = { params: n * w, grads: n * g, optimizer: optimizerBytes(setup.optimizer, shapes, o) };
    const N = big(setup.gpus);
    const per = {
      params: setup.zero >= 3 ? ceilDiv(full.params, N) : full.params,
      grads: setup.zero >= 2 ? ceilDiv(full.grads, N) : full.grads,
      optimizer: setup.zero >= 1 ? ceilDiv(full.optimizer, N) : full.optimizer,
    };
    per.activations = activationBytes(m, setup);
    per.total = per.params + per.grads + per.optimizer + per.activations;
    const fits = D.gpus.map((gpu) => ({ gpu: gpu.name, capacity: big(gpu.capacity_bytes), fits: per.total <= big(gpu.capacity_bytes) }));
    return { parameters: n, per, fits };
  }

  // ---- the form ----------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const intOf = (id) => {
    const text = $(id).value.trim();
    return /^-?\d+$/.test(text) ? Number(text) : NaN;
  };

  function readShape() {
    const name = $("hb-model").value;
    if (name !== "custom") return Object.assign({}, D.shapes[name]);
    const family = $("hb-family").value;
    const positions = intOf("hb-positions");
    return {
      family, hidden: intOf("hb-hidden"), layers: intOf("hb-layers"), heads: intOf("hb-heads"),
      kv_heads: intOf("hb-kv-heads"), intermediate: intOf("hb-intermediate"), vocab: intOf("hb-vocab"),
      positions: positions || (family !== "llama" ? intOf("hb-seq") : 0),
      type_vocab: family === "bert" ? 2 : 0, head_dim: 0,
      tied_embeddings: family === "bert" ? true : !$("hb-untied").checked,
      dropout: family !== "llama", name: "custom",
    };
  }

  function fillShape(name) {
    const custom = name === "custom";
    $("hb-shape").hidden = !custom;
    if (custom) return;
    const m = D.shapes[name];
    $("hb-family").value = m.family;
    for (const [id, key] of [["hb-hidden", "hidden"], ["hb-layers", "layers"], ["hb-heads", "heads"],
                             ["hb-kv-heads", "kv_heads"], ["hb-intermediate", "intermediate"], ["hb-vocab", "vocab"],
                             ["hb-positions", "positions"]]) {
      $(id).value = String(m[key]);
    }
    $("hb-untied").checked = !m.tied_embeddings;
    $("hb-seq").value = String(m.context ? Math.min(DEFAULT_SEQ, m.context) : DEFAULT_SEQ);
  }

  const GIB = 1024n ** 3n;
  function gib(x) {
    const hundredths = (x * 100n + GIB / 2n) / GIB;
    const whole = hundredths / 100n, frac = String(hundredths % 100n).padStart(2, "0");
    return `${whole.toLocaleString("en-US")}.${frac} GiB`;
  }
  const grouped = (x) => x.toLocaleString("en-US");

  function render() {
    const err = $("hb-error");
    try {
      const setup = {
        optimizer: $("hb-optimizer").value, precision: $("hb-precision").value, batch: intOf("hb-batch"),
        seq: intOf("hb-seq"), checkpointing: $("hb-checkpointing").value, zero: intOf("hb-zero"), gpus: intOf("hb-gpus"),
      };
      const res = estimate(readShape(), setup);
      err.textContent = "";
      err.hidden = true;
      $("hb-out").hidden = false;
      const params = $("hb-parameters");
      params.dataset.value = res.parameters.toString();
      params.textContent = grouped(res.parameters);
      for (const key of ["params", "grads", "optimizer", "activations", "total"]) {
        const cell = $(`hb-out-${key}`);
        cell.dataset.bytes = res.per[key].toString();
        cell.textContent = grouped(res.per[key]);
        $(`hb-out-${key}-gib`).textContent = gib(res.per[key]);
      }
      const list = $("hb-fits");
      list.replaceChildren();
      for (const f of res.fits) {
        const li = document.createElement("li");
        li.dataset.gpu = f.gpu;
        li.dataset.fits = String(f.fits);
        li.className = f.fits ? "hb-fit-yes" : "hb-fit-no";
        li.textContent = `${f.fits ? "fits" : "does not fit"}: ${f.gpu}`;
        list.appendChild(li);
      }
      const total = Number(res.per.total);
      for (const bar of ["params", "grads", "optimizer", "activations"]) {
        $(`hb-bar-${bar}`).style.width = total ? `${(100 * Number(res.per[bar])) / total}%` : "0";
      }
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      $("hb-out").hidden = true;
    }
    form.dataset.ready = "true";
  }

  function init() {
    const model = $("hb-model");
    for (const name of Object.keys(D.shapes)) model.add(new Option(name, name));
    model.add(new Option("custom shape", "custom"));
    for (const o of D.optimizers) $("hb-optimizer").add(new Option(o, o));
    for (const p of Object.keys(D.precisions)) $("hb-precision").add(new Option(p, p));
    for (const c of D.checkpointing) $("hb-checkpointing").add(new Option(c, c));
    for (const f of FAMILIES) $("hb-family").add(new Option(f, f));
    $("hb-optimizer").value = "adamw";
    $("hb-precision").value = "bf16-mixed";
    model.value = Object.keys(D.shapes).includes("llama-2-7b") ? "llama-2-7b" : Object.keys(D.shapes)[0];
    fillShape(model.value);
    model.addEventListener("change", () => { fillShape(model.value); render(); });
    form.addEventListener("input", render);
    form.addEventListener("change", render);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); render(); });
    render();
  }

  window.hbCalculator = { estimate, parameterShapes };
  init();
})();
