// newsrec page: calls the service's /v1 API on the same origin; no library, no network beyond it.
"use strict";

const state = {
  info: null,
  history: [],        // clicked news IDs, oldest first
  cards: new Map(),   // news ID -> card (title, category, date)
  userId: null,       // a user of --data, when chosen
  impression: null,   // that user's latest impression (candidates, clicked)
  strict: true,       // pasted IDs: unknown ones are an error; a dataset user's: skipped and listed
  runLoaded: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// The API's 4xx reason as one line: a string, or the 422 list [{loc, msg, ctx}].
function reason(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => {
      const where = (e.loc || []).filter((p) => p !== "body").join(".");
      const why = e.ctx && typeof e.ctx.error === "string" ? `${e.msg}: ${e.ctx.error}` : e.msg;
      return where ? `${where}: ${why}` : why;
    }).join("; ");
  }
  return `request failed (HTTP ${status})`;
}

class ApiError extends Error {}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError(`the service did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!response.ok) {
    throw new ApiError(`${response.status}: ${reason(data && data.detail !== undefined ? data.detail : text, response.status)}`);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Runs an action; any failure lands in the visible error box, never only in the console.
// Returns whether the action succeeded.
async function guarded(action) {
  clearError();
  try {
    await action();
    return true;
  } catch (e) {
    showError(e instanceof ApiError ? e.message : `unexpected error: ${e.message}`);
    return false;
  }
}

// ------------------------------------------------------------------ system line and tabs

async function loadInfo() {
  const info = await api("/v1/info");
  state.info = info;
  const model = info.model;
  const parts = [
    `model ${info.model_version} (${info.backend})`,
    `${info.news.toLocaleString("en")} servable news`,
    model ? `${model.modalities.join(" + ")} fused by ${model.fusion}, ${model.user_encoder} user encoder, ${model.scoring} scoring` : null,
    info.data ? `data ${info.data.path}: ${info.data.users.toLocaleString("en")} users, ${info.data.impressions.toLocaleString("en")} impressions` : null,
  ];
  $("system").textContent = parts.filter(Boolean).join(" · ");
  const examples = info.example_ids || [];
  if (examples.length) {
    $("history-ids").placeholder = examples.slice(0, 2).join(" ");
    $("candidate-ids").placeholder = examples.join(" ");
  }
  if (!info.data) {
    $("data-note").textContent = info.data_error
      ? `No users: ${info.data_error}`
      : "No dataset loaded: start the server with --data MIND_FOLDER to choose users.";
    for (const id of ["user-query", "random-user"]) $(id).disabled = true;
    document.querySelector("#user-form button[type=submit]").disabled = true;
  }
  if (info.explain_error) $("explain-note").textContent = `Reasons unavailable: ${info.explain_error}`;
}

function route() {
  const view = location.hash === "#run" ? "run" : "recommend";
  $("view-recommend").hidden = view !== "recommend";
  $("view-run").hidden = view !== "run";
  $("tab-recommend").setAttribute("aria-current", view === "recommend" ? "page" : "false");
  $("tab-run").setAttribute("aria-current", view === "run" ? "page" : "false");
  if (view === "run" && !state.runLoaded) {
    state.runLoaded = true;
    guarded(loadRun);
  }
}

// ------------------------------------------------------------------ history

async function fetchCards(ids) {
  const missing = ids.filter((id) => !state.cards.has(id));
  if (missing.length) {
    const found = await api("/v1/news/lookup", { ids: missing });
    for (const card of found.news) state.cards.set(card.news_id, card);
  }
}

function cardMeta(card) {
  const bits = [card.category + (card.subcategory ? ` / ${card.subcategory}` : "")];
  if (card.date) bits.push(`${card.date_kind} ${card.date}`);
  if (card.servable === false) bits.push("not servable");
  return bits.join(" · ");
}

function renderHistory() {
  const list = $("history-cards");
  list.replaceChildren();
  state.history.forEach((id, i) => {
    const card = state.cards.get(id);
    const remove = el("button", { type: "button", class: "link", text: "Remove" });
    remove.setAttribute("aria-label", `Remove ${id} from the history`);
    remove.addEventListener("click", () => {
      state.history.splice(i, 1);
      renderHistory();
    });
    list.append(el("li", { class: "card", "data-news-id": id },
      el("p", { class: "title", text: card ? card.title : id }),
      el("p", { class: "meta", text: card ? `${id} · ${cardMeta(card)}` : `${id} · unknown to the service` }),
      remove));
  });
  $("history-count").textContent = `(${state.history.length} clicks)`;
  $("history-empty").hidden = state.history.length > 0;
  list.hidden = state.history.length === 0;  // no empty bordered strip
}

async function setHistory(ids, { strict }) {
  state.history = ids;
  state.strict = strict;
  await fetchCards(ids);
  renderHistory();
}

async function chooseUser(userId, detail) {
  const user = detail || await api(`/v1/users/${encodeURIComponent(userId)}`);
  state.userId = user.user_id;
  state.impression = user.impression_list.length ? user.impression_list[0] : null;
  $("user-query").value = user.user_id;
  $("user-matches").replaceChildren();
  const source = $("source-impression");
  source.disabled = !state.impression;
  if (state.impression) {
    const imp = state.impression;
    $("impression-note").textContent =
      `${user.user_id}'s latest impression #${imp.impression_id} (${imp.split}, ${imp.time}): ` +
      `${imp.candidates.length} candidates, ${imp.labeled ? `${imp.clicked.length} clicked` : "unlabelled"}. ` +
      `Recommended news the user clicked there are marked.`;
  } else {
    $("impression-note").textContent = `${user.user_id} has no impression.`;
    if (source.checked) document.querySelector("input[name=source][value=all]").checked = true;
  }
  await setHistory(user.history_ids, { strict: false });
}

async function findUsers(event) {
  event.preventDefault();
  await guarded(async () => {
    const q = $("user-query").value.trim();
    const found = await api(`/v1/users?q=${encodeURIComponent(q)}&limit=10`);
    const list = $("user-matches");
    list.replaceChildren();
    if (!found.users.length) {
      list.append(el("li", { class: "muted", text: `No user ID contains "${q}".` }));
      return;
    }
    if (found.users.length === 1 || found.users[0].user_id === q) {
      await chooseUser(found.users[0].user_id);
      return;
    }
    for (const u of found.users) {
      const b = el("button", { type: "button", class: "link", text: `${u.user_id} (${u.history} clicks, ${u.impressions} impressions)` });
      b.addEventListener("click", () => guarded(() => chooseUser(u.user_id)));
      list.append(el("li", {}, b));
    }
  });
}

async function searchNews(event) {
  event.preventDefault();
  await guarded(async () => {
    const q = $("news-query").value.trim();
    const found = await api(`/v1/search?q=${encodeURIComponent(q)}&limit=15`);
    const list = $("search-results");
    list.replaceChildren(el("li", { class: "muted", text: `${found.total.toLocaleString("en")} titles match` }));
    for (const card of found.news) {
      state.cards.set(card.news_id, card);
      const b = el("button", { type: "button", class: "link", text: `Add: ${card.title}` });
      b.setAttribute("data-news-id", card.news_id);
      b.addEventListener("click", () => {
        state.history.push(card.news_id);
        renderHistory();
      });
      list.append(el("li", {}, b, el("span", { class: "meta", text: ` ${card.news_id} · ${cardMeta(card)}` })));
    }
  });
}

// ------------------------------------------------------------------ recommendations

function candidatesWanted() {
  const source = document.querySelector("input[name=source]:checked").value;
  if (source === "impression" && state.impression) return state.impression.candidates;
  if (source === "given") return $("candidate-ids").value.split(/[\s,]+/).filter(Boolean);
  return null;
}

function bars(weights) {
  const list = el("div", { class: "bars", role: "list" });
  for (const [name, w] of Object.entries(weights)) {
    const row = el("div", { class: "bar", role: "listitem", "data-modality": name, "data-weight": String(w) },
      el("span", { text: name }),
      el("span", { class: "bar-track" }, el("span", { class: "bar-fill" })),
      el("span", { text: w.toFixed(2) }));
    row.querySelector(".bar-fill").style.display = "block";
    row.querySelector(".bar-fill").style.width = `${(100 * w).toFixed(1)}%`;
    row.setAttribute("aria-label", `${name} weight ${w.toFixed(3)}`);
    list.append(row);
  }
  return list;
}

function titleOf(id) {
  const card = state.cards.get(id);
  return card ? card.title : id;
}

function renderExplanation(li, x, meta) {
  const box = li.querySelector(".why");
  box.replaceChildren();
  if (x.modality_weights) {
    box.append(el("p", { class: "meta", text: `Modality weights (${meta.fusion} fusion)` }), bars(x.modality_weights));
  } else {
    box.append(el("p", { class: "meta", text: meta.weights }));
  }
  if (x.popularity) {
    // A run trained with popularity: what the click stream added to this news' score.
    const p = x.popularity;
    const parts = [`popularity ${p.term >= 0 ? "+" : ""}${p.term.toFixed(2)} to the score`, `CTR ${(100 * p.ctr).toFixed(1)}%`];
    parts.push(`${p.clicks.toFixed(1)} clicks in ${p.impressions.toFixed(1)} impressions (decayed)`);
    if (p.trust !== null) parts.push(`trust ${p.trust.toFixed(2)} for this history`);
    box.append(el("p", { class: "meta popularity", text: parts.join(", ") }));
  }
  const reasons = el("ul", { class: "reasons" });
  for (const c of x.contributors) {
    const nums = [];
    if (c.attention !== null) nums.push(`attention ${c.attention.toFixed(2)}`);
    if (c.text_similarity !== null) nums.push(`text similarity ${c.text_similarity.toFixed(2)}`);
    reasons.append(el("li", { class: "contributor", "data-news-id": c.news_id, text: `clicked “${titleOf(c.news_id)}” (${nums.join(", ")})` }));
  }
  if (x.shared_entities.length) {
    reasons.append(el("li", { text: `shares ${x.shared_entities.map((e) => e.label).join(", ")} with ${new Set(x.shared_entities.flatMap((e) => e.history)).size} clicked news` }));
  }
  if (x.same_subcategory.length) {
    reasons.append(el("li", { text: `same subcategory (${x.subcategory}) as ${x.same_subcategory.length} clicked news` }));
  } else if (x.same_category.length) {
    reasons.append(el("li", { text: `same category (${x.category}) as ${x.same_category.length} clicked news` }));
  }
  if (reasons.children.length) {
    box.append(el("p", { class: "meta", text: `Why: clicks ranked by ${meta.ranked_by}` }), reasons);
  }
}

// The list's diversity and calibration, as evaluate defines them (docs/evaluation.md).
function showDiversity(result) {
  const note = $("diversity-note");
  const d = result.diversity;
  const r = result.rerank;
  const parts = [r.method === "none" ? "the model's order" : `re-ranked by ${r.method}, λ ${r.weight}`];
  if (d) {
    parts.push(d.ild === null ? "ILD n/a" : `ILD ${d.ild.toFixed(3)}`);
    parts.push(`${d.categories} categories`);
    parts.push(d.calibration === null ? "calibration n/a (no history)" : `calibration ${d.calibration.toFixed(3)} (JS to the history's categories; lower is closer)`);
  }
  note.textContent = parts.join(" · ");
  note.dataset.method = r.method;
  note.dataset.weight = String(r.weight);
  note.dataset.ild = d && d.ild !== null ? String(d.ild) : "";
  note.dataset.calibration = d && d.calibration !== null ? String(d.calibration) : "";
}

async function recommend(event) {
  if (event) event.preventDefault();
  await guarded(async () => {
    const k = Number($("k").value);
    const candidates = candidatesWanted();
    const body = { history: state.history, k, strict: state.strict };
    if (candidates) body.candidates = candidates;
    if (state.userId && state.info && state.info.user_ids) body.user_id = state.userId;
    const method = $("rerank-method").value;
    if (method) body.rerank = { method, weight: Number($("rerank-weight").value) };
    $("results").replaceChildren();
    $("diversity-note").textContent = "";
    $("h-results").hidden = false;
    $("results-note").textContent = "";
    const result = await api("/v1/recommend", body);
    const ids = result.items.map((i) => i.news_id);
    await fetchCards(ids);
    const clicked = new Set(state.impression ? state.impression.clicked : []);
    const list = $("results");
    for (const item of result.items) {
      const card = state.cards.get(item.news_id);
      const head = el("div", { class: "head" },
        el("span", { class: "rank", text: `#${item.rank}` }),
        el("strong", { class: "title", text: card ? card.title : item.news_id }),
        clicked.has(item.news_id) ? el("span", { class: "badge", text: `clicked in impression #${state.impression.impression_id}` }) : null,
        el("p", { class: "meta", text: `${item.news_id} · ${card ? cardMeta(card) : ""} · score ${item.score.toFixed(3)}` }));
      list.append(el("li", { class: "result", "data-news-id": item.news_id, "data-rank": String(item.rank), "data-score": String(item.score), "data-clicked": String(clicked.has(item.news_id)) },
        head, el("div", { class: "why" })));
    }
    const notes = [`${result.mode === "rank" ? "ranked the given candidates" : `retrieved from all ${state.info ? state.info.news.toLocaleString("en") : ""} news`}`,
      result.cold_start ? "cold start (no known click)" : `${result.history_used} clicks used`];
    if (result.history_truncated) notes.push(`${result.history_truncated} oldest clicks beyond the model's history dropped`);
    if (result.unknown.length) notes.push(`skipped unknown: ${result.unknown.join(" ")}`);
    if (state.impression) {
      const hits = result.items.filter((i) => clicked.has(i.news_id)).length;
      notes.push(`${hits} of ${result.items.length} were clicked in impression #${state.impression.impression_id}`);
    }
    $("results-note").textContent = `(${notes.join("; ")})`;
    showDiversity(result);
    document.body.dataset.resultsAt = String(performance.now());
    if (result.items.length && !(state.info && state.info.explain_error)) {
      const history = state.history.filter((id) => !result.unknown.includes(id));
      try {
        const why = await api("/v1/explain", { history, items: ids, user_id: body.user_id || null });
        await fetchCards(why.items.flatMap((x) => x.contributors.map((c) => c.news_id)));
        $("explain-note").textContent =
          `Bars: ${why.weights} for each news (${why.modalities.join(", ")}). Clicks: ${why.attention}, and the cosine of the text vectors.`;
        const byId = new Map(why.items.map((x) => [x.news_id, x]));
        for (const li of list.children) renderExplanation(li, byId.get(li.dataset.newsId), why);
      } catch (e) {
        // The ranking stands; say visibly why there are no reasons (e.g. ingested news).
        if (!(e instanceof ApiError)) throw e;
        $("explain-note").textContent = `Reasons unavailable: ${e.message}`;
      }
    }
    document.body.dataset.explainedAt = String(performance.now());
  });
}

// ------------------------------------------------------------------ run view

async function inlineChart(id, name) {
  const box = $(id);
  box.textContent = "Drawing…";
  const response = await fetch(`/v1/run/charts/${name}.svg`);
  if (!response.ok) {
    let detail = "";
    try { detail = reason((await response.json()).detail, response.status); } catch (e) { detail = `HTTP ${response.status}`; }
    box.replaceChildren(el("p", { class: "muted", text: detail }));
    return;
  }
  box.innerHTML = await response.text();  // SVG drawn by the service (matplotlib), text kept as text
  box.dataset.drawn = "true";
}

// Beyond-accuracy metrics (newsrec evaluate): kind -> column heading and decimals.
const BEYOND = { ild: ["ILD", 3], categories: ["categories", 2], calibration: ["calibration ↓", 3], novelty: ["novelty", 2], popularity: ["popularity", 1], coverage: ["coverage", 3], gini: ["Gini ↓", 3] };
const isBeyond = (name) => name.split("@")[0] in BEYOND;

function metricsTable(metrics) {
  if (!metrics || !metrics.rows) return el("p", { class: "muted", text: "No metrics.json: run newsrec evaluate RUN --baselines." });
  const names = metrics.metrics.filter((m) => !isBeyond(m));
  const table = el("table", { id: "metrics-table" });
  table.append(el("caption", { class: "muted", text: `${metrics.split} split, ${metrics.impressions.toLocaleString("en")} impressions${metrics.split_note && metrics.split_note !== metrics.selection ? ` (${metrics.split_note})` : ""}` }));
  const head = el("tr", {}, el("th", { scope: "col", text: "model" }));
  for (const m of names) head.append(el("th", { scope: "col", text: m }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const row of metrics.rows) {
    const values = row.values || row.metrics || {};
    const tr = el("tr", { class: row.kind === "model" ? "model" : "" }, el("td", { text: row.name }));
    for (const m of names) {
      const v = values[m];
      tr.append(el("td", { text: typeof v === "number" ? v.toFixed(4) : "—" }));
    }
    body.append(tr);
  }
  table.append(body);
  return el("div", {}, table, protocolNote(metrics), beyondTable(metrics));
}

// The beyond-accuracy figures at the largest k in metrics.json (--json and the file hold every k).
function beyondTable(metrics) {
  const all = metrics.metrics.filter(isBeyond);
  if (!all.length) return null;
  const k = Math.max(...all.map((m) => Number(m.split("@")[1])));
  const names = all.filter((m) => m.endsWith(`@${k}`));
  const table = el("table", { id: "beyond-table" });
  const how = metrics.rerank && metrics.rerank !== "none" ? `, re-ranked by ${metrics.rerank}` : "";
  table.append(el("caption", { class: "muted", text: `Beyond accuracy, top ${k}${how}: means over impressions (novelty in bits, popularity in clicks); coverage and Gini over the split's candidates; ↓ lower is better.` }));
  const head = el("tr", {}, el("th", { scope: "col", text: "model" }));
  for (const m of names) head.append(el("th", { scope: "col", text: BEYOND[m.split("@")[0]][0] }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const row of metrics.rows) {
    const values = row.values || {};
    const tr = el("tr", { class: row.kind === "model" ? "model" : "" }, el("td", { text: row.name }));
    for (const m of names) {
      const v = values[m];
      tr.append(el("td", { text: typeof v === "number" ? v.toFixed(BEYOND[m.split("@")[0]][1]) : "—" }));
    }
    body.append(tr);
  }
  table.append(body);
  return el("div", { class: "table-wrap" }, table);
}

// Both protocols in plain words, and which one the table above is (metrics.json's `protocol`).
function protocolNote(metrics) {
  const protocol = metrics.protocol || "offline";
  const chosen = metrics.selection ? `${metrics.selection}${metrics.optimistic ? " (optimistic: one split chose and reports)" : ""}. ` : "";
  const offline = "Offline protocol: the model is scored as it stood at the end of training; news popularity, if the model uses it, is frozen there.";
  const replay = "Online replay: the reported days are played back in time order and each impression is scored with the clicks of every earlier one, as if the model had been live (newsrec evaluate --protocol replay).";
  const which = protocol === "replay" ? replay : offline;
  const other = protocol === "replay" ? "The offline figure answers another question; compare replay figures with replay figures only." : "Replay figures answer another question; compare offline figures with offline figures only.";
  return el("p", { id: "protocol-note", class: "muted", text: `${chosen}This table: ${which} ${other}` });
}

async function loadRun() {
  const run = await api("/v1/run");
  $("run-dir").textContent = `${run.run_dir}: ${run.history.length} lines in history.jsonl`;
  $("metrics").replaceChildren(metricsTable(run.metrics));
  await Promise.all([inlineChart("chart-loss", "loss"), inlineChart("chart-validation", "validation")]);
  if (run.ablation) await inlineChart("chart-ablation", "ablation");
  else $("chart-ablation").replaceChildren(el("p", { class: "muted", text: "No ablation.json for this run (newsrec ablate writes one; serve --ablation FILE shows it)." }));
  await inlineChart("chart-saturation", "saturation");
  const plots = run.tradeoffs || [];
  $("tradeoffs").replaceChildren(...(plots.length
    ? plots.map((name) => el("figure", {}, el("img", { src: `/v1/run/tradeoff/${encodeURIComponent(name)}`, alt: `accuracy against diversity, one point per λ (${name})`, class: "tradeoff" }), el("figcaption", { text: name })))
    : [el("p", { class: "muted", text: "No trade-off plot yet: newsrec evaluate RUN --data DATA --tradeoff mmr writes one." })]));
}

// ------------------------------------------------------------------ start

async function start() {
  $("user-form").addEventListener("submit", findUsers);
  $("random-user").addEventListener("click", () => guarded(async () => chooseUser(null, await api("/v1/users/random"))));
  $("ids-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      state.userId = null;
      state.impression = null;
      $("source-impression").disabled = true;
      $("impression-note").textContent = "";
      await setHistory($("history-ids").value.split(/[\s,]+/).filter(Boolean), { strict: true });
      await recommend();
    });
  });
  $("search-form").addEventListener("submit", searchNews);
  $("recommend-form").addEventListener("submit", recommend);
  $("rerank-weight").addEventListener("input", () => {
    $("rerank-weight-value").textContent = $("rerank-weight").value;
  });
  window.addEventListener("hashchange", route);
  await guarded(loadInfo);
  route();
  // ?user=U1&k=10&go=1 opens with that user chosen (and recommends): a view to link to, and the
  // page-load benchmark.
  const params = new URLSearchParams(location.search);
  if (params.get("k")) $("k").value = params.get("k");
  // A user who cannot be chosen keeps its message: no silent cold-start ranking in its place.
  const chosen = params.get("user") ? await guarded(() => chooseUser(params.get("user"))) : true;
  if (params.get("go") && chosen) await recommend();
  document.body.dataset.ready = "true";
}

start();
