"""The try-it page at ``GET /``: one HTML file (no Gradio) that calls the deployment's own API. Pick a model, type a
prompt, see the output, rate it (thumbs up or down, which ``POST /v1/feedback`` records). Every value from the
deployment is escaped into the page and every output is put in as text, never as HTML. A key field lets people
on another machine call it (the key stays in the page, sent as a Bearer header)."""

from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Deployment #__ID__ · Gen Studio</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1f2937}
label{display:block;margin:.6rem 0 .2rem;font-weight:600}
textarea,select,input{font:inherit;padding:.35rem;box-sizing:border-box}
textarea{width:100%;min-height:5rem}
.row{display:flex;gap:1rem;flex-wrap:wrap}.row label{font-weight:400}
#output{white-space:pre-wrap;border:1px solid #d1d5db;border-radius:6px;padding:.8rem;min-height:3rem;margin-top:1rem}
#media img{max-width:100%;image-rendering:pixelated;min-width:128px}
button{font:inherit;padding:.4rem .9rem;margin-top:.8rem;cursor:pointer}
#status{color:#6b7280;margin-left:.6rem}
</style></head><body>
<h1>Deployment #__ID__</h1>
<p>Try the served models here; other tools call the same OpenAI-compatible API (<code>/v1/...</code>).</p>
<label for="model">Model</label><select id="model">__OPTIONS__</select>
<label for="prompt">Prompt</label><textarea id="prompt"></textarea>
<div class="row">
<label>max tokens <input id="max_tokens" type="number" min="1" max="4096" value="64"></label>
<label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></label>
<label>seed <input id="seed" type="number" min="0" placeholder="random"></label>
<label>API key <input id="key" type="password" placeholder="not needed on this machine" autocomplete="off"></label>
</div>
<button id="go">Generate</button><span id="status" role="status"></span>
<div id="output" aria-live="polite"></div><div id="media"></div>
<div id="rate" hidden><button id="up" aria-label="good">&#128077;</button>
<button id="down" aria-label="bad">&#128078;</button>
<input id="comment" placeholder="a comment (optional)" maxlength="4000"></div>
<script>
const MODALITY = __MODALITY__;
const $ = (id) => document.getElementById(id);
let last = null;
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
async function call(path, body) {
  const response = await fetch(path, {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (e) {}
    throw new Error(message);
  }
  return response;
}
$("go").onclick = async () => {
  $("status").textContent = "generating..."; $("output").textContent = ""; $("media").replaceChildren();
  $("rate").hidden = true;
  const model = $("model").value, prompt = $("prompt").value;
  const seed = $("seed").value === "" ? undefined : Number($("seed").value);
  try {
    if (MODALITY === "text") {
      const data = await (await call("/v1/chat/completions", {model, seed, messages: [{role: "user", content: prompt}],
        max_tokens: Number($("max_tokens").value), temperature: Number($("temperature").value)})).json();
      last = data.id; $("output").textContent = data.choices[0].message.content;
    } else if (MODALITY === "image") {
      const data = await (await call("/v1/images/generations", {model, prompt, seed})).json();
      last = data.id;
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + data.data[0].b64_json; img.alt = prompt;
      $("media").append(img);
    } else {
      const response = await call("/v1/audio/speech", {model, input: prompt, seed, response_format: "wav"});
      last = response.headers.get("X-Request-Id");
      const audio = document.createElement("audio");
      audio.controls = true; audio.src = URL.createObjectURL(await response.blob());
      $("media").append(audio);
    }
    $("status").textContent = ""; $("rate").hidden = false;
  } catch (error) { $("status").textContent = "failed: " + error.message; }
};
async function rate(rating) {
  try {
    await call("/v1/feedback", {id: last, rating, comment: $("comment").value || undefined});
    $("status").textContent = "thanks: rated " + rating;
  } catch (error) { $("status").textContent = "rating failed: " + error.message; }
}
$("up").onclick = () => rate("up"); $("down").onclick = () => rate("down");
</script></body></html>
"""


def try_it_page(deployment_id: int, names: list[str], modality: str) -> str:
    options = "".join(f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in names)
    script_value = json.dumps(modality).replace("<", "\\u003c")  # nothing can close the script element
    return (PAGE.replace("__ID__", str(int(deployment_id))).replace("__OPTIONS__", options)
            .replace("__MODALITY__", script_value))
