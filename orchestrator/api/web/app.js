// tritonrag's page: plain DOM and fetch, no framework. Every call goes to the same /v1 API
// the CLI uses; when API keys are on, the key lives in sessionStorage (this tab only).

const $ = (id) => document.getElementById(id);
const KEY = "tritonrag-api-key";
const UPLOADS_AT_ONCE = 2; // one file per request, so a rejected file gets its own message
const WATCHED_AT_ONCE = 4; // job event streams: browsers allow ~6 connections per origin
// conversation: this collection's earlier questions and answers, sent with a follow-up.
const state = { collection: null, uploads: [], watching: 0, waiting: [], conversation: [] };
const HISTORY_TURNS = 6;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error?.message || message;
  } catch {
    // not the API's JSON error body (a proxy's page): keep the status line
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    message = `Busy: ${message}${wait ? ` (try again in ${wait} s)` : ""}`;
  }
  return new ApiError(response.status, message);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    askForKey(true);
    throw await failure(response);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Server-sent events over fetch (EventSource cannot POST or send an Authorization header).
async function events(path, options, onEvent, signal) {
  const response = await fetch(path, { ...options, headers: headers(options.headers), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function say(message, error = false) {
  $("status").textContent = message;
  $("status").className = error ? "error" : "";
}

const enc = encodeURIComponent;
const base = () => `/v1/collections/${enc(state.collection)}`;
const size = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`);
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");

// --- API key ---------------------------------------------------------------------------
function askForKey(rejected) {
  if ($("key-dialog").open) return;
  $("key-error").textContent = rejected && sessionStorage.getItem(KEY) ? "That key was refused." : "";
  $("key-dialog").showModal();
}

$("key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY, $("key-input").value.trim());
  $("key-input").value = "";
  loadCollections();
});

// --- collections -----------------------------------------------------------------------
async function loadCollections() {
  let names;
  try {
    names = (await api("/v1/collections")).data;
  } catch (error) {
    say(error.message, true);
    return;
  }
  if (state.collection && !names.includes(state.collection)) names.push(state.collection);
  $("collections").replaceChildren(
    ...names.sort().map((name) =>
      el("li", {}, el("button", {
        type: "button", textContent: name,
        ariaCurrent: name === state.collection ? "true" : null,
        onclick: () => select(name),
      })),
    ),
  );
}

function select(name) {
  state.collection = name;
  state.conversation = [];
  $("main").hidden = false;
  $("collection-title").textContent = name;
  $("collection-model").textContent = "";
  $("hits").replaceChildren();
  $("answer").replaceChildren();
  $("citations").replaceChildren();
  $("chunk").hidden = true;
  loadCollections();
  loadDocuments();
}

$("new-collection").addEventListener("submit", (event) => {
  event.preventDefault();
  select($("new-name").value);
  $("new-name").value = "";
  showTab("tab-documents");
  say(`Collection ${state.collection}: upload files to create it.`);
});

$("drop-collection").addEventListener("click", async () => {
  const name = state.collection;
  if (!confirm(`Drop collection "${name}" and all its documents? This cannot be undone.`)) return;
  try {
    await api(`/v1/collections/${enc(name)}`, { method: "DELETE" });
    state.collection = null;
    $("main").hidden = true;
    say(`Dropped ${name}.`);
  } catch (error) {
    say(error.message, true);
  }
  loadCollections();
});

// --- tabs (arrow keys move between them, as in the ARIA tabs pattern) -------------------
const tabs = ["tab-documents", "tab-search", "tab-ask"];
function showTab(id) {
  for (const tab of tabs) {
    const selected = tab === id;
    $(tab).setAttribute("aria-selected", String(selected));
    $(tab).tabIndex = selected ? 0 : -1;
    $($(tab).getAttribute("aria-controls")).hidden = !selected;
  }
  $(id).focus();
}
for (const tab of tabs) {
  $(tab).addEventListener("click", () => showTab(tab));
  $(tab).addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) showTab(tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length]);
  });
}

// --- documents -------------------------------------------------------------------------
async function loadDocuments() {
  if (!state.collection) return;
  let page;
  try {
    page = await api(`${base()}/documents?limit=1000`);
  } catch (error) {
    if (error.status === 404) page = { data: [] };
    else return say(error.message, true);
  }
  const rows = page.data.map((doc) =>
    el("tr", {},
      el("td", { textContent: doc.document_id }),
      el("td", {},
        el("span", { className: `state ${doc.state}`, textContent: doc.state }),
        doc.reason ? el("div", { className: "reason", textContent: doc.reason }) : null),
      el("td", { textContent: doc.chunks ?? "" }),
      el("td", { textContent: doc.bytes === undefined ? "" : size(doc.bytes) }),
      el("td", { textContent: when(doc.updated_at) }),
      el("td", {}, el("button", {
        type: "button", className: "danger", textContent: "Delete",
        ariaLabel: `Delete ${doc.document_id}`,
        onclick: () => deleteDocument(doc.document_id),
      })),
    ),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 6, textContent: "No documents yet." })));
  $("documents").tBodies[0].replaceChildren(...rows);
  loadModel();
}

// The embedding model that made the collection's vectors (a search or upload with another
// is refused), and whether every search mode works yet.
async function loadModel() {
  let info = null;
  try {
    info = await api(base());
  } catch (error) {
    if (error.status !== 404) return say(error.message, true);
  }
  const model = info?.model;
  const rebuild = info?.rebuild;
  const moving = rebuild?.state === "running"
    ? ` · re-indexing into ${rebuild.model}: ${rebuild.documents_copied}/${rebuild.documents_total} documents`
    : rebuild?.state === "failed" ? ` · re-index into ${rebuild.model} failed: ${rebuild.reason}` : "";
  $("collection-model").textContent = model
    ? `${info.points} vectors of ${model.name} (${model.dim} dims, ${model.variants.join(", ")})` +
      (info.reindexing && !moving ? " · re-indexing" : "") + moving +
      (info.sparse ? "" : " · dense search only")
    : "";
}

async function deleteDocument(id) {
  if (!confirm(`Delete "${id}"? Its chunks leave search at once.`)) return;
  try {
    await api(`${base()}/documents/${id.split("/").map(enc).join("/")}`, { method: "DELETE" });
    say(`Deleted ${id}.`);
  } catch (error) {
    say(error.message, true);
  }
  loadDocuments();
}

$("refresh").addEventListener("click", loadDocuments);

// --- uploads ---------------------------------------------------------------------------
function addFiles(files) {
  if (!state.collection || !files.length) return;
  $("uploads").hidden = false;
  const body = $("uploads").tBodies[0];
  for (const file of files) {
    const row = {
      file, collection: state.collection,
      cells: Object.fromEntries(["state", "chunks", "speed", "eta", "message"].map((k) => [k, el("td")])),
    };
    row.cells.state.textContent = "waiting";
    body.append(el("tr", {}, el("td", { textContent: file.webkitRelativePath || file.name }),
      ...Object.values(row.cells)));
    state.uploads.push(row);
  }
  for (let i = 0; i < UPLOADS_AT_ONCE; i++) uploadNext();
}

let uploading = 0;
async function uploadNext() {
  if (uploading >= UPLOADS_AT_ONCE) return;
  const row = state.uploads.shift();
  if (!row) return;
  uploading++;
  row.cells.state.textContent = "uploading";
  const form = new FormData();
  form.append("files", row.file, row.file.name);
  try {
    const sent = await api(`/v1/collections/${enc(row.collection)}/documents`, { method: "POST", body: form });
    row.job = sent.documents[0].job_id;
    row.cells.state.textContent = "queued";
    say("");
    watch(row);
    if (row.collection === state.collection) loadCollections();
  } catch (error) {
    row.cells.state.textContent = "rejected";
    row.cells.state.className = "state failed";
    row.cells.message.textContent = error.message;
  } finally {
    uploading--;
    uploadNext();
  }
}

function watch(row) {
  if (state.watching >= WATCHED_AT_ONCE) {
    state.waiting.push(row);
    return;
  }
  state.watching++;
  events(`/v1/jobs/${enc(row.job)}/events`, {}, (_, job) => show(row, job))
    .catch((error) => { row.cells.message.textContent = error.message; })
    .finally(() => {
      state.watching--;
      const next = state.waiting.shift();
      if (next) watch(next);
      if (row.collection === state.collection && !state.watching) loadDocuments();
    });
}

function show(row, job) {
  const c = row.cells;
  c.state.textContent = job.state;
  c.state.className = `state ${job.state}`;
  c.chunks.textContent = job.chunks_total ? `${job.chunks_embedded + job.chunks_reused} / ${job.chunks_total}` : "";
  c.speed.textContent = job.chunks_per_s ? `${job.chunks_per_s} chunks/s` : "";
  c.eta.textContent = job.eta_s ? `${Math.ceil(job.eta_s)} s` : "";
  c.message.textContent = job.reason || "";
}

// Folders dropped in: walk them (webkitGetAsEntry works in Chromium and Firefox).
async function walk(entry) {
  if (entry.isFile) return [await new Promise((ok, fail) => entry.file(ok, fail))];
  const reader = entry.createReader();
  const files = [];
  for (;;) {
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) return files;
    for (const child of batch) files.push(...(await walk(child)));
  }
}

const zone = $("dropzone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", async (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  const entries = [...event.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const files = entries.length ? (await Promise.all(entries.map(walk))).flat() : [...event.dataTransfer.files];
  addFiles(files);
});
zone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("file-input").click();
  }
});
for (const id of ["file-input", "folder-input"]) {
  $(id).addEventListener("change", (event) => {
    addFiles([...event.target.files]);
    event.target.value = "";
  });
}

// --- search ----------------------------------------------------------------------------
function filters(text) {
  const out = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new ApiError(0, `filter "${part}" is not key=value`);
    const value = part.slice(at + 1).trim();
    out[part.slice(0, at).trim()] = /^-?\d+(\.\d+)?$/.test(value) ? Number(value)
      : value === "true" || value === "false" ? value === "true" : value;
  }
  return out;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const hits = $("hits");
  try {
    const body = {
      query: $("search-query").value,
      top_k: Number($("search-k").value) || 5,
      filters: filters($("search-filters").value),
    };
    const found = await api(`${base()}/search`, {
      method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    });
    hits.replaceChildren(...found.data.map((hit) =>
      el("li", { className: "hit" },
        el("div", { className: "meta" },
          el("strong", { textContent: hit.filename || hit.document_id }),
          ` · chunk ${hit.chunk_index} · score ${hit.score.toFixed(3)}`),
        el("p", { textContent: hit.text }))));
    if (!found.data.length) hits.replaceChildren(el("li", { textContent: "No hits." }));
  } catch (error) {
    hits.replaceChildren(el("li", { className: "error", textContent: error.message }));
  }
});

// --- ask -------------------------------------------------------------------------------
let asking = null;
$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  asking?.abort();
  asking = new AbortController();
  const answer = el("p", { className: "streaming", id: "answer-text" });
  $("answer").replaceChildren(answer);
  $("citations").replaceChildren();
  $("sources-title").hidden = true;
  $("chunk").hidden = true;
  const question = $("question").value;
  const history = state.conversation.slice(-HISTORY_TURNS);
  const body = JSON.stringify({ question, history, stream: true });
  let grounding = null;
  let final = null;
  try {
    await events(`${base()}/ask`, {
      method: "POST", body, headers: { "Content-Type": "application/json" },
    }, (name, data) => {
      if (name === "token") answer.textContent += data.text;
      else if (name === "grounding") grounding = data;
      else if (name === "answer") answer.textContent = data.answer; // auto fell back to a quote
      else if (name === "citations") showCitations(data);
      else if (name === "done") {
        final = data;
        if (data.covered === false) {
          answer.className = "uncovered";
          answer.prepend(el("strong", { textContent: "Not in the documents: " }));
        }
      } else if (name === "error") throw new ApiError(data.code, data.message);
    }, asking.signal);
    answer.classList.remove("streaming");
    if (final?.covered && grounding) showGrounding(answer, grounding, final);
    state.conversation.push({ role: "user", content: question },
      { role: "assistant", content: final?.answer ?? answer.textContent });
    $("ask-reset").hidden = false;
  } catch (error) {
    if (error.name !== "AbortError") $("answer").append(el("p", { className: "error", role: "alert", textContent: error.message }));
  }
});

$("ask-reset").addEventListener("click", () => {
  state.conversation = [];
  $("ask-reset").hidden = true;
  $("answer").replaceChildren();
  $("citations").replaceChildren();
  $("sources-title").hidden = true;
  say("New conversation: the next question stands alone.");
});

// Each sentence marked supported (with the sources that say it) or not; colour is never the
// only cue: every sentence carries a text badge too.
function sentences(grounding) {
  return grounding.map((s) => el("span", {
    className: s.supported ? "supported" : "unsupported",
    title: s.supported ? `Supported by source ${s.sources.join(", ")}`
      : s.missing.length ? `Not in the sources: ${s.missing.join(", ")}` : "Not supported by the sources",
  }, s.text, el("small", { className: "badge", textContent: s.supported ? ` ✓ [${s.sources.join(", ")}]` : " ✗ unsupported" }), " "));
}

function showGrounding(answer, { grounding, supported }, final) {
  const summary = (n) => `${n} of ${grounding.length} sentence${grounding.length === 1 ? "" : "s"} supported by the sources.`;
  if (final.generated != null) { // auto fell back: the quote is the answer, the generated text stays visible
    answer.replaceChildren(final.answer);
    answer.after(el("p", { className: "grounding-summary fallback", role: "note",
      textContent: "No sentence of the generated answer is supported by the sources: the best passage is quoted instead." }),
    el("details", { className: "generated" }, el("summary", { textContent: "The generated answer (unsupported)" }),
      el("p", {}, ...sentences(grounding))));
    return;
  }
  if (!grounding.length) return;
  answer.replaceChildren(...sentences(grounding));
  const held = Math.round((supported ?? 0) * grounding.length);
  answer.after(el("p", { className: "grounding-summary", textContent: final.answer_mode === "quote"
    ? "Quoted from the sources." : summary(held) }));
}

function showCitations({ citations, sources }) {
  const cited = new Set(citations.map((c) => c.number));
  $("sources-title").hidden = !sources.length;
  $("citations").replaceChildren(...sources.map((source) =>
    el("li", {}, el("button", {
      type: "button", className: cited.has(source.number) ? "cited" : "",
      textContent: `[${source.number}] ${source.filename || source.document_id}, chunk ${source.chunk_index}`,
      onclick: () => openChunk(source),
    }))));
}

function openChunk(source) {
  $("chunk").hidden = false;
  $("chunk-title").textContent = `[${source.number}] ${source.document_id} · chunk ${source.chunk_index}`;
  $("chunk-text").textContent = source.text ?? source.snippet;
  $("chunk").focus?.();
}

loadCollections();
