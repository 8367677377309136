"""A self-contained ``.maps.html``: the recorded cross-attention maps, explored in any browser, offline.

One file, nothing fetched: the image is an inline PNG data URI, the maps are inline base64, the
script and styles are inline. The page has word, layer, head and step selectors and draws each map
itself, with the same arithmetic as :meth:`~crossattn.attention.maps.AttentionMaps.word_map`: the
word's tokens summed, the mean over the chosen steps and heads, each layer upsampled bilinearly
(``align_corners=False``) to the image size and the layers averaged (DAAM's aggregation, Tang et al.,
2022).

With a base model's maps of the same prompt and seed (``maps --lora DIR --compare-base --html``, the
explorer's comparison: :mod:`crossattn.sampling.compare`) the page draws the base model's map beside the
LoRA's for every selection, a row of word thumbnails for each, and per word how far its map moved from the
base's (Jensen–Shannon divergence, bits) and how concentrated each is (mass in its top 10 % of pixels), the
numbers fine-tuning's validation logs; the file holds both sets of maps (twice the size).

Size: every ``(step, head, token)`` map of ``h × w`` probabilities is stored as uint8 scaled to its
own maximum (one float32 scale each), so quantisation error is at most 1/510 of that map's maximum
and a word with little attention keeps its shape. The default model at 20 steps with per-step and
per-head maps (7 layers, 4 heads, 16 tokens) is about 1.3 M bytes before base64, ~1.8 MB as a file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ..viz import _short  # the layer labels of the CLI's grid
from .words import merge_words


def _quantise(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., N)`` probabilities → uint8 ``(..., N)`` scaled to each map's maximum, and the float32 maxima."""
    top = probs.max(axis=-1, keepdims=True).astype(np.float32)  # (..., 1)
    safe = np.where(top > 0, top, 1.0)
    codes = np.rint(probs / safe * 255.0).clip(0, 255).astype(np.uint8)
    return codes, top[..., 0]


def _word_tokens(tokens: list[str], encoders: list[str] | None) -> dict[str, list[int]]:
    """Each distinct word → every token index of all its occurrences, every encoder's (what ``word_map`` sums)."""
    words: dict[str, list[int]] = {}
    for word, indices in merge_words(tokens, encoders):
        words.setdefault(word, []).extend(indices)
    return words


def _image_uri(image) -> str | None:
    """A PIL image → ``data:image/png;base64,...`` (None stays None)."""
    if image is None:
        return None
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def maps_payload(maps, image=None, image_index: int = 0) -> dict:
    """Everything the page needs, as JSON-ready values: metadata, base64 uint8 maps and float32 scales.

    Layout of ``codes``: layer after layer (in ``layers`` order), each ``[step][head][token][position]``.
    """
    names = maps.select(None, "cross")
    tokens = maps.tokens_for(image_index)
    encoders = maps.encoders_for(image_index)
    words = _word_tokens(tokens, encoders)
    keep = slice(None)  # every key: a U-Net model's page is as before
    if encoders is not None:  # joint models: hundreds of keys are padding; keep only the words' tokens
        keep = sorted({i for indices in words.values() for i in indices})
        tokens = [tokens[i] for i in keep]
        words = {word: [keep.index(i) for i in indices] for word, indices in words.items()}
    codes, scales, layers = [], [], []
    code_offset = scale_offset = 0
    for name in names:
        info = maps.meta["layers"][name]
        x = maps.tensors[name][:, maps._image(image_index)][..., keep].float().numpy()  # (S, heads, N, K kept)
        x = np.ascontiguousarray(x.transpose(0, 1, 3, 2))  # (S, heads, K, N): one map per kept token
        q, top = _quantise(x)
        steps, heads, keys, positions = q.shape
        layers.append(
            {
                "name": name,
                "short": _short(name),
                "resolution": info["resolution"],
                "height": info["height"],
                "width": info["width"],
                "heads": heads,
                "steps": steps,
                "keys": keys,
                "offset": code_offset,
                "scale_offset": scale_offset,
            }
        )
        codes.append(q.reshape(-1))
        scales.append(top.reshape(-1))
        code_offset += q.size
        scale_offset += top.size
    return {
        "prompt": maps.prompt(image_index),
        "tokens": tokens,
        "words": [[word, indices] for word, indices in words.items()],
        "image_size": list(maps.image_size),
        "steps": maps.num_steps,
        "per_step": bool(maps.meta["per_step"]),
        "per_head": bool(maps.meta["per_head"]),
        "half": maps.halves[image_index],
        "layers": layers,
        "image": _image_uri(image),
        "codes": base64.b64encode(np.concatenate(codes).tobytes()).decode("ascii"),
        "scales": base64.b64encode(np.concatenate(scales).astype("<f4").tobytes()).decode("ascii"),
    }


def maps_html(
    maps, image=None, image_index: int = 0, title: str | None = None, base=None, numbers: dict | None = None
) -> str:
    """The page as a string (see the module docstring). ``base``: the base model's ``(maps, image)`` of the same
    prompt and seed (a LoRA without its adapter: :mod:`crossattn.sampling.compare`), drawn beside these maps;
    ``numbers``: per word ``{"moved", "concentration", "base_concentration"}``, shown with them."""
    payload = maps_payload(maps, image, image_index)
    if not payload["words"]:
        raise ValueError("the prompt has no words to show (empty prompt); the HTML view draws word maps")
    if base is not None:
        payload["base"] = maps_payload(base[0], base[1], image_index)
        payload["numbers"] = numbers or {}
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")  # safe inside <script>
    versus = " (base model beside the LoRA)" if base is not None else ""
    heading = html.escape(title or f"crossattn maps: {payload['prompt'] or '(prompt unknown)'}{versus}")
    return PAGE.replace("%TITLE%", heading).replace("%DATA%", data)


def write_html(maps, path: str | Path, image=None, image_index: int = 0, title: str | None = None, **compared) -> Path:
    """Write :func:`maps_html` to ``path`` atomically (``compared``: its ``base`` and ``numbers``); returns the path."""
    from ..files import atomic_write_text

    return atomic_write_text(path, maps_html(maps, image, image_index, title, **compared))


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>%TITLE%</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:18px;margin:0 0 12px}
.controls{display:flex;gap:16px;flex-wrap:wrap;align-items:center;margin-bottom:12px}
label{font-size:13px}
canvas{image-rendering:pixelated;border:1px solid #ccc;background:#000}
#main,#base{width:320px;height:auto}
.pair{display:flex;gap:16px}
figure{margin:0;font-size:13px}
.thumbs{display:flex;gap:8px;flex-wrap:wrap;margin-top:12px}
.thumb{text-align:center;font-size:12px;cursor:pointer;min-width:104px}
.thumb canvas{width:96px;height:auto}
.thumb.on canvas{outline:3px solid #e66}
#info{font-size:13px;margin:6px 0}
.rowlabel{font-size:13px;font-weight:600;margin-top:12px}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
</style></head><body>
<h1>%TITLE%</h1>
<div class="controls">
<label>word <select id="word"></select></label>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<label>step <input type="range" id="step" min="0" value="0"> <span id="steplabel"></span></label>
<label><input type="checkbox" id="overlay" checked> over the image</label>
</div>
<div class="pair">
<figure id="basefig" hidden><figcaption>base model (LoRA off)</figcaption><canvas id="base"></canvas></figure>
<figure><figcaption id="maincap"></figcaption><canvas id="main"></canvas></figure>
</div>
<div id="info"></div>
<div id="numbers"></div>
<div class="rowlabel" id="baselabel" hidden>base model</div>
<div class="thumbs" id="basethumbs"></div>
<div class="rowlabel" id="tunedlabel" hidden>with the LoRA</div>
<div class="thumbs" id="thumbs"></div>
<script type="application/json" id="data">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function bytes(text) { const bin = atob(text), out = new Uint8Array(bin.length); for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i); return out; }
// One set of maps: the page's own (D), and with a base model D.base (same prompt, seed, layers, words).
function decoded(P) { return {P, codes: bytes(P.codes), scales: new Float32Array(bytes(P.scales).buffer), pixels: null}; }
const tuned = decoded(D), base = D.base ? decoded(D.base) : null;
const [H, W] = D.image_size;
const $ = (id) => document.getElementById(id);
function option(sel, value, text) { const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o); }
D.words.forEach((w, i) => option($("word"), i, w[0]));
option($("layer"), -1, "all layers (mean)");
D.layers.forEach((l, i) => option($("layer"), i, l.short + " (" + l.height + "x" + l.width + ")"));
const maxStep = D.per_step ? D.steps : 0;
$("step").max = maxStep; $("step").value = maxStep; $("step").disabled = !D.per_step;
function fillHeads() {
  const li = +$("layer").value, sel = $("head"), old = sel.value;
  const n = D.per_head ? (li < 0 ? Math.min(...D.layers.map((l) => l.heads)) : D.layers[li].heads) : 0;
  sel.innerHTML = ""; option(sel, -1, "mean of heads");
  for (let h = 0; h < n; h++) option(sel, h, "head " + h);
  sel.value = (old !== "" && +old < n) ? old : -1; sel.disabled = n === 0;
}
// One layer's map of the given tokens in set S: sum over tokens, mean over the chosen steps and heads. (h*w,)
function layerMap(S, l, tokens, head, step) {
  const n = l.height * l.width, out = new Float32Array(n);
  const steps = step < 0 ? [...Array(l.steps).keys()] : [step];
  const heads = head < 0 ? [...Array(l.heads).keys()] : [head];
  for (const s of steps) for (const h of heads) for (const k of tokens) {
    if (k >= l.keys) continue;
    const m = (s * l.heads + h) * l.keys + k, scale = S.scales[l.scale_offset + m] / 255, base = l.offset + m * n;
    for (let p = 0; p < n; p++) out[p] += S.codes[base + p] * scale;
  }
  const count = steps.length * heads.length;
  for (let p = 0; p < n; p++) out[p] /= count;
  return out;
}
// Bilinear resize, align_corners=False (as torch.nn.functional.interpolate). (H*W,)
function upsample(src, h, w) {
  const out = new Float32Array(H * W);
  const coord = (d, inn, outn) => { const s = Math.max((d + 0.5) * inn / outn - 0.5, 0); const i0 = Math.min(Math.floor(s), inn - 1); return [i0, Math.min(i0 + 1, inn - 1), s - i0]; };
  for (let y = 0; y < H; y++) { const [y0, y1, ly] = coord(y, h, H);
    for (let x = 0; x < W; x++) { const [x0, x1, lx] = coord(x, w, W);
      const top = src[y0 * w + x0] * (1 - lx) + src[y0 * w + x1] * lx, bot = src[y1 * w + x0] * (1 - lx) + src[y1 * w + x1] * lx;
      out[y * W + x] = top * (1 - ly) + bot * ly; } }
  return out;
}
// Word ``word``'s (H*W,) map in set S for a layer index (-1: mean of all), head (-1: mean), step (-1: mean).
function wordMap(S, word, li, head, step) {
  const entry = S.P.words.find((w) => w[0] === word), tokens = entry ? entry[1] : [];
  const chosen = li < 0 ? S.P.layers : [S.P.layers[li]], out = new Float32Array(H * W);
  for (const l of chosen) { const m = upsample(layerMap(S, l, tokens, head, step), l.height, l.width); for (let i = 0; i < out.length; i++) out[i] += m[i] / chosen.length; }
  return out;
}
window.crossattnMap = (word, layer, head, step) => Array.from(wordMap(tuned, word, layer, head, step));
if (base) window.crossattnBaseMap = (word, layer, head, step) => Array.from(wordMap(base, word, layer, head, step));
function jet(v) { const c = (x) => Math.max(0, Math.min(1, x)); return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))]; }
function draw(canvas, heat, S) {
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H), top = Math.max(...heat, 1e-8), pixels = S.pixels;
  const blend = $("overlay").checked && pixels ? 0.55 : 1;
  for (let i = 0; i < H * W; i++) { const c = jet(heat[i] / top);
    for (let ch = 0; ch < 3; ch++) { const under = pixels ? pixels[i * 4 + ch] / 255 : 0; img.data[i * 4 + ch] = Math.round(255 * ((1 - blend) * under + blend * c[ch])); }
    img.data[i * 4 + 3] = 255; }
  ctx.putImageData(img, 0, 0);
  return top;
}
const fixed = (t) => (t >= 0.005 ? t.toFixed(2) : t.toPrecision(2));
// How far the word's map moved from the base model's and how concentrated both are (means over everything).
function numbers(word) { const n = D.numbers && D.numbers[word]; return n ? " · moved " + n.moved.toFixed(3) + " bits · top-10% mass " + n.base_concentration.toFixed(2) + " → " + n.concentration.toFixed(2) : ""; }
function table() {
  if (!D.numbers) return;
  const t = document.createElement("table"), head = t.insertRow();
  for (const text of ["word", "moved from the base (JS, bits)", "top-10% mass, base", "top-10% mass, LoRA"]) { const th = document.createElement("th"); th.textContent = text; head.appendChild(th); }
  for (const [word, n] of Object.entries(D.numbers)) { const r = t.insertRow(); r.dataset.word = word;
    for (const v of [word, n.moved.toFixed(3), n.base_concentration.toFixed(2), n.concentration.toFixed(2)]) r.insertCell().textContent = v; }
  $("numbers").appendChild(t);
}
function thumbRow(row, S, wi, li, head, step, note) {
  row.innerHTML = "";
  D.words.forEach((w, i) => { const div = document.createElement("div"), c = document.createElement("canvas");
    div.className = "thumb" + (i === wi ? " on" : ""); div.dataset.word = w[0];
    const t = draw(c, wordMap(S, w[0], li, head, step), S); div.append(c, document.createElement("br"), w[0] + " (max " + fixed(t) + ")");
    if (base) div.append(document.createElement("br"), note(w[0]) || "\u00a0");  // both rows the same height
    div.onclick = () => { $("word").value = i; render(); }; row.appendChild(div); });
}
function settings() { const s = +$("step").value; return [+$("layer").value, +$("head").value, s >= maxStep ? -1 : s]; }
function render() {
  const [li, head, step] = settings(), wi = +$("word").value, word = D.words[wi][0];
  $("steplabel").textContent = step < 0 ? "mean over " + D.steps + " steps" : "step " + (step + 1) + " of " + D.steps;
  const top = draw($("main"), wordMap(tuned, word, li, head, step), tuned);
  let info = "'" + word + "' · " + (li < 0 ? "all layers" : D.layers[li].name) + " · " + (head < 0 ? "mean of heads" : "head " + head) + " · max " + top.toFixed(3);
  if (base) info += " · base max " + draw($("base"), wordMap(base, word, li, head, step), base).toFixed(3) + numbers(word) + " (all layers, steps, heads)";
  $("info").textContent = info;
  const moved = (w) => (D.numbers && D.numbers[w] ? "moved " + D.numbers[w].moved.toFixed(3) : "");
  thumbRow($("thumbs"), tuned, wi, li, head, step, moved);
  if (base) thumbRow($("basethumbs"), base, wi, li, head, step, () => "");
  document.body.dataset.rendered = [wi, li, head, step].join(",");
}
for (const id of ["word", "head", "step", "overlay"]) $(id).addEventListener("input", render);
$("layer").addEventListener("input", () => { fillHeads(); render(); });
fillHeads();
if (base) { for (const id of ["basefig", "baselabel", "tunedlabel"]) $(id).hidden = false; $("maincap").textContent = "with the LoRA"; table(); }
let waiting = 0;
for (const S of base ? [tuned, base] : [tuned]) if (S.P.image) { waiting++; const im = new Image(); im.onload = () => { const c = document.createElement("canvas"); c.width = W; c.height = H; const x = c.getContext("2d"); x.drawImage(im, 0, 0, W, H); S.pixels = x.getImageData(0, 0, W, H).data; if (--waiting === 0) render(); }; im.src = S.P.image; }
render();
</script></body></html>
"""
