// The kit's web UI: A1111's txt2img tab for the course's first tasks, as plain JavaScript.
//
// Every action is one request to the server's own API, the same a notebook sends with `requests`:
//   GET  /sdapi/v1/samplers, /schedulers, /sd-models, /options, /cmd-flags   fill the controls
//   POST /sdapi/v1/txt2img                                     Generate
//   GET  /sdapi/v1/progress (every 300 ms while generating)    progress bar and live preview
//   POST /sdapi/v1/interrupt                                   Interrupt
//   POST /sdapi/v1/options {"sd_model_checkpoint": title}      the model picker
//   GET  /sdapi/v1/loras, POST /sdapi/v1/refresh-loras         the Lora list (a click edits the prompt)
// With --api-auth the page asks for a user and password once and sends HTTP Basic auth. They live in
// the variable `login` below only: never in localStorage, a cookie or the address.
"use strict";

const API = "/sdapi/v1/";
const POLL_MS = 300;
const PLACEHOLDER_MODEL = /^offline-preview/;  // the preview engine's model (helpers/generation.py reads it so too)

let login = null;          // base64 of "user:password" once the user logged in, else null
let engineName = null;     // "preview" or "diffusers" (GET /cmd-flags of the kit's server)
let currentModel = "";     // the title of the loaded model (GET /options sd_model_checkpoint)
let busy = false;          // a generation or a model switch is running
let lastSeed = null;       // the real seed of the last result (info.seed)
let imageUrls = [];        // blob: URLs of the gallery's images, freed when the gallery is replaced

const $ = (id) => document.getElementById(id);

// ----- talking to the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail || "";  // the server's own words, e.g. "Incorrect username or password"
  }
}

function basicAuth(user, password) {
  // btoa takes bytes as a "binary string": encode as UTF-8 first, so that non-ASCII passwords work.
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
}

async function api(method, path, payload) {
  const headers = {};
  if (payload !== undefined) headers["Content-Type"] = "application/json";  // else a 422 (A1111's pitfall)
  if (login) headers["Authorization"] = `Basic ${login}`;
  let response;
  try {
    response = await fetch(API + path, {
      method, headers, cache: "no-store",
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
  } catch (error) {
    throw new ApiError(0, `${method} ${API}${path}: the server did not answer (${error.message}). ` +
      "Is it still running? Start it again with `make serve` or `python -m sdserver`, then reload this page.");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (ignored) { body = null; }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    throw new ApiError(response.status, describeError(method, path, response, body, text), detail);
  }
  return body;
}

// The server's own message, readable: A1111's {error, detail, errors} bodies and FastAPI's 422 list.
function describeError(method, path, response, body, text) {
  const where = `${method} ${API}${path} answered ${response.status} ${response.statusText || ""}`.trim();
  let message;
  if (body && Array.isArray(body.detail)) {  // 422 from validation: one line per wrong field
    message = body.detail.map((item) => {
      const field = (item.loc || []).filter((part) => part !== "body").join(".") || "request";
      const sent = item.input === undefined || typeof item.input === "object" ? "" : ` (sent: ${JSON.stringify(item.input)})`;
      return `• ${field}: ${item.msg}${sent}`;
    }).join("\n");
  } else if (body && typeof body.detail === "string" && body.detail) {
    message = body.detail;
  } else if (body && body.errors) {
    message = `${body.error || "Error"}: ${body.errors}`;
  } else if (body && body.error) {
    message = body.error;
  } else {
    message = (text || "").slice(0, 500) || "(no message)";
  }
  if (response.status === 401) {
    message += "\nThis server was started with --api-auth: log in (again) with the form below.";
  }
  return `${where}:\n${message}`;
}

// ----- messages -------------------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof ApiError ? error.message : `Error in the page: ${error}`;
  box.hidden = false;
  if (error instanceof ApiError && error.status === 401) askLogin(error.message);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// ----- login (--api-auth) ---------------------------------------------------------------------------

function showUI(shown) {
  $("ui").hidden = !shown;
  $("model-picker").hidden = !shown;
}

function askLogin(message) {
  login = null;
  showUI(false);
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  $("login-user").focus();
}

async function submitLogin(event) {
  event.preventDefault();
  login = basicAuth($("login-user").value, $("login-password").value);
  $("login-password").value = "";  // the encoded copy in `login` is the only one kept
  $("login-button").disabled = true;
  try {
    await loadServer();
    $("login").hidden = true;
    $("login-error").textContent = "";
  } catch (error) {
    login = null;
    if (error instanceof ApiError && error.status === 401) {
      $("login-error").textContent = `The server refused this login: ${error.detail || "401"}. Check the user and password.`;
      $("login-user").focus();
    } else {
      $("login-error").textContent = "";
      showError(error);
    }
  } finally {
    $("login-button").disabled = false;
  }
}

// ----- the server's lists: samplers, models, engine ---------------------------------------------------

async function loadServer() {
  const [samplers, schedulers, models, options, flags] = await Promise.all([
    api("GET", "samplers"), api("GET", "schedulers"), api("GET", "sd-models"), api("GET", "options"),
    api("GET", "cmd-flags"),
  ]);
  fillSelect($("sampler"), samplers.map((item) => item.name));
  fillSelect($("scheduler"), schedulers.map((item) => item.label));  // A1111's UI sends labels ("Karras")
  engineName = (flags && flags.engine) || null;
  fillModels(models, options.sd_model_checkpoint);
  fillLoras(await api("GET", "loras"));
  showUI(true);
  clearError();
  setBusy(false);
}

function fillSelect(select, names) {
  const chosen = select.value;  // kept when the list is read again (after a login)
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(chosen)) select.value = chosen;
}

function fillModels(models, loaded) {
  currentModel = loaded || (models[0] && models[0].title) || "";
  const select = $("model");
  const titles = models.map((item) => item.title);
  if (currentModel && !titles.includes(currentModel)) titles.unshift(currentModel);
  select.replaceChildren(...titles.map((title) => new Option(title, title)));
  select.value = currentModel;
  updatePlaceholderBanner();
}

function isPlaceholder() {
  return engineName === "preview" || PLACEHOLDER_MODEL.test(currentModel);
}

function updatePlaceholderBanner() {
  const placeholder = isPlaceholder();
  $("placeholder-banner").hidden = !placeholder;
  const label = $("engine");
  label.textContent = engineName ? `engine: ${engineName}${placeholder ? " (placeholders)" : ""}` : "";
  label.classList.toggle("placeholder", placeholder);
}

// ----- the Lora list: as A1111's Lora tab, a click adds <lora:name:1> to the prompt -------------------

function fillLoras(loras) {
  const list = $("lora-list");
  list.replaceChildren(...loras.map((item) => {
    const button = Object.assign(document.createElement("button"), { type: "button", className: "lora",
      textContent: item.name, title: (item.metadata && item.metadata.description) || item.path });
    button.dataset.name = item.name;
    button.addEventListener("click", () => toggleLora(item.name));
    return button;
  }));
  $("lora-empty").hidden = loras.length > 0;
  $("lora-preview-note").hidden = !isPlaceholder() || loras.length === 0;
}

function loraTag(name) {  // <lora:name> or <lora:name:weight...> for this name
  return new RegExp(`\\s*<lora:${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(:[^>]*)?>`, "g");
}

function toggleLora(name) {
  const prompt = $("prompt");
  const tag = loraTag(name);
  if (tag.test(prompt.value)) {
    prompt.value = prompt.value.replace(loraTag(name), "");
  } else {
    prompt.value = `${prompt.value.replace(/\s+$/, "")}${prompt.value.trim() ? " " : ""}<lora:${name}:1>`;
  }
  prompt.focus();
}

async function refreshLoras() {
  clearError();
  try {
    await api("POST", "refresh-loras");
    fillLoras(await api("GET", "loras"));
  } catch (error) {
    showError(error);
  }
}

async function refreshModels() {
  clearError();
  try {
    const [models, options] = await Promise.all([api("GET", "sd-models"), api("GET", "options")]);
    fillModels(models, options.sd_model_checkpoint);
  } catch (error) {
    showError(error);
  }
}

async function switchModel() {
  const wanted = $("model").value;
  if (wanted === currentModel) return;
  clearError();
  setBusy(true);
  notice(`Loading the model ${wanted}... (the server finishes a running job first; a large model takes a while)`);
  try {
    await api("POST", "options", { sd_model_checkpoint: wanted });
    const options = await api("GET", "options");
    currentModel = options.sd_model_checkpoint || wanted;
    notice(`Model loaded: ${currentModel}`);
  } catch (error) {
    notice("");
    showError(error);
  } finally {
    $("model").value = currentModel;  // back to the loaded one if the switch failed
    updatePlaceholderBanner();
    setBusy(false);
  }
}

// ----- the settings -----------------------------------------------------------------------------------

// Each slider drives its number box and back; the number box is what is sent.
function linkSliders() {
  for (const slider of document.querySelectorAll("input[type=range][data-for]")) {
    const box = $(slider.dataset.for);
    slider.addEventListener("input", () => { box.value = slider.value; });
    box.addEventListener("input", () => { if (box.value !== "") slider.value = box.value; });
  }
}

// A number box's value: a number, null when empty, or the text itself, so that the server says what is wrong.
function numberOf(id) {
  const text = $(id).value.trim();
  if (text === "") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

function payload() {
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    sampler_name: $("sampler").value,
    scheduler: $("scheduler").value,
    steps: numberOf("steps"),
    cfg_scale: numberOf("cfg-scale"),
    width: numberOf("width"),
    height: numberOf("height"),
    seed: numberOf("seed"),
    batch_size: numberOf("batch-size"),
    n_iter: numberOf("n-iter"),
  };
}

function setBusy(value) {
  busy = value;
  $("generate").disabled = value;
  $("interrupt").hidden = !(value && polling);  // only while a generation runs
  $("interrupt").disabled = false;
  $("model").disabled = value;
  $("refresh-models").disabled = value;
  for (const id of ["gallery", "result-summary"]) $(id).classList.toggle("previous", Boolean(value && polling));
}

// ----- generate, progress, interrupt -------------------------------------------------------------------

let polling = null;  // {stop: bool, last: the last busy /progress answer, interrupted: bool}

async function generate() {
  if (busy) return;
  clearError();
  notice("");
  const request = payload();
  const poll = { stop: false, last: null, interrupted: false };
  polling = poll;
  setBusy(true);
  showProgress(0, "Waiting for the server...");
  const started = performance.now();
  pollProgress(poll);
  try {
    const reply = await api("POST", "txt2img", request);
    const info = typeof reply.info === "string" ? JSON.parse(reply.info) : reply.info;
    showResults(reply.images || [], info || {}, poll, (performance.now() - started) / 1000);
  } catch (error) {
    showError(error);
  } finally {
    poll.stop = true;
    polling = null;
    $("progress").hidden = true;
    $("live").hidden = true;
    setBusy(false);
  }
}

async function pollProgress(poll) {
  while (!poll.stop) {
    try {
      const answer = await api("GET", "progress?skip_current_image=false");
      if (poll.stop) break;
      const state = answer.state || {};
      if (state.job_count > 0) {
        poll.last = answer;
        const steps = state.sampling_steps ? `step ${state.sampling_step}/${state.sampling_steps}` : "starting";
        const batch = state.job_count > 1 ? ` · batch ${state.job_no + 1}/${state.job_count}` : "";
        const eta = answer.eta_relative > 0 ? ` · ETA ${Math.ceil(answer.eta_relative)} s` : "";
        showProgress(answer.progress, `${Math.round(answer.progress * 100)}% · ${steps}${batch}${eta}`);
        if (answer.current_image) {
          $("live-image").src = `data:image/png;base64,${answer.current_image}`;
          $("live").hidden = false;
        }
      }
    } catch (error) {
      if (error.status === 401) { showError(error); break; }
      // A lost /progress answer is not worth an error box: the txt2img request reports real failures.
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function showProgress(fraction, text) {
  const percent = Math.max(0, Math.min(100, fraction * 100));
  $("progress").hidden = false;
  $("progress-fill").style.width = `${percent}%`;
  $("progress-text").textContent = text;
  $("progress").querySelector(".bar").setAttribute("aria-valuenow", String(Math.round(percent)));
}

async function interrupt() {
  if (polling) polling.interrupted = true;
  $("interrupt").disabled = true;
  showProgress(polling && polling.last ? polling.last.progress : 0, "Interrupting...");
  try {
    await api("POST", "interrupt", {});
  } catch (error) {
    showError(error);
  }
}

// ----- results -------------------------------------------------------------------------------------------

function pngBlob(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}

function showResults(images, info, poll, seconds) {
  for (const url of imageUrls) URL.revokeObjectURL(url);
  imageUrls = [];
  const placeholder = PLACEHOLDER_MODEL.test(String(info.sd_model_name || ""));
  const infotexts = info.infotexts || [];
  const seeds = info.all_seeds || [];
  lastSeed = info.seed ?? null;
  $("reuse-seed").disabled = lastSeed === null;

  const gallery = $("gallery");
  gallery.replaceChildren();
  images.forEach((image, index) => {
    const url = URL.createObjectURL(pngBlob(image));  // the PNG as sent: its infotext chunk stays inside
    imageUrls.push(url);
    const card = document.createElement("figure");
    card.className = "card";
    const img = document.createElement("img");
    img.src = url;
    img.alt = placeholder ? `Placeholder image ${index + 1}` : `Generated image ${index + 1}`;
    card.append(img);
    if (placeholder) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "PLACEHOLDER";
      card.append(badge);
    }
    const links = document.createElement("div");
    links.className = "links";
    const seed = seeds[index] ?? info.seed;
    const save = Object.assign(document.createElement("a"), {
      href: url, download: `${String(index + 1).padStart(5, "0")}-${seed}.png`, textContent: "Save PNG" });
    const open = Object.assign(document.createElement("a"), { href: url, target: "_blank", textContent: "Open full size" });
    links.append(save, open);
    const text = document.createElement("pre");
    text.className = "infotext";
    text.textContent = infotexts[index] || "(no infotext in the answer)";
    card.append(links, text);
    gallery.append(card);
  });

  const summary = $("result-summary");
  const state = poll.last && poll.last.state;
  const seedText = seeds.length > 1 ? `seeds ${seeds[0]}–${seeds[seeds.length - 1]}` : `seed ${info.seed}`;
  let text = `${images.length} image${images.length === 1 ? "" : "s"} in ${seconds.toFixed(1)} s · ${seedText}`;
  if (placeholder) text += " · placeholders from the preview engine, not a real model";
  if (info.comments) text += ` · ${info.comments} (made without it)`;  // the kit's server: unknown LoRA
  summary.className = "summary";
  if (poll.interrupted) {
    const where = state && state.sampling_steps ? ` at about step ${state.sampling_step}/${state.sampling_steps}` : "";
    text = `Interrupted${where}: the server returned the images as they were (partly done). ` + text;
    summary.classList.add("interrupted");
  }
  summary.textContent = text;
  summary.hidden = false;
}

// ----- start ------------------------------------------------------------------------------------------------

function start() {
  linkSliders();
  $("generate").addEventListener("click", generate);
  $("interrupt").addEventListener("click", interrupt);
  $("model").addEventListener("change", switchModel);
  $("refresh-models").addEventListener("click", refreshModels);
  $("refresh-loras").addEventListener("click", refreshLoras);
  $("random-seed").addEventListener("click", () => { $("seed").value = "-1"; });
  $("reuse-seed").addEventListener("click", () => { if (lastSeed !== null) $("seed").value = String(lastSeed); });
  $("login").addEventListener("submit", submitLogin);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("ui").hidden) {
      event.preventDefault();
      generate();
    }
  });
  loadServer().catch((error) => {
    if (error instanceof ApiError && error.status === 401) askLogin("");
    else showError(error);
  });
}

start();
