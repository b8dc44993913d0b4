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
  // The families and their layout traits: experiments/lib/model_shapes.py (FAMILIES ... TIED_DEFAULT); a test
  // compares these lists with the Python ones.
  const FAMILIES = ["gpt2", "bert", "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "mixtral",
                    "qwen2_moe", "qwen3_moe"];
  const DECODERS = FAMILIES.slice(2);
  const MOE_FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe"];
  const QK_NORM_FAMILIES = ["qwen3", "gemma3", "qwen3_moe"];
  const SANDWICH_FAMILIES = ["gemma2", "gemma3"];
  const GEMMA_NORM_FAMILIES = ["gemma", "gemma2", "gemma3"];
  const FUSED_FAMILIES = ["phi3"];
  const QKV_BIAS_DEFAULT = { qwen2: true, qwen2_moe: true };
  const TIED_DEFAULT = { gpt2: true, bert: true, gemma: true, gemma2: true, gemma3: true };
  const DEFAULT_SEQ = 1024;

  const big = (x) => BigInt(x);
  const ceilDiv = (a, b) => (a + b - 1n) / b;
  const numel = (shape) => shape.reduce((acc, x) => acc * big(x), 1n);

  // ---- the shape --------------------------------------------------------------------------
  // A shape with every field, the family's defaults filled in as ModelShape.__post_init__ fills them.
  function withDefaults(m) {
    const out = Object.assign({ kv_heads: 0, intermediate: 0, positions: 0, type_vocab: 0, head_dim: 0, context: 0,
      o_bias: false, mlp_bias: false, experts: 0, top_k: 0, moe_intermediate: 0, shared_intermediate: 0,
      sparse_step: 1, dense_layers: [] }, m);
    if (out.qkv_bias === undefined || out.qkv_bias === null) out.qkv_bias = !!QKV_BIAS_DEFAULT[out.family];
    for (const k of ["logit_softcap", "attn_softcap"]) {
      if (out[k] === undefined || out[k] === null) out[k] = out.family === "gemma2";
    }
    return out;
  }

  function checkShape(m) {
    if (!FAMILIES.includes(m.family)) throw new Error(`unknown model family ${m.family}`);
    for (const k of ["hidden", "layers", "heads", "vocab"]) {
      if (!Number.isInteger(m[k]) || m[k] < 1) throw new Error(`${k} must be a positive integer, not ${m[k]}`);
    }
    for (const k of ["kv_heads", "intermediate", "positions", "type_vocab", "head_dim", "experts", "top_k",
                     "moe_intermediate", "shared_intermediate"]) {
      if (!Number.isInteger(m[k]) || m[k] < 0) throw new Error(`${k} must be a non-negative integer, not ${m[k]}`);
    }
    if (DECODERS.includes(m.family) && m.intermediate === 0) {
      throw new Error(`intermediate (intermediate_size) is required for a ${m.family} model`);
    }
    if (!DECODERS.includes(m.family) && m.positions === 0) throw new Error(`positions is required for a ${m.family} model`);
    if (m.head_dim === 0 && m.hidden % m.heads) throw new Error(`hidden ${m.hidden} is not divisible by heads ${m.heads}`);
    const kv = kvHeads(m);
    if (kv > m.heads || m.heads % kv) throw new Error(`heads ${m.heads} is not a multiple of kv_heads ${kv}`);
    const moe = MOE_FAMILIES.includes(m.family);
    if (!moe) {
      for (const k of ["experts", "top_k", "moe_intermediate", "shared_intermediate"]) {
        if (m[k]) throw new Error(`${k} is for a mixture of experts (${MOE_FAMILIES.join(", ")}), not a ${m.family} model`);
      }
      return;
    }
    if (m.experts < 1) throw new Error(`experts (the number of routed experts) is required for a ${m.family} model`);
    if (m.top_k < 1 || m.top_k > m.experts) {
      throw new Error(`top_k must be between 1 and experts (${m.experts}), not ${m.top_k}`);
    }
    if (m.family !== "mixtral" && m.moe_intermediate === 0) {
      throw new Error(`moe_intermediate (moe_intermediate_size) is required for a ${m.family} model`);
    }
    if (m.family === "mixtral" && m.moe_intermediate) {
      throw new Error("moe_intermediate does not apply to mixtral (its experts are intermediate wide)");
    }
    if (m.shared_intermediate && m.family !== "qwen2_moe") {
      throw new Error(`shared_intermediate (a shared expert) is for qwen2_moe, not ${m.family}`);
    }
  }
  const kvHeads = (m) => m.kv_heads || m.heads;
  const dHead = (m) => m.head_dim || Math.floor(m.hidden / m.heads);
  const dFF = (m) => m.intermediate || 4 * m.hidden;
  const dExpert = (m) => m.moe_intermediate || m.intermediate;
  // ModelShape.moe_layers: every layer for Mixtral; Qwen-MoE: not in mlp_only_layers, (i + 1) % sparse_step == 0.
  function isMoeLayer(m, i) {
    return MOE_FAMILIES.includes(m.family) && !m.dense_layers.includes(i) && (i + 1) % m.sparse_step === 0;
  }
  function nMoeLayers(m) {
    if (!MOE_FAMILIES.includes(m.family)) return 0;
    const dense = new Set(m.dense_layers.filter((i) => i < m.layers && (i + 1) % m.sparse_step === 0));
    return Math.floor(m.layers / m.sparse_step) - dense.size;
  }

  // Every parameter tensor's shape, in the layout of the Hugging Face classes (model_shapes.parameter_shapes).
  // Shapes carry no names; a `kind` property says what estimator.cast_parameters reads off the names: "norm" (a
  // norm's weight or bias: a 1-D tensor named norm, ln_ or LayerNorm), "bias" (any other 1-D tensor), "expert"
  // (a MoE layer's experts.* tensors); matmul weights and embeddings have none.
  const tag = (shape, kind) => Object.assign(shape, { kind });
  const normShape = (n) => tag([n], "norm");
  const biasShape = (n) => tag([n], "bias");
  function parameterShapes(m) {
    const h = m.hidden, V = m.vocab, I = dFF(m), L = m.layers;
    const out = [];
    if (m.family === "gpt2") {
      out.push([V, h], [m.positions, h]);
      for (let i = 0; i < L; i++) {
        out.push(normShape(h), normShape(h), [h, 3 * h], biasShape(3 * h), [h, h], biasShape(h),
                 normShape(h), normShape(h), [h, I], biasShape(I), [I, h], biasShape(h));
      }
      out.push(normShape(h), normShape(h));
      if (!m.tied_embeddings) out.push([V, h]);
      return out;
    }
    if (m.family === "bert") {
      out.push([V, h], [m.positions, h], [m.type_vocab, h], normShape(h), normShape(h));
      for (let i = 0; i < L; i++) {
        out.push([h, h], biasShape(h), [h, h], biasShape(h), [h, h], biasShape(h), [h, h], biasShape(h),
                 normShape(h), normShape(h), [I, h], biasShape(I), [h, I], biasShape(h), normShape(h), normShape(h));
      }
      out.push([h, h], biasShape(h));
      return out;
    }
    const d = dHead(m), q = m.heads * d, kv = kvHeads(m) * d;
    out.push([V, h]);
    for (let i = 0; i < L; i++) {
      if (FUSED_FAMILIES.includes(m.family)) {
        out.push([h, q], [q + 2 * kv, h]);
      } else {
        for (const rows of [q, kv, kv]) {
          out.push([rows, h]);
          if (m.qkv_bias) out.push(biasShape(rows));
        }
        out.push([h, q]);
        if (m.o_bias) out.push(biasShape(h));
      }
      if (QK_NORM_FAMILIES.includes(m.family)) out.push(normShape(d), normShape(d));
      if (isMoeLayer(m, i)) {
        const E = m.experts, W = dExpert(m);
        out.push([E, h], tag([E, 2 * W, h], "expert"), tag([E, h, W], "expert"));
        if (m.family === "qwen2_moe") {
          const S = m.shared_intermediate;
          out.push([S, h], [S, h], [h, S], [1, h]);
        }
      } else if (FUSED_FAMILIES.includes(m.family)) {
        out.push([2 * I, h], [h, I]);
      } else {
        for (const shape of [[I, h], [I, h], [h, I]]) {
          out.push(shape);
          if (m.mlp_bias) out.push(biasShape(shape[0]));
        }
      }
      out.push(normShape(h), normShape(h));
      if (SANDWICH_FAMILIES.includes(m.family)) out.push(normShape(h), normShape(h));
    }
    out.push(normShape(h));
    if (!m.tied_embeddings) out.push([V, h]);
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

  // estimator.norm_bytes: what one norm keeps per element of its input, its own tensors and its output as its
  // readers keep it (r: the residual stream's dtype; under autocast each Linear reading it keeps its own e copy)
  function normBytes(m, e, r, cast, readers) {
    const own = GEMMA_NORM_FAMILIES.includes(m.family) ? 8n : DECODERS.includes(m.family) ? 4n + r : r;
    return own + (readers === 0n ? 0n : cast ? readers * e : r);
  }

  // One layer's saved bytes (estimator.layer_activation_terms): routed picks a MoE or a dense layer; undefined,
  // the larger of the model's kinds. r: the residual stream's bytes; cast: autocast; mathSdpa: SDPA's math path.
  function layerTerms(m, s, b, e, mask, routed, attention = "sdpa", r = e, cast = false, mathSdpa = false) {
    if (routed === undefined) {
      const nMoe = nMoeLayers(m);
      const kinds = [true, false].filter((k) => (k ? nMoe : m.layers - nMoe) > 0);
      const all = kinds.map((k) => layerTerms(m, s, b, e, mask, k, attention, r, cast, mathSdpa));
      const size = (t) => Object.values(t).reduce((x, y) => x + y, 0n);
      return all.reduce((best, t) => (size(t) > size(best) || (size(t) === size(best) && t.router > best.router)
        ? t : best));
    }
    const h = big(m.hidden), a = big(m.heads), I = big(dFF(m)), d = big(dHead(m)), kv = big(kvHeads(m));
    const sb = s * b, sbh = sb * h, as2b = a * s * s * b;
    const drop = m.dropout ? 1n : 0n;
    const moe = !!(routed && MOE_FAMILIES.includes(m.family));
    const fused = FUSED_FAMILIES.includes(m.family);
    const qkvIn = fused || m.family === "gpt2" ? 1n : 3n;
    // the router's Linear casts; Qwen2-MoE's shared expert's gate, up and gate read the norm's output too
    let mlpIn = fused || !DECODERS.includes(m.family) ? 1n : 2n;
    if (moe) mlpIn = 1n + (m.family === "qwen2_moe" ? 3n : 0n);
    let norm = normBytes(m, e, r, cast, qkvIn) + normBytes(m, e, r, cast, mlpIn);
    if (SANDWICH_FAMILIES.includes(m.family)) norm += 2n * normBytes(m, e, r, cast, 0n);  // before residual adds
    norm *= sbh;
    if (QK_NORM_FAMILIES.includes(m.family)) {
      norm += (GEMMA_NORM_FAMILIES.includes(m.family) ? 8n : 4n + e) * sb * (a + kv) * d;
    }
    let att;
    if (attention === "sdpa" && mathSdpa && e < 4n) {
      att = 4n * sb * d * (a + 2n * kv) + e * sb * d * a;   // SDPA's math path: fp32 copies of Q, K and V
    } else {
      // Q, K, V (eager: K and V repeated to every head), the attention output
      att = e * sb * d * (2n * a + 2n * (attention === "eager" ? a : kv));
    }
    if (fused && attention === "sdpa") att += e * sb * d * (2n * a + kv);  // Phi-3's fused qkv buffer
    let mlp, router;
    if (moe) {
      const k = big(m.top_k), W = big(dExpert(m));
      const ex = cast ? r : e;   // under autocast the experts run in the norm's output dtype
      mlp = ex * sb * k * (2n * h + 4n * W);
      if (m.family === "qwen2_moe") mlp += 4n * e * sb * big(m.shared_intermediate) + e * sb * (h + 1n);
      router = 4n * sb * big(m.experts) + 4n * sb + 41n * sb * k;
    } else {
      mlp = (DECODERS.includes(m.family) ? 4n : 2n) * e * sb * I;
      router = 0n;
    }
    let scores;
    if (attention === "sdpa" && mathSdpa) {
      const sm = e < 4n ? 4n : e;
      scores = sm * as2b + drop * 2n * sm * as2b;
    } else {
      scores = e * as2b + drop * (mask + e) * as2b;
    }
    if (m.attn_softcap) scores += e * as2b;
    return { norm, attention: att, scores, mlp, router, masks: drop * 2n * mask * sbh };
  }

  // estimator.smaller_layers_bytes: what a MoE model's other layer kind saves less than its largest layer.
  function smallerLayersBytes(m, s, b, e, mask, r, cast) {
    const nMoe = big(nMoeLayers(m)), L = big(m.layers);
    if (!MOE_FAMILIES.includes(m.family) || nMoe === 0n || nMoe === L) return 0n;
    const routed = layerTerms(m, s, b, e, mask, true, "sdpa", r, cast);
    const dense = layerTerms(m, s, b, e, mask, false, "sdpa", r, cast);
    const rr = routed.norm + routed.mlp + routed.router, dd = dense.norm + dense.mlp + dense.router;
    const top = rr > dd ? rr : dd;
    return nMoe * (top - rr) + (L - nMoe) * (top - dd);
  }

  // estimator.dropout_mask_bytes: a bool on CUDA, the activation dtype on CPU
  const maskBytes = (setup) => (setup.device === "cuda" ? 1n : big(D.precisions[setup.precision].activations));

  // estimator.sdpa_math_path: SDPA on a CPU with attention dropout falls back to its math path
  const sdpaMathPath = (m, setup) => setup.attention === "sdpa" && setup.device === "cpu" && !!m.dropout;

  // estimator.attention_scores_bytes: sdpa keeps the fp32 log-sum-exp; eager's softmax in fp32 for the decoders
  // and under autocast, the matmul after it a 16-bit copy
  function scoresBytes(m, s, b, setup, t) {
    if (setup.attention === "sdpa" && !sdpaMathPath(m, setup)) return 4n * big(m.heads) * s * b;
    const lay = D.precisions[setup.precision];
    const e = big(lay.activations), as2b = big(m.heads) * s * s * b;
    const fp32Softmax = DECODERS.includes(m.family) || !!lay.cast;
    if (setup.attention === "sdpa" || !fp32Softmax || e >= 4n) return t.scores;
    const after = m.dropout ? (maskBytes(setup) + e) * as2b : e * as2b;
    return 4n * as2b + after + (m.attn_softcap ? e * as2b : 0n);
  }

  // estimator.activation_function_extra_bytes: GPT-2's unfused gelu_new keeps three more tensors
  function activationExtra(m, s, b, setup) {
    if (m.hidden_act !== "gelu_new") return 0n;
    const lay = D.precisions[setup.precision], e = big(lay.activations);
    const t = lay.cast && setup.device === "cuda" ? 4n : e;
    return (e + 2n * t) * s * b * big(dFF(m));
  }

  // estimator.activation_terms (the same keys)
  function activationTerms(m, setup) {
    const lay = D.precisions[setup.precision];
    const e = big(lay.activations), r = lay.cast ? 4n : e, cast = !!lay.cast;
    const s = big(setup.seq), b = big(setup.batch), h = big(m.hidden), mask = maskBytes(setup);
    const t = layerTerms(m, s, b, e, mask, undefined, setup.attention, r, cast, sdpaMathPath(m, setup));
    t.scores = scoresBytes(m, s, b, setup, t);
    t.mlp += activationExtra(m, s, b, setup);
    const perLayer = t.norm + t.attention + t.scores + t.mlp + t.router + t.masks;
    const smaller = smallerLayersBytes(m, s, b, e, mask, r, cast);  // a MoE model's other layer kind
    const L = big(m.layers);
    let layers, recompute;
    if (setup.checkpointing === "none") { layers = L * perLayer - smaller; recompute = 0n; }
    else if (setup.checkpointing === "selective") {
      layers = L * (perLayer - t.scores) + t.scores - smaller; recompute = t.scores;
    } else {
      layers = L * r * s * b * h + perLayer; recompute = perLayer;
      // GPT-2's eager blocks take the causal mask positionally: checkpoint keeps one (b, 1, s, s) mask
      if (m.family === "gpt2" && setup.attention === "eager") layers += b * s * s * r;
    }
    const embMask = m.dropout ? (setup.device === "cuda" ? 1n : r) : 0n;
    const indices = 8n * s * b * (2n + (m.type_vocab ? 1n : 0n)) + (m.positions ? 8n * s : 0n);
    const rotary = DECODERS.includes(m.family) ? 2n * s * big(dHead(m)) * r : 0n;
    const embedding = embMask * s * b * h + (m.family === "bert" ? r * s * b * h : 0n) + indices + rotary;
    const head = normBytes(m, e, r, cast, 1n) * s * b * h;
    let logits = 4n * s * b * big(m.vocab);
    if (m.logit_softcap) logits += e * s * b * big(m.vocab);  // Gemma 2: the tanh of the soft-capping
    return { layers_bytes: layers, embedding_bytes: embedding, head_bytes: head, logits_bytes: logits,
             per_layer_bytes: perLayer, recompute_bytes: recompute,
             layer_input_bytes: setup.checkpointing === "full" ? r * s * b * h : 0n,
             total_bytes: layers + embedding + head + logits };
  }

  const sum = (o) => Object.values(o).reduce((a, x) => a + x, 0n);
  const max = (a, b) => (a > b ? a : b);
  const countOf = (m) => parameterShapes(m).reduce((acc, s) => acc + numel(s), 0n);

  const lookupOnly = (m) => (m.tied_embeddings ? 0n : big(m.vocab) * big(m.hidden)) + big(m.positions) * big(m.hidden)
    + big(m.type_vocab) * big(m.hidden);

  // estimator.cast_parameters: [cached, saved], the parameters autocast casts and caches (not the embedding
  // lookups, norms or experts), and those a matmul saves for backward (not the biases either)
  function castParameters(m) {
    const shapes = parameterShapes(m);
    let cached = shapes.reduce((acc, x) => acc + numel(x), 0n) - lookupOnly(m), saved = cached;
    for (const x of shapes) {
      if (x.kind === "expert" || x.kind === "norm") { cached -= numel(x); saved -= numel(x); }
      else if (x.kind === "bias") saved -= numel(x);
    }
    return [cached, saved];
  }

  // estimator.phases: live bytes at each phase of one step, term by term
  function phases(m, setup, shapes, n, per, acts) {
    const lay = D.precisions[setup.precision];
    const N = big(setup.gpus), z = setup.zero;
    const P = per.params, G = per.grads, O = per.optimizer;
    const kept = setup.set_to_none ? 0n : G;
    const ddp = z < 2 && setup.gpus > 1 ? n * big(lay.grads) : 0n;
    const one = countOf(Object.assign({}, m, { layers: 1 }));
    const layer = countOf(Object.assign({}, m, { layers: 2 })) - one, root = one - layer;
    const [cached, saved] = castParameters(m);
    const e = big(lay.activations), s = big(setup.seq), b = big(setup.batch), V = big(m.vocab), h = big(m.hidden);
    const logits = e * s * b * V, lossTmp = 8n * s * b * V;
    const as2b = big(m.heads) * s * s * b;
    const scoresGrad = setup.attention === "eager" ? (lay.cast && setup.device === "cuda" ? 4n : e) * as2b : 0n;
    let mlpGrads = 2n * e * s * b * big(dFF(m));
    if (MOE_FAMILIES.includes(m.family) && nMoeLayers(m)) {  // the experts' (token, expert) pairs, in their dtype
      const ex = lay.cast ? 4n : e;
      mlpGrads = max(mlpGrads, 2n * ex * s * b * big(m.top_k) * big(dExpert(m)));
    }
    const working = e * s * b * h + max(mlpGrads, 2n * scoresGrad);
    const act = acts.total_bytes - acts.recompute_bytes;
    const actEnd = acts.embedding_bytes + acts.layer_input_bytes;
    const recompute = acts.recompute_bytes, logprobs = acts.logits_bytes;
    const castB = big(lay.cast);
    const cast = castB * cached;
    const fullCkpt = setup.checkpointing === "full";
    const castSaved = fullCkpt ? castB * V * h : castB * saved;
    // a rebuilt layer runs under autocast again: its weights are cast and cached again
    const castRebuilt = fullCkpt && lay.cast ? castB * (castParameters(Object.assign({}, m, { layers: 2 }))[0]
      - castParameters(Object.assign({}, m, { layers: 1 }))[0]) : 0n;
    const gather = z >= 3 ? big(lay.gather || lay.weights) * (root + 2n * layer) : 0n;
    const unitGrad = big(lay.unit_grad || lay.grads);
    const rootGrad = z >= 2 ? root * unitGrad : 0n;
    const reduce = z >= 2 ? layer * unitGrad + (layer + root) * big(lay.reduce || lay.grads) : 0n;
    const allGrads = n * big(lay.grads);
    const firstGrads = !setup.set_to_none ? G : (root * unitGrad < allGrads ? root * unitGrad : allGrads);
    const fwd = { params: P, grads: kept, optimizer: O, cast_weights: cast, activations: act, logits,
                  ddp_buckets: ddp, gathered_params: gather };
    const early = { params: P, optimizer: O, cast_weights: castSaved, activations: act, grads: 0n,
                    loss_temporaries: 0n, working_set: 0n, ddp_buckets: ddp, gathered_params: gather,
                    reduce_buffers: reduce };
    if (lossTmp >= recompute - logprobs + firstGrads + working) early.loss_temporaries = lossTmp;
    else {
      early.activations = act - logprobs + recompute;
      early.grads = firstGrads;
      early.working_set = working;
      early.cast_weights = castSaved + castRebuilt;
    }
    const late = { params: P, optimizer: O, cast_weights: 0n, activations: actEnd, grads: G + rootGrad,
                   working_set: working, ddp_buckets: ddp, gathered_params: gather, reduce_buffers: reduce };
    // under checkpointing the first layer is rebuilt before its backward, live with every gradient but its own
    const layerGrads = recompute ? (z >= 2 ? ceilDiv(layer * big(lay.grads), N) : layer * big(lay.grads)) : 0n;
    const rebuilt = Object.assign({}, late, { activations: actEnd + recompute,
      grads: late.grads - (layerGrads < G ? layerGrads : G), cast_weights: castRebuilt });
    const points = [[early, "start"], [late, "end"]].concat(recompute ? [[rebuilt, "first layer rebuilt"]] : []);
    let [bwd, point] = points[0];
    for (const [terms, name] of points.slice(1)) if (sum(terms) > sum(bwd)) [bwd, point] = [terms, name];
    const updateElems = z >= 1 ? ceilDiv(n, N) : n;
    const largest = shapes.reduce((acc, x) => max(acc, numel(x)), 0n);
    const updateBytes = big(lay.master || lay.weights);
    const impl = setup.optimizer_impl === "default" ? D.default_impl[setup.device] : setup.optimizer_impl;
    let temps = 0n;
    if (impl === "foreach") temps = big(D.foreach_temporaries[setup.optimizer]) * updateElems * updateBytes;
    else if (impl === "for-loop") temps = big(D.for_loop_largest_tensors[setup.optimizer]) * largest * updateBytes;
    let opt;
    if (lay.master) {
      opt = { params: P, optimizer: O, master_grads: 4n * updateElems, grads: 0n, temporaries: 0n, ddp_buckets: ddp };
      if (G >= temps) opt.grads = max(G, temps); else opt.temporaries = max(G, temps);
    } else {
      opt = { params: P, grads: G, optimizer: O, temporaries: temps, ddp_buckets: ddp };
    }
    const between = { params: P, grads: kept, optimizer: O, ddp_buckets: ddp };
    const out = { forward: fwd, backward: bwd, optimizer: opt, between_steps: between };
    const totals = {};
    for (const [k, v] of Object.entries(out)) totals[k] = sum(v);
    return { terms: out, totals, impl, point, castSaved };
  }

  function estimate(m, setup) {
    checkShape(m);
    if (!D.optimizers.includes(setup.optimizer)) throw new Error(`unknown optimizer ${setup.optimizer}`);
    if (!(setup.precision in D.precisions)) throw new Error(`unknown precision ${setup.precision}`);
    if (!D.checkpointing.includes(setup.checkpointing)) throw new Error(`unknown checkpointing ${setup.checkpointing}`);
    if (!D.attention.includes(setup.attention)) throw new Error(`unknown attention ${setup.attention}`);
    if (!D.devices.includes(setup.device)) throw new Error(`unknown device ${setup.device}`);
    if (!D.optimizer_impls.includes(setup.optimizer_impl)) {
      throw new Error(`unknown optimizer implementation ${setup.optimizer_impl}`);
    }
    for (const k of ["batch", "seq", "gpus"]) {
      if (!Number.isInteger(setup[k]) || setup[k] < 1) throw new Error(`${k} must be a positive integer, not ${setup[k]}`);
    }
    if (![0, 1, 2, 3].includes(setup.zero)) throw new Error(`zero must be 0, 1, 2 or 3, not ${setup.zero}`);
    const lay = D.precisions[setup.precision];
    if (lay.zero3_only && setup.zero !== 3) {
      throw new Error(`precision ${setup.precision} is FSDP2's MixedPrecisionPolicy: it needs zero 3`);
    }
    if (setup.optimizer_impl === "fused" && D.no_fused.includes(setup.optimizer)) {
      throw new Error(`optimizer ${setup.optimizer} has no fused implementation`);
    }
    if (m.positions && setup.seq > m.positions) {
      throw new Error(`seq ${setup.seq} exceeds the model's ${m.positions} learned positions`);
    }
    if (m.context && setup.seq > m.context) {
      throw new Error(`seq ${setup.seq} exceeds the model's context of ${m.context} positions (max_position_embeddings)`);
    }
    const shapes = parameterShapes(m);
    const n = shapes.reduce((acc, s) => acc + numel(s), 0n);
    const master = n * big(lay.master);
    const full = { params: n * big(lay.weights), grads: n * big(lay.grads),
                   optimizer: optimizerBytes(setup.optimizer, shapes, big(lay.state)) + master };
    const N = big(setup.gpus);
    const per = {
      params: setup.zero >= 3 ? ceilDiv(full.params, N) : full.params,
      grads: setup.zero >= 2 ? ceilDiv(full.grads, N) : full.grads,
      optimizer: setup.zero >= 1 ? ceilDiv(full.optimizer, N) : full.optimizer,
    };
    const acts = activationTerms(m, setup);
    per.activations = acts.total_bytes;
    per.total = per.params + per.grads + per.optimizer + per.activations;
    const ph = phases(m, setup, shapes, n, per, acts);
    let peakPhase = "forward";
    for (const k of Object.keys(ph.totals)) if (ph.totals[k] > ph.totals[peakPhase]) peakPhase = k;
    const peak = ph.totals[peakPhase];
    if (setup.context_bytes !== null && (!Number.isInteger(setup.context_bytes) || setup.context_bytes < 0)) {
      throw new Error(`context_bytes must be a non-negative integer, not ${setup.context_bytes}`);
    }
    const headroom = setup.context_bytes !== null ? big(setup.context_bytes)
      : (setup.device === "cuda" ? big(D.cuda_context_bytes) : 0n);
    const fits = D.gpus.map((gpu) => {
      const cap = big(gpu.capacity_bytes), dtypeOk = gpu.dtypes.includes(lay.compute);
      const room = peak + headroom <= cap;
      return { gpu: gpu.name, capacity: cap, dtypeOk, fits: dtypeOk && room,
               verdict: dtypeOk ? (room ? "fits" : "does not fit") : `no ${lay.compute}` };
    });
    return { parameters: n, per, acts, phases: ph, peak, peakPhase, headroom, fits };
  }

  // ---- the form ----------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const intOf = (id) => {
    const text = $(id).value.trim();
    return /^-?\d+$/.test(text) ? Number(text) : NaN;
  };

  function readShape() {
    const name = $("hb-model").value;
    if (name !== "custom") return withDefaults(Object.assign({}, D.shapes[name]));
    const family = $("hb-family").value;
    const positions = intOf("hb-positions");
    const learned = !DECODERS.includes(family);  // gpt2, bert: learned positions and dropout (generator/estimate.py)
    return withDefaults({
      family, hidden: intOf("hb-hidden"), layers: intOf("hb-layers"), heads: intOf("hb-heads"),
      kv_heads: intOf("hb-kv-heads"), intermediate: intOf("hb-intermediate"), vocab: intOf("hb-vocab"),
      head_dim: intOf("hb-head-dim"), experts: intOf("hb-experts"), top_k: intOf("hb-top-k"),
      moe_intermediate: intOf("hb-moe-intermediate"), shared_intermediate: intOf("hb-shared-intermediate"),
      positions: positions || (learned ? intOf("hb-seq") : 0),
      type_vocab: family === "bert" ? 2 : 0,
      tied_embeddings: family === "bert" ? true : !$("hb-untied").checked,
      dropout: learned, name: "custom",
    });
  }

  function fillShape(name) {
    const custom = name === "custom";
    $("hb-shape").hidden = !custom;
    if (custom) return;
    const m = D.shapes[name];
    $("hb-family").value = m.family;
    for (const [id, key] of [["hb-hidden", "hidden"], ["hb-layers", "layers"], ["hb-heads", "heads"],
                             ["hb-kv-heads", "kv_heads"], ["hb-intermediate", "intermediate"], ["hb-vocab", "vocab"],
                             ["hb-positions", "positions"], ["hb-head-dim", "head_dim"], ["hb-experts", "experts"],
                             ["hb-top-k", "top_k"], ["hb-moe-intermediate", "moe_intermediate"],
                             ["hb-shared-intermediate", "shared_intermediate"]]) {
      $(id).value = String(m[key] || 0);
    }
    $("hb-untied").checked = !m.tied_embeddings;
    $("hb-seq").value = String(m.context ? Math.min(DEFAULT_SEQ, m.context) : DEFAULT_SEQ);
  }

  const PHASE_LABELS = { forward: "end of forward", backward: "worst point of backward",
                         optimizer: "optimizer step", between_steps: "between steps" };
  const TERM_LABELS = { params: "weights", grads: "gradients", optimizer: "optimizer state",
                        master_grads: "fp32 gradient copies", cast_weights: "autocast cast weights",
                        activations: "saved activations", logits: "logits", loss_temporaries: "loss temporaries",
                        working_set: "layer backward working set", temporaries: "step temporaries",
                        ddp_buckets: "DDP gradient buckets", gathered_params: "gathered units (ZeRO-3)",
                        reduce_buffers: "reduce-scatter buffers" };
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
        attention: $("hb-attention").value, device: $("hb-device").value, optimizer_impl: $("hb-impl").value,
        set_to_none: !$("hb-keep-grads").checked,
        context_bytes: $("hb-context").value.trim() === "" ? null
          : (Number.isInteger(intOf("hb-context")) ? intOf("hb-context") * 1048576 : NaN),
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
      const peak = $("hb-out-peak");
      peak.dataset.bytes = res.peak.toString();
      peak.dataset.phase = res.peakPhase;
      peak.textContent = grouped(res.peak);
      $("hb-out-peak-gib").textContent = `${gib(res.peak)} (${PHASE_LABELS[res.peakPhase]})`;
      const strings = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, x]) => [k, x.toString()])));
      $("hb-out-activations").dataset.terms = strings(res.acts);
      for (const [k, v] of Object.entries(res.phases.totals)) {
        const cell = $(`hb-phase-${k}`);
        cell.dataset.bytes = v.toString();
        cell.dataset.terms = strings(res.phases.terms[k]);
        cell.textContent = gib(v);
        $(`hb-phase-${k}-terms`).textContent = Object.entries(res.phases.terms[k])
          .filter(([, x]) => x > 0n).map(([t, x]) => `${TERM_LABELS[t]} ${gib(x)}`).join("; ");
      }
      $("hb-impl-used").textContent = res.phases.impl;
      $("hb-backward-point").textContent = `its ${res.phases.point}`;
      $("hb-phase-backward").dataset.castSaved = res.phases.castSaved.toString();
      const head = $("hb-out-headroom");
      head.dataset.bytes = res.headroom.toString();
      head.textContent = setup.context_bytes !== null ? `${gib(res.headroom)} (given)`
        : (res.headroom ? `${gib(res.headroom)} (pytorch/pytorch issue #34323)` : "none (sized for a CPU)");
      const note = D.precision_notes[setup.precision];
      $("hb-note").textContent = note ? `Note: ${note}.` : "";
      const list = $("hb-fits");
      list.replaceChildren();
      for (const f of res.fits) {
        const li = document.createElement("li");
        li.dataset.gpu = f.gpu;
        li.dataset.fits = String(f.fits);
        li.dataset.verdict = f.verdict;
        li.className = f.fits ? "hb-fit-yes" : "hb-fit-no";
        li.textContent = `${f.verdict}: ${f.gpu}`;
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
    for (const a of D.attention) $("hb-attention").add(new Option(a, a));
    for (const d of D.devices) $("hb-device").add(new Option(d, d));
    for (const i of D.optimizer_impls) $("hb-impl").add(new Option(i, i));
    for (const f of FAMILIES) $("hb-family").add(new Option(f, f));
    $("hb-optimizer").value = "adamw";
    $("hb-precision").value = "bf16-mixed";
    model.value = Object.keys(D.shapes).includes("llama-2-7b") ? "llama-2-7b" : Object.keys(D.shapes)[0];
    fillShape(model.value);
    model.addEventListener("change", () => { fillShape(model.value); render(); });
    // a typed family starts from its config class's tying (TIED_DEFAULT), as `handbook estimate --family` does
    $("hb-family").addEventListener("change", () => { $("hb-untied").checked = !TIED_DEFAULT[$("hb-family").value]; });
    form.addEventListener("input", render);
    form.addEventListener("change", render);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); render(); });
    render();
  }

  window.hbCalculator = { estimate, parameterShapes, phases };
  init();
})();
