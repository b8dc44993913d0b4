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

  // Every parameter tensor, [name, shape], in the layout and with the names of the Hugging Face classes
  // (model_shapes.parameter_shapes, the same order): the estimator reads norms, biases, experts, split
  // dimensions and LoRA targets off the names.
  function mlpShapes(m, p, routed) {
    const h = m.hidden;
    if (routed) {
      const E = m.experts, W = dExpert(m);
      const router = [[p + "gate.weight", [E, h]]];
      const experts = [[p + "experts.gate_up_proj", [E, 2 * W, h]], [p + "experts.down_proj", [E, h, W]]];
      if (m.family === "qwen3_moe") return experts.concat(router);
      if (m.family === "qwen2_moe") {
        const S = m.shared_intermediate;
        return router.concat(experts, [[p + "shared_expert.gate_proj.weight", [S, h]],
          [p + "shared_expert.up_proj.weight", [S, h]], [p + "shared_expert.down_proj.weight", [h, S]],
          [p + "shared_expert_gate.weight", [1, h]]]);
      }
      return router.concat(experts);
    }
    const I = dFF(m);
    if (FUSED_FAMILIES.includes(m.family)) return [[p + "gate_up_proj.weight", [2 * I, h]], [p + "down_proj.weight", [h, I]]];
    const out = [];
    for (const [proj, shape] of [["gate_proj", [I, h]], ["up_proj", [I, h]], ["down_proj", [h, I]]]) {
      out.push([p + `${proj}.weight`, shape]);
      if (m.mlp_bias) out.push([p + `${proj}.bias`, shape.slice(0, 1)]);
    }
    return out;
  }

  function parameterShapes(m) {
    const h = m.hidden, V = m.vocab, I = dFF(m), L = m.layers;
    const out = [];
    const add = (name, shape) => out.push([name, shape]);
    if (m.family === "gpt2") {
      add("wte.weight", [V, h]);
      add("wpe.weight", [m.positions, h]);
      for (let i = 0; i < L; i++) {
        const p = `h.${i}.`;
        for (const [n, s] of [["ln_1.weight", [h]], ["ln_1.bias", [h]], ["attn.c_attn.weight", [h, 3 * h]],
          ["attn.c_attn.bias", [3 * h]], ["attn.c_proj.weight", [h, h]], ["attn.c_proj.bias", [h]],
          ["ln_2.weight", [h]], ["ln_2.bias", [h]], ["mlp.c_fc.weight", [h, I]], ["mlp.c_fc.bias", [I]],
          ["mlp.c_proj.weight", [I, h]], ["mlp.c_proj.bias", [h]]]) add(p + n, s);
      }
      add("ln_f.weight", [h]);
      add("ln_f.bias", [h]);
      if (!m.tied_embeddings) add("lm_head.weight", [V, h]);
      return out;
    }
    if (m.family === "bert") {
      add("embeddings.word_embeddings.weight", [V, h]);
      add("embeddings.position_embeddings.weight", [m.positions, h]);
      add("embeddings.token_type_embeddings.weight", [m.type_vocab, h]);
      add("embeddings.LayerNorm.weight", [h]);
      add("embeddings.LayerNorm.bias", [h]);
      for (let i = 0; i < L; i++) {
        const p = `encoder.layer.${i}.`;
        for (const proj of ["query", "key", "value"]) {
          add(p + `attention.self.${proj}.weight`, [h, h]);
          add(p + `attention.self.${proj}.bias`, [h]);
        }
        for (const [n, s] of [["attention.output.dense.weight", [h, h]], ["attention.output.dense.bias", [h]],
          ["attention.output.LayerNorm.weight", [h]], ["attention.output.LayerNorm.bias", [h]],
          ["intermediate.dense.weight", [I, h]], ["intermediate.dense.bias", [I]], ["output.dense.weight", [h, I]],
          ["output.dense.bias", [h]], ["output.LayerNorm.weight", [h]], ["output.LayerNorm.bias", [h]]]) add(p + n, s);
      }
      add("pooler.dense.weight", [h, h]);
      add("pooler.dense.bias", [h]);
      return out;
    }
    const d = dHead(m), q = m.heads * d, kv = kvHeads(m) * d;
    add("model.embed_tokens.weight", [V, h]);
    for (let i = 0; i < L; i++) {
      const p = `model.layers.${i}.`, a = p + "self_attn.";
      if (FUSED_FAMILIES.includes(m.family)) {
        add(a + "o_proj.weight", [h, q]);
        add(a + "qkv_proj.weight", [q + 2 * kv, h]);
      } else {
        for (const [proj, rows] of [["q_proj", q], ["k_proj", kv], ["v_proj", kv]]) {
          add(a + `${proj}.weight`, [rows, h]);
          if (m.qkv_bias) add(a + `${proj}.bias`, [rows]);
        }
        add(a + "o_proj.weight", [h, q]);
        if (m.o_bias) add(a + "o_proj.bias", [h]);
      }
      if (QK_NORM_FAMILIES.includes(m.family)) {
        add(a + "q_norm.weight", [d]);
        add(a + "k_norm.weight", [d]);
      }
      for (const t of mlpShapes(m, p + "mlp.", isMoeLayer(m, i))) out.push(t);
      add(p + "input_layernorm.weight", [h]);
      add(p + "post_attention_layernorm.weight", [h]);
      if (SANDWICH_FAMILIES.includes(m.family)) {
        add(p + "pre_feedforward_layernorm.weight", [h]);
        add(p + "post_feedforward_layernorm.weight", [h]);
      }
    }
    add("model.norm.weight", [h]);
    if (!m.tied_embeddings) add("lm_head.weight", [V, h]);
    return out;
  }
  const tensorShapes = (m) => parameterShapes(m).map(([, s]) => s);

  // ---- beyond data parallel, fine-tuning, offload (estimator.py: SCHEDULES ... PCIE_SOURCE; a test compares
  // these constants with the Python ones) --------------------------------------------------------------------
  const SCHEDULES = ["1f1b", "interleaved", "gpipe"];
  const ROW_PARALLEL = ["o_proj", "c_proj", "down_proj", "attention.output.dense", "output.dense"];
  const REPLICATED = ["mlp.gate.weight", "shared_expert_gate"];
  const NORM_NAMES = ["norm", "ln_", "LayerNorm"];
  const BASE_QUANT = ["none", "nf4"];
  const NF4_BLOCK = 64n, NF4_BLOCK2 = 256n;
  const OFFLOAD = ["optimizer", "parameters", "activations"];
  const PCIE_GB_S = 31.5;
  const PCIE_SOURCE = "PCIe 4.0 x16 nominal, 31.5 GB/s each way (PCI-SIG PCIe Base Specification 4.0)";
  const MAX_SIZE = 1e9;

  const cdiv = (a, b) => Number((big(a) + big(b) - 1n) / big(b));  // ceil_div on shape dimensions (Numbers)
  const isNorm = (name) => NORM_NAMES.some((k) => name.includes(k));

  // estimator._layer_of: the layer index in a parameter's name, or null
  function layerOf(name) {
    const parts = name.split(".");
    for (let i = 0; i < parts.length - 1; i++) {
      if (["h", "layers", "layer"].includes(parts[i]) && /^\d+$/.test(parts[i + 1])) return Number(parts[i + 1]);
    }
    return null;
  }

  // estimator.stage_layers: [first, end) of a pipeline stage's layers
  function stageLayers(layers, pp, stage) {
    const per = cdiv(layers, pp);
    return [Math.min(stage * per, layers), Math.min((stage + 1) * per, layers)];
  }

  // estimator.is_lora_target: PEFT's target_modules matching
  function isLoraTarget(name, targets) {
    const parts = name.split("."), last = parts[parts.length - 1];
    const module = ["weight", "bias"].includes(last) ? parts[parts.length - 2] : last;
    return targets.includes(module) && last === "weight" && !parts.includes("experts");
  }

  // estimator.rank_tensors: [name, per-rank shape, kind] of every tensor one rank of a stage holds
  function rankTensors(m, setup, stage) {
    const t = setup.tp, pp = setup.pp;
    const [first, end] = stageLayers(m.layers, pp, stage);
    const out = [];
    for (const [name, shape] of parameterShapes(m)) {
      const layer = layerOf(name);
      if (layer !== null && !(first <= layer && layer < end)) continue;
      const isHead = name.startsWith("lm_head") || ["ln_f.weight", "ln_f.bias", "model.norm.weight"].includes(name)
        || name.startsWith("pooler");
      const isEmb = layer === null && !isHead;
      const tiedLast = m.tied_embeddings && stage === pp - 1 && (name.includes("wte") || name.includes("embed_tokens"));
      if (pp > 1 && ((isEmb && stage !== 0 && !tiedLast) || (isHead && stage !== pp - 1))) continue;
      if (pp > 1 && isEmb && stage === pp - 1 && stage !== 0 && name.includes("position")) continue;
      let split = shape;
      if (name.includes(".experts.")) split = [cdiv(shape[0], setup.ep)].concat(shape.slice(1));
      if (t > 1 && shape.length >= 1 && !isNorm(name) && !REPLICATED.some((k) => name.includes(k))
          && !name.includes("position") && !name.includes("wpe") && !name.includes("token_type")) {
        const row = ROW_PARALLEL.some((k) => name.includes(`${k}.`));
        if (split.length === 1) {
          if (!row) split = [cdiv(split[0], t)];
        } else {
          // the output features (column) or the input features (row); stored (out, in) except GPT-2's Conv1D
          const conv1d = m.family === "gpt2" && split.length === 2, n = split.length;
          const [colDim, rowDim] = conv1d ? [n - 1, n - 2] : [n - 2, n - 1];
          let dim = row ? rowDim : colDim;
          if (name.includes("wte") || name.includes("embed") || name.startsWith("lm_head")) dim = 0;  // vocabulary
          split = split.map((x, i) => (i === dim ? cdiv(x, t) : x));
        }
      }
      out.push([name, split, setup.lora_rank ? "base" : "train"]);
      if (setup.lora_rank && isLoraTarget(name, setup.lora_targets) && shape.length === 2) {
        const [fanIn, fanOut] = m.family === "gpt2" ? [split[0], split[1]] : [split[1], split[0]];
        const stem = name.slice(0, -"weight".length), r = setup.lora_rank;
        out.push([stem + "lora_A.weight", [r, fanIn], "adapter"], [stem + "lora_B.weight", [fanOut, r], "adapter"]);
      }
    }
    return out;
  }

  // estimator.nf4_bytes: NF4 with double quantisation
  function nf4Bytes(n) {
    const blocks = ceilDiv(n, NF4_BLOCK);
    return ceilDiv(n, 2n) + blocks + 4n * ceilDiv(blocks, NF4_BLOCK2);
  }

  const quantised = (name, shape) => shape.length === 2 && !name.startsWith("lm_head") && !name.includes("embed")
    && !name.includes("wte") && !name.includes("wpe") && !name.includes(".experts.") && !name.includes("lora_");

  // ZeRO's split of weights, gradients and optimizer state, each rounded up (estimator.model_state_bytes)
  function zeroSplit(full, setup) {
    const N = big(setup.gpus), z = setup.zero;
    return { params: z >= 3 ? ceilDiv(full.params, N) : full.params, grads: z >= 2 ? ceilDiv(full.grads, N) : full.grads,
             optimizer: z >= 1 ? ceilDiv(full.optimizer, N) : full.optimizer };
  }

  // estimator.finetune_state_bytes: the frozen base (NF4 under QLoRA) and the fp32 adapters
  function finetuneStateBytes(tensors, setup) {
    const lay = D.precisions[setup.precision];
    const baseW = big(lay.master ? 2 : lay.weights);
    let base = 0n;
    for (const [name, shape, kind] of tensors) {
      if (kind !== "base") continue;
      base += setup.base_quant === "nf4" && quantised(name, shape) ? nf4Bytes(numel(shape)) : numel(shape) * baseW;
    }
    const adapters = tensors.filter(([, , kind]) => kind === "adapter").map(([, shape]) => shape);
    const na = adapters.reduce((acc, x) => acc + numel(x), 0n);
    const full = { params: base + 4n * na, grads: 4n * na, optimizer: optimizerBytes(setup.optimizer, adapters, 4n) };
    return [full, zeroSplit(full, setup)];
  }

  // estimator.linear_saves: under LoRA, which Linear layers still keep their input
  function linearSaves(m, setup) {
    if (!setup.lora_rank) return null;
    const t = setup.lora_targets, has = (x) => (t.includes(x) ? 1 : 0);
    const count = (xs) => xs.filter((x) => t.includes(x)).length;
    if (m.family === "gpt2") return { qkv: has("c_attn"), o: has("c_proj"), mlp_in: has("c_fc"), down: has("c_proj") };
    if (FUSED_FAMILIES.includes(m.family)) {
      return { qkv: has("qkv_proj"), o: has("o_proj"), mlp_in: has("gate_up_proj"), down: has("down_proj") };
    }
    if (m.family === "bert") {
      return { qkv: count(["query", "key", "value"]), o: has("dense"), mlp_in: has("dense"), down: has("dense") };
    }
    return { qkv: count(["q_proj", "k_proj", "v_proj"]), o: has("o_proj"), mlp_in: count(["gate_proj", "up_proj"]),
             down: has("down_proj") };
  }

  // estimator.adapter_activation_bytes: A's output for B, per layer (and the fp32 copy of A's input)
  function adapterActivationBytes(m, setup, s, b) {
    if (!setup.lora_rank) return 0n;
    const lay = D.precisions[setup.precision];
    const aDt = big(lay.cast ? lay.activations : 4), r = big(setup.lora_rank);
    let total = 0n;
    for (const [name, shape] of parameterShapes(Object.assign({}, m, { layers: 1 }))) {
      if (layerOf(name) === 0 && shape.length === 2 && isLoraTarget(name, setup.lora_targets)) {
        total += aDt * s * b * r;
        if (!lay.cast && lay.activations < 4) total += 4n * s * b * big(m.family === "gpt2" ? shape[0] : shape[1]);
      }
    }
    return total;
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
  // readers keep it (r: the residual stream's dtype; under autocast each Linear reading it keeps its own e copy);
  // a frozen RMSNorm (LoRA) keeps only its fp32 input
  function normBytes(m, e, r, cast, readers, frozen = false) {
    let own;
    if (DECODERS.includes(m.family) && frozen) own = 4n;
    else own = GEMMA_NORM_FAMILIES.includes(m.family) ? 8n : DECODERS.includes(m.family) ? 4n + r : r;
    return own + (readers === 0n ? 0n : cast ? readers * e : r);
  }

  // One layer's saved bytes (estimator.layer_activation_terms): routed picks a MoE or a dense layer; undefined,
  // the larger of the model's kinds. r: the residual stream's bytes; cast: autocast; mathSdpa: SDPA's math path;
  // saves: under LoRA, which Linear layers keep their input (linearSaves); mlpE: the bytes of what the MLP's
  // projections return (null: e).
  function layerTerms(m, s, b, e, mask, routed, attention = "sdpa", r = e, cast = false, mathSdpa = false,
                      saves = null, mlpE = null) {
    if (routed === undefined) {
      const nMoe = nMoeLayers(m);
      const kinds = [true, false].filter((k) => (k ? nMoe : m.layers - nMoe) > 0);
      const all = kinds.map((k) => layerTerms(m, s, b, e, mask, k, attention, r, cast, mathSdpa, saves, mlpE));
      const size = (t) => Object.values(t).reduce((x, y) => x + y, 0n);
      return all.reduce((best, t) => (size(t) > size(best) || (size(t) === size(best) && t.router > best.router)
        ? t : best));
    }
    const h = big(m.hidden), a = big(m.heads), I = big(dFF(m)), d = big(dHead(m)), kv = big(kvHeads(m));
    const sb = s * b, sbh = sb * h, as2b = a * s * s * b;
    const drop = m.dropout ? 1n : 0n;
    const moe = !!(routed && MOE_FAMILIES.includes(m.family));
    const fused = FUSED_FAMILIES.includes(m.family);
    let qkvIn = fused || m.family === "gpt2" ? 1n : 3n;
    // the router's Linear casts; Qwen2-MoE's shared expert's gate, up and gate read the norm's output too
    let mlpIn = fused || !DECODERS.includes(m.family) ? 1n : 2n;
    if (moe) mlpIn = 1n + (m.family === "qwen2_moe" ? 3n : 0n);
    let keepO = 1, keepDown = 1;
    if (saves !== null) {   // LoRA: a frozen Linear keeps no input
      qkvIn = big(saves.qkv);
      keepO = saves.o;
      keepDown = saves.down;
      if (!moe) mlpIn = big(saves.mlp_in);
    }
    const fz = saves !== null;   // LoRA: the norms' weights are frozen
    let norm = normBytes(m, e, r, cast, qkvIn, fz) + normBytes(m, e, r, cast, mlpIn, fz);
    if (SANDWICH_FAMILIES.includes(m.family)) norm += 2n * normBytes(m, e, r, cast, 0n, fz);  // before residual adds
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
    // under autocast PEFT hands an adapter its input in fp32 and autocast casts it back: a 16-bit copy of its own
    if (saves !== null && cast && keepO) att += e * sb * d * a;
    // eager's attention output is kept only by the output projection; a fused SDPA kernel keeps it either way
    if (!keepO && (attention === "eager" || mathSdpa)) att -= e * sb * d * a;
    if (fused && attention === "sdpa") att += e * sb * d * (2n * a + kv);  // Phi-3's fused qkv buffer
    let mlp, router;
    if (moe) {
      const k = big(m.top_k), W = big(dExpert(m));
      const ex = cast ? r : e;   // under autocast the experts run in the norm's output dtype
      mlp = ex * sb * k * (2n * h + 4n * W);
      if (m.family === "qwen2_moe") mlp += 4n * e * sb * big(m.shared_intermediate) + e * sb * (h + 1n);
      router = 4n * sb * big(m.experts) + 4n * sb + 41n * sb * k;
    } else {
      // decoders: the gate's output, its activation, the up projection's output (mlpE), and the product, kept
      // only by the down projection
      if (DECODERS.includes(m.family)) mlp = 3n * (mlpE === null ? e : mlpE) * sb * I + big(keepDown) * e * sb * I;
      else mlp = (2n - big(1 - keepDown)) * e * sb * I;
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

  // estimator.attention_scores_bytes: sdpa keeps the fp32 log-sum-exp; eager's softmax in fp32 for the decoders,
  // and under autocast on CUDA or where transformers' fp32 causal mask promotes the scores (BERT, a GPT-2 config)
  function scoresBytes(m, s, b, setup, t) {
    if (setup.attention === "sdpa" && !sdpaMathPath(m, setup)) return 4n * big(m.heads) * s * b;
    const lay = D.precisions[setup.precision];
    const e = big(lay.activations), as2b = big(m.heads) * s * s * b;
    const hfMask = m.family === "bert" || m.hidden_act === "gelu_new";
    const fp32Softmax = DECODERS.includes(m.family) || !!(lay.cast && (setup.device === "cuda" || hfMask));
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

  // estimator.activation_terms (the same keys), for one pipeline stage
  function activationTerms(m, setup, stage = 0) {
    const lay = D.precisions[setup.precision];
    const e = big(lay.activations), r = lay.cast ? 4n : e, cast = !!lay.cast;
    // context parallelism: s / cp tokens a rank
    const s = ceilDiv(big(setup.seq), big(setup.cp)), b = big(setup.batch), h = big(m.hidden), mask = maskBytes(setup);
    const tp = big(setup.tp), sp = setup.sequence_parallel;
    const lora = setup.lora_rank > 0;
    // bitsandbytes' Linear4bit returns its input's dtype: under autocast the quantised projections' outputs are r
    const mlpE = setup.base_quant === "nf4" ? r : null;
    const t = layerTerms(m, s, b, e, mask, undefined, setup.attention, r, cast, sdpaMathPath(m, setup),
                         linearSaves(m, setup), mlpE);
    t.scores = scoresBytes(m, s, b, setup, t);
    t.mlp += activationExtra(m, s, b, setup) + adapterActivationBytes(m, setup, s, b);
    if (tp > 1n) {  // tensor parallelism splits what lies between the column- and row-parallel projections
      const split = ["attention", "scores", "mlp"].concat(sp ? ["norm", "masks", "router"] : []);
      for (const k of split) t[k] = ceilDiv(t[k], tp);
    }
    const perLayer = t.norm + t.attention + t.scores + t.mlp + t.router + t.masks;
    let smaller = smallerLayersBytes(m, s, b, e, mask, r, cast);  // a MoE model's other layer kind
    if (tp > 1n) smaller = ceilDiv(smaller, tp);
    const [first, end] = stageLayers(m.layers, setup.pp, stage);   // the pipeline stage's layers
    const nLayers = end - first;
    if (nLayers !== m.layers) smaller = (smaller * big(nLayers)) / big(m.layers);
    const L = big(nLayers);
    let layers, recompute;
    if (setup.checkpointing === "none") { layers = L * perLayer - smaller; recompute = 0n; }
    else if (setup.checkpointing === "selective") {
      layers = L * (perLayer - t.scores) + t.scores - smaller; recompute = t.scores;
    } else {
      layers = L * r * s * b * h + perLayer; recompute = perLayer;
      // transformers' GPT-2 blocks take the causal mask positionally: checkpoint keeps one (b, 1, s, s) mask
      if (m.family === "gpt2" && setup.attention === "eager" && m.hidden_act === "gelu_new") layers += b * s * s * r;
    }
    const embMask = m.dropout ? (setup.device === "cuda" ? 1n : r) : 0n;
    // the token ids the embedding keeps for its weight's gradient (none when frozen: LoRA), the loss's labels
    const indices = 8n * s * b * ((lora ? 0n : 1n + (m.type_vocab ? 1n : 0n)) + 1n) + (m.positions && !lora ? 8n * s : 0n);
    const rotary = DECODERS.includes(m.family) ? 2n * s * big(dHead(m)) * r : 0n;
    let hidden = embMask * s * b * h + (m.family === "bert" ? r * s * b * h : 0n);
    const headReaders = lora && !setup.lora_targets.includes("lm_head") ? 0n : 1n;   // a frozen head keeps no input
    let head = normBytes(m, e, r, cast, headReaders, lora) * s * b * h;
    // the frozen embeddings' output needs no gradient, so the first layer's first norm keeps nothing
    if (lora && stage === 0) layers -= (normBytes(m, e, r, cast, 0n, true) * s * b * h) / (tp > 1n && sp ? tp : 1n);
    let logits = 4n * s * b * big(m.vocab);
    if (m.logit_softcap) logits += e * s * b * big(m.vocab);  // Gemma 2: the tanh of the soft-capping
    if (tp > 1n) {  // the vocabulary-parallel head and loss split the logits; sequence parallelism the rest
      logits = ceilDiv(logits, tp);
      if (sp) { hidden = ceilDiv(hidden, tp); head = ceilDiv(head, tp); }
    }
    const embedding = hidden + indices + rotary;
    let layerInput = setup.checkpointing === "full" ? r * s * b * h : 0n;
    if (tp > 1n && sp) {
      layerInput = ceilDiv(layerInput, tp);
      if (setup.checkpointing === "full") layers = ceilDiv(layers - recompute, tp) + recompute;
    }
    const pp = setup.pp, v = setup.virtual_stages, mb = setup.microbatches;
    if (pp > 1 && stage === pp - 1) {
      // the last stage holds the head and the loss: one micro-batch in flight under 1F1B, all under GPipe, the
      // interleaved schedule's warm-up plus one
      let num = 1, den = 1;
      if (setup.schedule === "gpipe") num = mb;
      else if (setup.schedule === "interleaved") [num, den] = [Math.min(1 + (v - 1) * pp, mb * v), v];
      const labels = 8n * s * b;   // the labels the loss keeps
      const stored = ceilDiv((layers - recompute + head + logits + labels) * big(num), big(den)) + recompute;
      return { layers_bytes: stored - head - logits - labels, embedding_bytes: labels, head_bytes: head,
               logits_bytes: logits, per_layer_bytes: perLayer, recompute_bytes: recompute,
               layer_input_bytes: layerInput, inflight_microbatches: num / den, stage_layers: nLayers,
               total_bytes: stored };
    }
    if (pp > 1) {
      // the first stage holds the most micro-batches in flight: pp under 1F1B, more under the interleaved
      // schedule, never more than there are; every one under GPipe
      let num, den;
      if (setup.schedule === "gpipe") [num, den] = [mb, 1];
      else if (setup.schedule === "interleaved") [num, den] = [Math.min(pp * pp * v + pp * (pp - 1), mb * pp * v), pp * v];
      else [num, den] = [Math.min(pp, mb), 1];
      const stored = ceilDiv((layers - recompute + embedding) * big(num), big(den)) + recompute;
      return { layers_bytes: stored - embedding, embedding_bytes: embedding, head_bytes: 0n, logits_bytes: 0n,
               per_layer_bytes: perLayer, recompute_bytes: recompute, layer_input_bytes: layerInput,
               inflight_microbatches: num / den, stage_layers: nLayers, total_bytes: stored };
    }
    return { layers_bytes: layers, embedding_bytes: embedding, head_bytes: head, logits_bytes: logits,
             per_layer_bytes: perLayer, recompute_bytes: recompute, layer_input_bytes: layerInput,
             inflight_microbatches: 1, stage_layers: nLayers, total_bytes: layers + embedding + head + logits };
  }

  const sum = (o) => Object.values(o).reduce((a, x) => a + x, 0n);
  const max = (a, b) => (a > b ? a : b);
  const countOf = (m) => tensorShapes(m).reduce((acc, s) => acc + numel(s), 0n);
  const lookupOnly = (m) => (m.tied_embeddings ? 0n : big(m.vocab) * big(m.hidden)) + big(m.positions) * big(m.hidden)
    + big(m.type_vocab) * big(m.hidden);

  // estimator.cast_parameters: [cached, saved], the parameters autocast casts and caches (not the embedding
  // lookups, norms or experts), and those a matmul saves for backward (not the biases either)
  function castParameters(m) {
    const shapes = parameterShapes(m);
    let cached = shapes.reduce((acc, [, x]) => acc + numel(x), 0n) - lookupOnly(m), saved = cached;
    for (const [name, x] of shapes) {
      if (name.includes(".experts.") || (x.length === 1 && isNorm(name))) { cached -= numel(x); saved -= numel(x); }
      else if (x.length === 1) saved -= numel(x);
    }
    return [cached, saved];
  }

  // estimator.rank_summary: one rank of a pipeline stage, what phases needs
  function rankSummary(m, setup, stage) {
    const tensors = rankTensors(m, setup, stage);
    const [first, end] = stageLayers(m.layers, setup.pp, stage);
    const count = (pred) => tensors.reduce((acc, [n, x, k]) => (pred(n, x, k) ? acc + numel(x) : acc), 0n);
    const inLayer = (name) => layerOf(name) === first;
    const trainable = (kind) => kind !== "base";
    const nf4 = setup.base_quant === "nf4";
    function castable(name, x, kind) {
      if (name.includes(".experts.") || (x.length === 1 && isNorm(name))) return false;
      if (name.includes("wpe") || name.includes("position") || name.includes("token_type")) return false;
      if ((name.includes("wte") || name.includes("embed")) && !m.tied_embeddings) return false;
      if (nf4 && kind === "base" && quantised(name, x)) return false;  // bitsandbytes dequantises on its own
      return true;
    }
    // the adapters of the whole model, as PEFT counts its trainable parameters; or every parameter
    const whole = Object.assign({}, setup, { tp: 1, pp: 1, ep: 1, sequence_parallel: false });
    const allTrain = setup.lora_rank
      ? rankTensors(m, whole, 0).reduce((acc, [, x, k]) => (k !== "base" ? acc + numel(x) : acc), 0n) : countOf(m);
    return {
      tensors, stage, stage_layers: end - first, head: stage === setup.pp - 1, lora: setup.lora_rank > 0,
      trainable: count((n, x, k) => trainable(k)), trainable_total: allTrain,
      layer: setup.lora_rank ? count((n, x, k) => inLayer(n) && trainable(k)) : count((n) => inLayer(n)),
      root: count((n, x, k) => layerOf(n) === null && (trainable(k) || !setup.lora_rank)),
      cached: count(castable), saved: count((n, x, k) => castable(n, x, k) && x.length >= 2),
      layer_cached: count((n, x, k) => inLayer(n) && castable(n, x, k)),
      parameters_held: tensors.reduce((acc, [, x]) => acc + numel(x), 0n),
    };
  }

  // estimator.phases: live bytes at each phase of one step, term by term
  function phases(m, setup, shapes, per, acts, rank) {
    const lay = D.precisions[setup.precision];
    const N = big(setup.gpus), z = setup.zero;
    let n = shapes.reduce((acc, x) => acc + numel(x), 0n);
    const P = per.params, G = per.grads, O = per.optimizer;
    const kept = setup.set_to_none ? 0n : G;
    // gradient accumulation (and a pipeline's micro-batches): from the second micro-batch on, the gradients of
    // the ones before are live through its forward and backward
    const accumulated = !setup.set_to_none || setup.microbatches > 1 ? G : 0n;
    let ddp = z < 2 && setup.gpus > 1 ? n * big(lay.grads) : 0n;
    const one = countOf(Object.assign({}, m, { layers: 1 }));
    let layer = countOf(Object.assign({}, m, { layers: 2 })) - one, root = one - layer;
    let [cached, saved] = castParameters(m);
    // s / cp tokens a rank (context parallelism)
    const e = big(lay.activations), s = ceilDiv(big(setup.seq), big(setup.cp)), b = big(setup.batch), V = big(m.vocab),
      h = big(m.hidden);
    let logits = e * s * b * V, lossTmp = 8n * s * b * V;
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
    const recompute = acts.recompute_bytes;
    let logprobs = acts.logits_bytes;
    let castLayer = castParameters(Object.assign({}, m, { layers: 2 }))[0]
      - castParameters(Object.assign({}, m, { layers: 1 }))[0];
    if (rank) {  // one rank of a tensor-, pipeline- or expert-parallel run, or a LoRA run
      n = rank.trainable; layer = rank.layer; root = rank.root;
      cached = rank.cached; saved = rank.saved; castLayer = rank.layer_cached;
      ddp = z < 2 && setup.gpus > 1 ? n * big(lay.grads) : 0n;
      if (!rank.head) { logits = 0n; lossTmp = 0n; logprobs = 0n; }
      else if (setup.tp > 1) { logits = ceilDiv(logits, big(setup.tp)); lossTmp = ceilDiv(lossTmp, big(setup.tp)); }
    }
    const castB = big(lay.cast);
    const cast = castB * cached;
    const fullCkpt = setup.checkpointing === "full";
    const headCast = fullCkpt && (!rank || rank.head) ? ceilDiv(V * h, big(setup.tp)) : 0n;
    const castSaved = fullCkpt ? castB * headCast : castB * saved;
    // a rebuilt layer runs under autocast again: its weights are cast and cached again
    const castRebuilt = fullCkpt && lay.cast ? castB * castLayer : 0n;
    const gather = z >= 3 ? big(lay.gather || lay.weights) * (root + 2n * layer) : 0n;
    const unitGrad = big(lay.unit_grad || lay.grads);
    const rootGrad = z >= 2 ? root * unitGrad : 0n;
    const reduce = z >= 2 ? layer * unitGrad + (layer + root) * big(lay.reduce || lay.grads) : 0n;
    const allGrads = n * big(lay.grads);
    const firstGrads = accumulated ? G : (root * unitGrad < allGrads ? root * unitGrad : allGrads);
    const fwd = { params: P, grads: accumulated, optimizer: O, cast_weights: cast, activations: act, logits,
                  ddp_buckets: ddp, gathered_params: gather };
    const early = { params: P, optimizer: O, cast_weights: castSaved, activations: act, grads: accumulated,
                    loss_temporaries: 0n, working_set: 0n, ddp_buckets: ddp, gathered_params: gather,
                    reduce_buffers: reduce };
    if (lossTmp >= recompute - logprobs + (firstGrads - accumulated) + working) early.loss_temporaries = lossTmp;
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
    const lora = !!(rank && rank.lora);
    const updateBytes = big(lora ? 4 : lay.master || lay.weights);   // LoRA's adapters: fp32, no master copy
    const impl = setup.optimizer_impl === "default" ? D.default_impl[setup.device] : setup.optimizer_impl;
    let temps = 0n;
    if (impl === "foreach") temps = big(D.foreach_temporaries[setup.optimizer]) * updateElems * updateBytes;
    else if (impl === "for-loop") temps = big(D.for_loop_largest_tensors[setup.optimizer]) * largest * updateBytes;
    let opt;
    if (lay.master && !lora) {
      opt = { params: P, optimizer: O, master_grads: 4n * updateElems, grads: 0n, temporaries: 0n, ddp_buckets: ddp };
      if (G >= temps) opt.grads = max(G, temps); else opt.temporaries = max(G, temps);
    } else {
      opt = { params: P, grads: G, optimizer: O, temporaries: temps, ddp_buckets: ddp };
    }
    const between = { params: P, grads: kept, optimizer: O, ddp_buckets: ddp };
    return { terms: { forward: fwd, backward: bwd, optimizer: opt, between_steps: between }, impl, point, castSaved };
  }

  // estimator.offload_terms: what offloading moves to the host, and the step's transfers
  function offloadTerms(m, setup, per, terms, acts, rank) {
    const lay = D.precisions[setup.precision];
    let host = 0n, pinned = 0n, moved = 0n;
    const out = {};
    for (const [k, v] of Object.entries(terms)) out[k] = Object.assign({}, v);
    const drop = (term) => { for (const t of Object.values(out)) if (term in t) t[term] = 0n; };
    const parts = setup.offload;
    if (parts.includes("optimizer") || parts.includes("parameters")) {
      host += per.optimizer; pinned += per.optimizer;
      drop("optimizer"); drop("temporaries"); drop("master_grads");
      moved += per.grads + per.params;
    }
    if (parts.includes("parameters")) {
      host += per.params + per.grads; pinned += per.params + per.grads;
      moved += per.params;   // a second copy up for backward
      // one layer gathered in compute and the next prefetched (the whole model's layer when nothing is split)
      const one = countOf(Object.assign({}, m, { layers: 1 }));
      const unit = rank ? rank.layer : countOf(Object.assign({}, m, { layers: 2 })) - one;
      const keep = 2n * unit * big(lay.gather || lay.weights);
      drop("params"); drop("grads");
      for (const t of Object.values(out)) t.gathered_units = keep;
    }
    if (parts.includes("activations")) {
      const kept = acts.per_layer_bytes;
      host += acts.total_bytes; pinned += acts.total_bytes; moved += 2n * acts.total_bytes;
      for (const t of Object.values(out)) if ("activations" in t && t.activations > kept) t.activations = kept;
    }
    return { parts: parts.slice(), host_bytes: host, pinned_host_bytes: pinned, transfer_bytes_per_step: moved,
             pcie_gb_s: setup.pcie_gb_s, transfer_seconds_per_step: Number(moved) / (setup.pcie_gb_s * 1e9),
             bandwidth_source: setup.pcie_gb_s === PCIE_GB_S ? PCIE_SOURCE : "given (--pcie-gb-s)", terms: out };
  }

  // Setup.__post_init__'s checks of the fields beyond data parallel (the same messages)
  function checkSetupExtras(setup) {
    for (const k of ["tp", "pp", "microbatches", "virtual_stages", "cp", "ep"]) {
      const v = setup[k];
      if (!Number.isInteger(v) || v < 1 || v > MAX_SIZE) throw new Error(`${k} must be a positive integer, not ${v}`);
    }
    if (setup.sequence_parallel && setup.tp === 1) throw new Error("sequence_parallel needs tensor parallelism (tp of 2 or more)");
    if (!SCHEDULES.includes(setup.schedule)) throw new Error(`unknown schedule ${setup.schedule}`);
    if (setup.virtual_stages > 1 && setup.schedule !== "interleaved") {
      throw new Error("virtual_stages is for the interleaved schedule");
    }
    if (setup.schedule === "interleaved" && setup.pp > 1 && setup.microbatches % setup.pp) {
      throw new Error(`the interleaved schedule needs microbatches (${setup.microbatches}) to be a multiple of pp `
                      + `(${setup.pp}) (Megatron-LM's requirement)`);
    }
    if (setup.cp > 1 && setup.attention === "eager") {
      throw new Error("context parallelism needs a fused attention kernel (attention sdpa), not eager");
    }
    const r = setup.lora_rank;
    if (!Number.isInteger(r) || r < 0 || r > MAX_SIZE) throw new Error(`lora_rank must be a non-negative integer, not ${r}`);
    if (!setup.lora_targets.length) throw new Error("lora_targets must be module names, not ()");
    if (!BASE_QUANT.includes(setup.base_quant)) throw new Error(`unknown base_quant ${setup.base_quant}`);
    if (setup.base_quant !== "none" && !r) throw new Error("base_quant nf4 (QLoRA) needs LoRA adapters: give lora_rank");
    const lay = D.precisions[setup.precision];
    if (r && (lay.master || lay.zero3_only)) {
      throw new Error(`precision ${setup.precision} has no meaning for a frozen base: use fp32, bf16-mixed, `
                      + "fp16-mixed or bf16 with LoRA");
    }
    if (setup.offload.some((x) => !OFFLOAD.includes(x)) || new Set(setup.offload).size !== setup.offload.length) {
      throw new Error(`offload must name distinct parts among ${OFFLOAD.join(", ")}`);
    }
    if (setup.offload.length && setup.device !== "cuda") {
      throw new Error("offload moves tensors from a GPU to the host: on a CPU the host is the device");
    }
    if (!(setup.pcie_gb_s > 0 && setup.pcie_gb_s <= 1e6)) {
      throw new Error(`pcie_gb_s must be a positive number of GB/s, not ${setup.pcie_gb_s}`);
    }
  }

  // estimator.check_parallel: the splits a model allows
  function checkParallel(m, setup) {
    const t = setup.tp, kv = kvHeads(m);
    if (t > 1 && (m.heads % t || kv % t)) {
      throw new Error(`tp ${t} must divide the attention heads (${m.heads}) and key/value heads (${kv})`);
    }
    if (setup.pp > m.layers) throw new Error(`pp ${setup.pp} exceeds the model's ${m.layers} layers`);
    const chunks = setup.pp * setup.virtual_stages;
    if (setup.schedule === "interleaved" && m.layers % chunks) {
      throw new Error(`the interleaved schedule needs the layers (${m.layers}) to divide into pp x virtual_stages = `
                      + `${chunks} chunks`);
    }
    if (setup.seq % setup.cp) throw new Error(`cp ${setup.cp} must divide seq ${setup.seq}`);
    const moe = MOE_FAMILIES.includes(m.family);
    if (setup.ep > 1 && (!moe || m.experts % setup.ep)) {
      throw new Error(`ep ${setup.ep} needs a mixture of experts whose experts it divides`
                      + (moe ? ` (${m.experts})` : `, not a ${m.family} model`));
    }
    if (setup.lora_rank) {
      const names = new Set(parameterShapes(Object.assign({}, m, { layers: 1 }))
        .filter(([n, x]) => x.length === 2 && layerOf(n) !== null && !n.includes(".experts."))
        .map(([n]) => n.split(".").slice(-2)[0]));
      const unknown = setup.lora_targets.filter((x) => !names.has(x));
      if (unknown.length) {
        throw new Error(`lora_targets ${unknown.join(", ")}: no such Linear in a ${m.family} model `
                        + `(its Linear modules: ${[...names].sort().join(", ")})`);
      }
    }
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
    if (setup.context_bytes !== null && (!Number.isInteger(setup.context_bytes) || setup.context_bytes < 0)) {
      throw new Error(`context_bytes must be a non-negative integer, not ${setup.context_bytes}`);
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
    checkSetupExtras(setup);
    if (m.positions && setup.seq > m.positions) {
      throw new Error(`seq ${setup.seq} exceeds the model's ${m.positions} learned positions`);
    }
    if (m.context && setup.seq > m.context) {
      throw new Error(`seq ${setup.seq} exceeds the model's context of ${m.context} positions (max_position_embeddings)`);
    }
    checkParallel(m, setup);
    const shapes = tensorShapes(m);
    const n = shapes.reduce((acc, s) => acc + numel(s), 0n);
    const sharded = setup.tp > 1 || setup.pp > 1 || setup.ep > 1 || setup.lora_rank > 0;
    function oneRank(stage) {
      let full, per, trainShapes, rank = null;
      if (sharded) {
        rank = rankSummary(m, setup, stage);
        if (setup.lora_rank) [full, per] = finetuneStateBytes(rank.tensors, setup);
        else {
          const held = rank.tensors.map(([, x]) => x), count = held.reduce((acc, x) => acc + numel(x), 0n);
          full = { params: count * big(lay.weights), grads: count * big(lay.grads),
                   optimizer: optimizerBytes(setup.optimizer, held, big(lay.state)) + count * big(lay.master) };
          per = zeroSplit(full, setup);
        }
        trainShapes = rank.tensors.filter(([, , kind]) => kind !== "base").map(([, x]) => x);
      } else {
        full = { params: n * big(lay.weights), grads: n * big(lay.grads),
                 optimizer: optimizerBytes(setup.optimizer, shapes, big(lay.state)) + n * big(lay.master) };
        per = zeroSplit(full, setup);
        trainShapes = shapes;
      }
      const acts = activationTerms(m, setup, stage);
      per.activations = acts.total_bytes;
      per.total = per.params + per.grads + per.optimizer + per.activations;
      const ph = phases(m, setup, trainShapes, per, acts, rank);
      const offload = setup.offload.length ? offloadTerms(m, setup, per, ph.terms, acts, rank) : null;
      if (offload) ph.terms = offload.terms;
      ph.totals = {};
      for (const [k, v] of Object.entries(ph.terms)) ph.totals[k] = sum(v);
      let peakPhase = "forward";
      for (const k of Object.keys(ph.totals)) if (ph.totals[k] > ph.totals[peakPhase]) peakPhase = k;
      return { peak: ph.totals[peakPhase], peakPhase, ph, per, acts, rank, offload };
    }
    // the most loaded rank: under pipeline parallelism the first stage or the last, whichever peaks higher
    let best = oneRank(0);
    if (setup.pp > 1) {
      const last = oneRank(setup.pp - 1);
      if (last.peak > best.peak) best = last;
    }
    const { peak, peakPhase, ph, per, acts, rank, offload } = best;
    const trainable = sharded ? rank.trainable_total : n;
    const headroom = setup.context_bytes !== null ? big(setup.context_bytes)
      : (setup.device === "cuda" ? big(D.cuda_context_bytes) : 0n);
    const fits = D.gpus.map((gpu) => {
      const cap = big(gpu.capacity_bytes), dtypeOk = gpu.dtypes.includes(lay.compute);
      const room = peak + headroom <= cap;
      return { gpu: gpu.name, capacity: cap, dtypeOk, fits: dtypeOk && room,
               verdict: dtypeOk ? (room ? "fits" : "does not fit") : `no ${lay.compute}` };
    });
    if (rank) delete rank.tensors;
    if (offload) delete offload.terms;
    return { parameters: n, trainable, per, acts, rank, offload, phases: ph, peak, peakPhase, headroom, fits };
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
                        reduce_buffers: "reduce-scatter buffers", gathered_units: "gathered units (offload)" };
  const GIB = 1024n ** 3n;
  function gib(x) {
    const hundredths = (x * 100n + GIB / 2n) / GIB;
    const whole = hundredths / 100n, frac = String(hundredths % 100n).padStart(2, "0");
    return `${whole.toLocaleString("en-US")}.${frac} GiB`;
  }
  const grouped = (x) => x.toLocaleString("en-US");

  // a result's object for a data attribute: BigInts as decimal strings (JSON has no exact big integers)
  const strings = (o) => JSON.stringify(o, (k, x) => (typeof x === "bigint" ? x.toString() : x));

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
        tp: intOf("hb-tp"), sequence_parallel: $("hb-sequence-parallel").checked, pp: intOf("hb-pp"),
        microbatches: intOf("hb-microbatches"), schedule: $("hb-schedule").value,
        virtual_stages: intOf("hb-virtual-stages"), cp: intOf("hb-cp"), ep: intOf("hb-ep"),
        lora_rank: intOf("hb-lora-rank"), base_quant: $("hb-base-quant").value,
        // comma-separated, as `handbook estimate --lora-targets` and --offload read them
        lora_targets: $("hb-lora-targets").value.split(",").map((x) => x.trim()).filter((x) => x),
        offload: OFFLOAD.filter((part) => $(`hb-offload-${part}`).checked),
        pcie_gb_s: $("hb-pcie").value.trim() === "" ? PCIE_GB_S : Number($("hb-pcie").value.trim()),
      };
      const res = estimate(readShape(), setup);
      err.textContent = "";
      err.hidden = true;
      $("hb-out").hidden = false;
      const params = $("hb-parameters");
      params.dataset.value = res.parameters.toString();
      params.textContent = grouped(res.parameters);
      const trainable = $("hb-trainable");
      trainable.dataset.value = res.trainable.toString();
      trainable.textContent = grouped(res.trainable);
      const rank = $("hb-out-rank");
      rank.dataset.json = res.rank ? strings(res.rank) : "null";
      const stage = setup.pp === 1 ? "the whole depth" : `pipeline stage ${res.rank.stage}`
        + ` (the ${res.rank.stage === 0 ? "first" : "last"} of ${setup.pp}, the more loaded)`;
      rank.textContent = res.rank ? `${stage}, ${res.rank.stage_layers} layers, `
        + `${grouped(res.rank.parameters_held)} parameters held, ${grouped(res.rank.trainable)} of them trained`
        : "the whole model on every device";
      const off = $("hb-out-offload");
      off.dataset.json = res.offload ? strings(res.offload) : "null";
      off.textContent = res.offload ? `${gib(res.offload.host_bytes)} in host memory `
        + `(${gib(res.offload.pinned_host_bytes)} pinned); ${gib(res.offload.transfer_bytes_per_step)} moved a step, `
        + `${res.offload.transfer_seconds_per_step.toFixed(3)} s at ${res.offload.pcie_gb_s} GB/s `
        + `(${res.offload.bandwidth_source}; not overlapped)` : "nothing offloaded";
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
      const parallel = Math.max(setup.tp, setup.pp, setup.cp, setup.ep) > 1 ? D.model_parallel_note : "";
      const notes = [note, parallel].filter((x) => x);   // the estimate's notes, as the CLI gives them
      $("hb-note").dataset.json = JSON.stringify(notes);
      $("hb-note").textContent = notes.map((x) => `Note: ${x}.`).join(" ");
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
    for (const x of SCHEDULES) $("hb-schedule").add(new Option(x, x));
    for (const x of BASE_QUANT) $("hb-base-quant").add(new Option(x, x));
    $("hb-pcie-default").textContent = `${PCIE_GB_S}: ${PCIE_SOURCE}`;
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

  window.hbCalculator = { estimate, parameterShapes, withDefaults };
  init();
})();
