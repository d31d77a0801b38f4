// The page: vanilla JS over the platform's REST/SSE APIs, reached through this service's
// same-origin proxy (/api/reco|chat|trainer/...). The API key, when the platform has one, is
// asked for once, kept in sessionStorage and sent as X-API-Key; the page source never holds it.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const KEY_STORE = "reco.apiKey";

// --- small DOM helper ----------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const money = (v) => (v === null || v === undefined ? "" : `$${Number(v).toFixed(2)}`);
const stars = (v) => (v === null || v === undefined ? "no rating" : `★ ${Number(v).toFixed(1)}`);
const shortVersion = (v) => (v ? String(v).replace(/^(\d{8})T(\d{4})\d*\.\d+Z-/, "$1 $2 · ") : "none");
const secs = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(v < 10 ? 2 : 0)} s`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

// --- API calls ----------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let keyPrompt = null;
function askForKey() {
  // one dialog for all calls that met a 401 at the same time
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  keyPrompt = new Promise((resolve) => {
    const input = $("#key-input");
    input.value = "";
    const done = (key) => {
      dialog.close();
      keyPrompt = null;
      resolve(key);
    };
    $("#key-form").onsubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key);
      done(key || null);
    };
    $("#key-cancel").onclick = () => done(null);
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

async function call(service, path, { method = "GET", body, query, raw = false } = {}) {
  const url = new URL(`/api/${service}/${path}`, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const one of [].concat(value)) url.searchParams.append(name, one);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { Accept: raw ? "*/*" : "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers["X-API-Key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && attempt === 0) {
      // sent before a key was entered (slow calls answer late): retry with it, don't ask again
      const entered = sessionStorage.getItem(KEY_STORE);
      if (entered && entered !== key) continue;
      sessionStorage.removeItem(KEY_STORE);
      if (await askForKey()) continue;
    }
    if (raw && response.ok) return response;
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
  throw new ApiError(401, { error: { message: "an API key is needed" } });
}

const currentUser = () => $("#user-id").value.trim() || null;

// --- tabs ---------------------------------------------------------------------------------
const tabs = [...document.querySelectorAll('[role="tab"]')];
function selectTab(tab, focus = false) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(`#${other.getAttribute("aria-controls")}`).hidden = !selected;
  }
  if (focus) tab.focus();
  history.replaceState(null, "", `#${tab.id.replace("tab-", "")}`);
  if (tab.id === "tab-ops") loadOps();
  if (tab.id === "tab-user" && currentUser() && !$("#reco-user").value) {
    $("#reco-user").value = currentUser();
    loadRecommendations();
  }
}
tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(tabs[(i + step + tabs.length) % tabs.length], true);
  });
});

// --- product cards ------------------------------------------------------------------------
const PALETTE = ["#6366f1", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6"];
function thumb(product) {
  if (product.image_url) return h("img", { src: product.image_url, alt: "", loading: "lazy" });
  // no picture in the catalogue: the category's initials on the category's colour
  const label = product.category || product.title || "?";
  const seed = [...label].reduce((a, c) => a + c.charCodeAt(0), 0);
  const initials = label.split(/[\s&]+/).filter(Boolean).slice(0, 2).map((w) => w[0]).join("");
  return h(
    "div",
    { class: "thumb", style: `background:${PALETTE[seed % PALETTE.length]}`, "aria-hidden": "true" },
    initials.toUpperCase(),
  );
}

function productCard(product, { actions = [], badge = null, why = null, isNew = false } = {}) {
  return h(
    "li",
    { class: `product${isNew ? " new" : ""}`, "data-item-id": product.item_id },
    product.image_url ? thumb(product) : null,
    h(
      "div",
      { class: "head" },
      product.image_url ? null : thumb(product),
      h(
        "div",
        {},
        h("h3", {}, product.title || product.item_id),
        h("div", { class: "brand-line" }, [product.brand, product.category].filter(Boolean).join(" · ")),
      ),
    ),
    h(
      "div",
      { class: "facts" },
      h("span", { class: "price" }, money(product.price)),
      h("span", { class: "rating" }, stars(product.avg_rating)),
      product.rating_count ? h("span", { class: "meta" }, `(${product.rating_count})`) : null,
      badge,
    ),
    why ? h("p", { class: "why" }, why) : null,
    actions.length ? h("div", { class: "actions" }, actions) : null,
  );
}

// --- shop assistant -----------------------------------------------------------------------
const chat = { sessionId: null, filters: {}, query: "", edited: false, busy: false };

const CHIP_LABELS = {
  brands: (v) => v,
  exclude_brands: (v) => `not ${v}`,
  categories: (v) => v,
  min_price: (v) => `from ${money(v)}`,
  max_price: (v) => `under ${money(v)}`,
  min_rating: (v) => `rated ${v}+`,
};

function renderChips(filters) {
  const list = $("#chips");
  list.replaceChildren();
  $("#chat-note").hidden = true;
  for (const [name, value] of Object.entries(filters || {})) {
    if (!(name in CHIP_LABELS) || value === null || value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) {
      const label = CHIP_LABELS[name](one);
      list.append(
        h(
          "li",
          { class: "chip", "data-filter": name },
          label,
          h("button", {
            type: "button",
            "aria-label": `Remove filter ${label}`,
            title: "Remove this filter",
            onclick: () => removeChip(name, one),
          }, "×"),
        ),
      );
    }
  }
  if (!list.children.length) {
    list.append(h("li", { class: "empty" }, "No filters: name a budget, brand or rating to add one."));
  }
}

function renderUnmatched(unmatched, alternativesOnly) {
  const box = $("#unmatched");
  const parts = [];
  if (unmatched) {
    if (unmatched.brands && unmatched.brands.length) parts.push(`brand ${unmatched.brands.join(", ")}`);
    if (unmatched.terms && unmatched.terms.length) parts.push(`"${unmatched.terms.join('", "')}"`);
    if (unmatched.filters && unmatched.filters.length) parts.push(unmatched.filters.join(", "));
  }
  if (!parts.length && !alternativesOnly) {
    box.hidden = true;
    return;
  }
  box.textContent = parts.length
    ? `We don't sell ${parts.join("; ")}. The products below are the closest alternatives.`
    : "Nothing matches exactly; the products below are the closest alternatives.";
  box.hidden = false;
}

function renderChatProducts(payload) {
  chat.filters = payload.filters || {};
  chat.query = payload.standalone_query || payload.query || chat.query;
  renderChips(chat.filters);
  const products = payload.products || [];
  renderUnmatched(payload.unmatched, products.length > 0 && products.every((p) => p.alternative));
  const list = $("#chat-products");
  list.replaceChildren();
  if (!products.length) list.append(h("li", { class: "empty" }, "No product fits these filters."));
  for (const product of products) {
    list.append(
      productCard(product, {
        why: product.reason,
        badge: product.alternative ? h("span", { class: "badge alt" }, "alternative") : null,
      }),
    );
  }
  const personal = { factor: "personalised (ALS)", fold_in: "personalised (fold-in)" }[payload.personalisation];
  $("#chat-meta").textContent = [chat.query && `for "${chat.query}"`, personal].filter(Boolean).join(" · ");
}

function addMessage(role, text) {
  const item = h("li", { class: `msg ${role}` }, text);
  $("#messages").append(item);
  return item;
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      yield [name, data.length ? JSON.parse(data.join("\n")) : null];
    }
  }
}

async function sendMessage(message) {
  if (chat.busy || !message.trim()) return;
  chat.busy = true;
  $("#send").disabled = true;
  const asked = addMessage("user", message);
  const bot = addMessage("bot streaming", "");
  const log = $("#messages");
  log.scrollTop = asked.offsetTop - log.offsetTop; // the question on top, the answer below it
  const body = { message, k: 6 };
  if (currentUser()) body.user_id = currentUser();
  if (chat.edited) {
    body.filters = Object.fromEntries(Object.entries(chat.filters).filter(([n]) => n !== "exclude_brands"));
    chat.sessionId = null; // removed chips cannot be carried by the old session
    chat.edited = false;
  }
  if (chat.sessionId) body.session_id = chat.sessionId;
  try {
    const response = await call("chat", "chat/stream", { method: "POST", body, raw: true });
    let text = "";
    for await (const [name, data] of sseEvents(response)) {
      if (name === "products") {
        chat.sessionId = data.session_id;
        renderChatProducts(data);
      } else if (name === "token") {
        text += data.text;
        bot.textContent = text;
      } else if (name === "replace") {
        text = data.text;
        bot.textContent = text;
      } else if (name === "done") {
        chat.sessionId = data.session_id;
        bot.textContent = data.answer;
        const by = data.generated_by === "llm" ? "written by the LLM" : `answer: ${data.generated_by}`;
        bot.append(h("span", { class: "by" }, by));
      } else if (name === "error") {
        throw new ApiError(500, data);
      }
    }
  } catch (error) {
    bot.classList.add("error");
    bot.textContent = `Sorry: ${error.message}`;
  } finally {
    bot.classList.remove("streaming");
    chat.busy = false;
    $("#send").disabled = false;
  }
}

async function removeChip(name, value) {
  const filters = { ...chat.filters };
  if (Array.isArray(filters[name])) filters[name] = filters[name].filter((v) => v !== value);
  else delete filters[name];
  if (Array.isArray(filters[name]) && !filters[name].length) delete filters[name];
  chat.filters = filters;
  chat.edited = true;
  renderChips(filters);
  try {
    const result = await call("chat", "search", {
      query: {
        q: chat.query || "popular products",
        brand: filters.brands,
        category: filters.categories,
        min_price: filters.min_price,
        max_price: filters.max_price,
        min_rating: filters.min_rating,
        user_id: currentUser(),
        k: 6,
      },
    });
    renderChatProducts({ ...result, standalone_query: chat.query, filters });
    const note = $("#chat-note");
    note.textContent = "Filter removed. Your next message starts a new search with the filters shown.";
    note.hidden = false;
  } catch (error) {
    renderUnmatched(null, false);
    $("#unmatched").textContent = `Could not refresh: ${error.message}`;
    $("#unmatched").hidden = false;
  }
}

async function startOver() {
  if (chat.sessionId) {
    try {
      await call("chat", `chat/${chat.sessionId}`, { method: "DELETE" });
    } catch {
      // forgetting is best effort: the next turn starts a new session either way
    }
  }
  Object.assign(chat, { sessionId: null, filters: {}, query: "", edited: false });
  $("#messages").replaceChildren(h("li", { class: "msg bot" }, "New conversation. What are you looking for?"));
  renderChips({});
  $("#unmatched").hidden = true;
  $("#chat-meta").textContent = "";
  $("#chat-products").replaceChildren(h("li", { class: "empty" }, "Products the assistant picks appear here."));
  $("#chat-input").focus();
}

$("#chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#chat-input");
  const message = input.value;
  input.value = "";
  sendMessage(message);
});
$("#start-over").addEventListener("click", startOver);
for (const example of document.querySelectorAll(".example")) {
  example.addEventListener("click", () => sendMessage(example.textContent));
}

// --- a user's recommendations -------------------------------------------------------------
const reco = { user: null, shown: [] };
const EVENTS = [
  ["view", "View"],
  ["add_to_cart", "Add to cart"],
  ["purchase", "Purchase"],
  ["dislike", "Dislike"],
];

function recoQuery() {
  const form = $("#reco-form");
  return {
    k: form.k.value || 8,
    category: form.category.value.trim(),
    max_price: form.max_price.value,
  };
}

async function loadRecommendations(change = null) {
  const user = $("#reco-user").value.trim();
  if (!user) return;
  reco.user = user;
  const list = $("#reco-items");
  try {
    const result = await call("reco", `recommend/${encodeURIComponent(user)}`, { query: recoQuery() });
    const before = new Set(reco.shown);
    const after = result.items.map((item) => item.item_id);
    list.replaceChildren();
    if (!result.items.length) list.append(h("li", { class: "empty" }, "Nothing to recommend with these filters."));
    for (const item of result.items) {
      const isNew = change !== null && !before.has(item.item_id);
      list.append(
        productCard(item, {
          isNew,
          badge: h("span", { class: `badge ${item.strategy || result.strategy}` }, item.strategy || result.strategy),
          actions: [
            ...EVENTS.map(([event, label]) =>
              h("button", {
                type: "button",
                class: "small ghost",
                "data-event": event,
                onclick: () => recordInteraction(item, event, label),
              }, label),
            ),
            h("button", { type: "button", class: "small ghost", onclick: () => loadSimilar(item) }, "Similar"),
          ],
        }),
      );
    }
    $("#reco-meta").textContent = `strategy ${result.strategy} · model ${shortVersion(result.model_version)}`;
    $("#reco-meta").dataset.strategy = result.strategy;
    if (change) {
      const added = after.filter((id) => !before.has(id)).length;
      const moved = after.filter((id, i) => reco.shown[i] !== id).length;
      const box = $("#reco-change");
      box.textContent = `${change} recorded. Recommendations recomputed by ${result.strategy}: ${added} new, ${moved} changed place.`;
      box.hidden = false;
    }
    reco.shown = after;
  } catch (error) {
    list.replaceChildren(h("li", { class: "empty" }, `Could not load: ${error.message}`));
  }
  loadHistory();
  loadList();
  loadTaste(user);
}

async function loadTaste(user) {
  // GET /users/{id}/profile on the chat engine: summary and who wrote it (llm/fallback/guard)
  const box = $("#taste-summary");
  try {
    const profile = await call("chat", `users/${encodeURIComponent(user)}/profile`);
    const by = { llm: "written by the LLM", fallback: "from the user's history (no LLM)", guard: "from the user's history (the LLM's summary was not grounded)" };
    box.replaceChildren(profile.summary, h("span", { class: "by" }, by[profile.generated_by] || profile.generated_by));
  } catch (error) {
    box.textContent = `No profile: ${error.message}`;
  }
}

async function recordInteraction(item, event, label) {
  try {
    await call("reco", "interactions", {
      method: "POST",
      body: { user_id: reco.user, item_id: item.item_id, event },
    });
    await loadRecommendations(`${label} of "${item.title}"`);
  } catch (error) {
    const box = $("#reco-change");
    box.textContent = `Could not record: ${error.message}`;
    box.hidden = false;
  }
}

async function loadSimilar(item) {
  const list = $("#similar-items");
  $("#similar-title").textContent = `Similar to ${item.title}`;
  try {
    const result = await call("reco", `similar/${encodeURIComponent(item.item_id)}`, { query: { k: 6 } });
    list.replaceChildren(
      ...result.items.map((other) =>
        h("li", {}, h("span", {}, other.title, h("br"), h("span", { class: "sub" }, other.brand || "")),
          h("span", { class: "sub" }, money(other.price))),
      ),
    );
    if (!result.items.length) list.append(h("li", { class: "empty" }, "No similar items."));
  } catch (error) {
    list.replaceChildren(h("li", { class: "empty" }, error.message));
  }
  $("#similar-title").scrollIntoView({ block: "nearest" });
}

async function loadHistory() {
  const list = $("#history");
  try {
    const result = await call("reco", "history", { query: { user_id: reco.user, limit: 5 } });
    list.replaceChildren(
      ...result.entries.map((entry) =>
        h("li", {},
          h("span", {}, `${entry.items.length} items`, h("br"),
            h("span", { class: "sub" }, entry.items.slice(0, 2).map((i) => i.title || i.item_id).join(", "))),
          h("span", { class: "sub" }, h("span", { class: `badge ${entry.strategy}` }, entry.strategy), " ",
            new Date(entry.served_at).toLocaleTimeString())),
      ),
    );
    if (!result.entries.length) list.append(h("li", { class: "empty" }, "Nothing served yet."));
  } catch (error) {
    list.replaceChildren(h("li", { class: "empty" }, error.message));
  }
}

function renderList(result) {
  const list = $("#list-items");
  list.replaceChildren(
    ...result.items.map((item) =>
      h("li", {},
        h("span", {}, item.title, h("br"), h("span", { class: "sub" }, `score ${Number(item.score).toFixed(3)}`)),
        h("button", {
          type: "button",
          class: "small danger",
          "aria-label": `Remove ${item.title} from the list`,
          onclick: () => removeFromList(item),
        }, "Remove")),
    ),
  );
  if (!result.items.length) list.append(h("li", { class: "empty" }, "The list is empty."));
  reco.list = result.items.map((item) => item.item_id);
}

async function loadList() {
  try {
    renderList(await call("reco", `lists/${encodeURIComponent(reco.user)}`));
  } catch (error) {
    reco.list = [];
    const text = error.status === 404 ? "No stored list yet: save one from the model." : error.message;
    $("#list-items").replaceChildren(h("li", { class: "empty" }, text));
  }
}

async function listAction(run) {
  if (!reco.user) return;
  try {
    await run();
    await loadList();
  } catch (error) {
    $("#list-items").replaceChildren(h("li", { class: "empty" }, error.message));
  }
}
const removeFromList = (item) =>
  listAction(() => call("reco", `lists/${encodeURIComponent(reco.user)}/items`, {
    method: "DELETE",
    query: { item_id: item.item_id },
  }));
$("#list-create").addEventListener("click", () =>
  listAction(() => call("reco", `lists/${encodeURIComponent(reco.user)}`, { method: "POST", query: { k: 8 } })));
$("#list-reorder").addEventListener("click", () =>
  listAction(() => call("reco", `lists/${encodeURIComponent(reco.user)}`, {
    method: "PUT",
    body: { item_ids: reco.list || [] },
  })));

$("#reco-form").addEventListener("submit", (event) => {
  event.preventDefault();
  reco.shown = [];
  $("#reco-change").hidden = true;
  loadRecommendations();
});

// --- operations ---------------------------------------------------------------------------
function parseMetrics(text) {
  const samples = [];
  for (const line of (text || "").split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}
const sum = (samples, name, keep = () => true) =>
  samples.filter((s) => s.name === name && keep(s.labels)).reduce((a, s) => a + s.value, 0);

function percentile(samples, q) {
  // from the request-latency histogram of every API route (cumulative buckets)
  const buckets = {};
  for (const s of samples) {
    if (s.name !== "http_request_duration_seconds_bucket") continue;
    if (!(s.labels.route || "").startsWith("/api/")) continue;
    buckets[s.labels.le] = (buckets[s.labels.le] || 0) + s.value;
  }
  const bounds = Object.keys(buckets).sort((a, b) => Number(a) - Number(b));
  const total = buckets["+Inf"] || 0;
  if (!total) return null;
  const finite = bounds.filter((b) => b !== "+Inf");
  for (const bound of finite) if (buckets[bound] >= q * total) return { bound: Number(bound), above: false };
  // past the top bucket: say "more than" it rather than "no data"
  return finite.length ? { bound: Number(finite[finite.length - 1]), above: true } : null;
}
const seconds = (v) => (v < 1 ? `${Math.round(v * 1000)} ms` : `${v} s`);
const ms = (p) => (p === null ? "–" : `${p.above ? ">" : "≤"} ${seconds(p.bound)}`);

function tile(label, value, sub = "", small = false) {
  return h("div", { class: "tile" }, h("div", { class: "label" }, label),
    h("div", { class: `value${small ? " small" : ""}` }, value), sub ? h("div", { class: "sub" }, sub) : null);
}

async function settle(promise) {
  try {
    return await promise;
  } catch (error) {
    return { failed: error };
  }
}

function versionRows(trainer) {
  const rows = [];
  const seen = new Set();
  for (const [role, info] of [["active", trainer.active], ["previous", trainer.previous], ["last run", trainer.last_run]]) {
    if (!info || seen.has(info.version_id)) continue;
    seen.add(info.version_id);
    rows.push([role, info]);
  }
  return rows;
}

function renderVersions(trainer) {
  const rows = versionRows(trainer);
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ["", "version", "status", "nDCG@10", "recall@10", "stages (s)", "data"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(([role, info]) => {
      const m = info.metrics || {};
      const d = info.durations || {};
      const stages = Object.entries(d).filter(([k]) => k !== "total").map(([k, v]) => `${k} ${Number(v).toFixed(2)}`).join(", ");
      return h("tr", { "data-version": info.version_id },
        h("td", {}, h("span", { class: "badge" }, role)),
        h("td", {}, h("code", { title: info.version_id }, info.version_id), h("div", { class: "sub" }, `trained ${when(info.trained_at)}`)),
        h("td", {}, info.status, info.error ? h("div", { class: "sub" }, info.error) : null),
        h("td", {}, m["ndcg@10"] !== undefined ? Number(m["ndcg@10"]).toFixed(3) : "–"),
        h("td", {}, m["recall@10"] !== undefined ? Number(m["recall@10"]).toFixed(3) : "–"),
        h("td", {}, d.total !== undefined ? `total ${Number(d.total).toFixed(2)}` : "–", stages ? h("div", { class: "sub" }, stages) : null),
        h("td", {}, info.n_interactions ? `${info.n_users} users, ${info.n_items} items, ${info.n_interactions} events` : "–"));
    })));
  $("#versions").replaceChildren(rows.length ? table : h("p", { class: "empty" }, "No model trained yet."));
  // chart: nDCG@10 and total training time per version, oldest first
  const ordered = rows.map(([, info]) => info).sort((a, b) => (a.version_id < b.version_id ? -1 : 1));
  const maxTime = Math.max(...ordered.map((i) => (i.durations || {}).total || 0), 0.001);
  $("#chart").replaceChildren(
    h("div", { class: "legend" }, h("span", {}, h("i"), "nDCG@10"), h("span", {}, h("i", { class: "time" }), "training time")),
    ...ordered.map((info) => {
      const ndcg = (info.metrics || {})["ndcg@10"];
      const total = (info.durations || {}).total;
      return h("div", { class: "bar-row" },
        h("span", { class: "name", title: info.version_id }, shortVersion(info.version_id)),
        h("div", { class: "bars" },
          h("div", { class: "bar", style: `width:${ndcg ? Math.max(ndcg * 100, 8) : 8}%` }, ndcg !== undefined ? Number(ndcg).toFixed(3) : "n/a"),
          h("div", { class: "bar time", style: `width:${total ? Math.max((total / maxTime) * 100, 8) : 8}%` }, secs(total))));
    }),
  );
}

async function loadOps() {
  const [trainer, recoStatus, chatHealth, trainerHealth, recoMetrics, chatMetrics] = await Promise.all([
    settle(call("trainer", "status")),
    settle(call("reco", "status")),
    settle(call("chat", "health")),
    settle(call("trainer", "health")),
    settle(call("reco", "metrics", { raw: true }).then((r) => r.text())),
    settle(call("chat", "metrics", { raw: true }).then((r) => r.text())),
  ]);
  const tiles = [];
  if (!trainer.failed) {
    const active = trainer.active || {};
    tiles.push(tile("Active model", shortVersion(active.version_id), `trained ${when(active.trained_at)}`, true));
    tiles.push(tile("Previous model", shortVersion((trainer.previous || {}).version_id), "roll back returns to it", true));
    tiles.push(tile("Training", trainer.running ? `running: ${trainer.running.stage}` : "idle",
      `next run ${when(trainer.next_run_at)} · every ${trainer.interval_minutes} min`, true));
    tiles.push(tile("Interactions trained on", (active.n_interactions || 0).toLocaleString(),
      `${(active.n_users || 0).toLocaleString()} users`));
    renderVersions(trainer);
    $("#roll-back").disabled = !trainer.previous;
  } else {
    $("#versions").replaceChildren(h("p", { class: "notice bad" }, `Trainer: ${trainer.failed.message}`));
  }
  if (!recoStatus.failed) {
    tiles.push(tile("Catalogue items served", (recoStatus.item_count || 0).toLocaleString(),
      recoStatus.popularity ? `${recoStatus.popularity.items} popular items` : ""));
  }
  const stores = $("#stores");
  stores.replaceChildren();
  const storeRows = { ...(recoStatus.stores || {}) };
  for (const [name, part] of Object.entries(chatHealth.failed ? {} : chatHealth)) {
    if (part && typeof part === "object" && "status" in part && ["chroma", "postgres", "redis", "llm"].includes(name)) {
      storeRows[name === "llm" ? "LLM (chat)" : name] = part.status;
    }
  }
  const GOOD = new Set(["ok", "up", "ready", "true"]);
  const BAD = new Set(["down", "false", "unreachable", "error", "failed"]);
  const row = (name, state) => {
    const label = state === true ? "up" : state === false ? "down" : String(state);
    const dot = GOOD.has(label) ? "" : BAD.has(label) ? "down" : "degraded";
    stores.append(h("li", {}, h("span", {}, h("span", { class: `dot ${dot}`, "aria-hidden": "true" }), name),
      h("span", { class: "sub" }, label)));
  };
  for (const [name, state] of Object.entries(storeRows)) row(name, state);
  row("chat engine", chatHealth.failed ? "unreachable" : chatHealth.status);
  row("trainer", trainerHealth.failed ? "unreachable" : trainerHealth.status);
  const serving = $("#serving");
  serving.replaceChildren();
  const kv = (k, v) => serving.append(h("dt", {}, k), h("dd", {}, v));
  if (!recoMetrics.failed) {
    const samples = parseMetrics(recoMetrics);
    const requests = sum(samples, "http_requests_total", (l) => (l.route || "").startsWith("/api/"));
    kv("API requests (reco)", requests.toLocaleString());
    kv("Latency p50 / p95 / p99", [0.5, 0.95, 0.99].map((q) => ms(percentile(samples, q))).join(" / "));
    const mix = samples.filter((s) => s.name === "reco_recommendations_total");
    const served = mix.reduce((a, s) => a + s.value, 0);
    kv("Strategy mix", served ? mix.filter((s) => s.value).map((s) => `${s.labels.strategy} ${Math.round((s.value / served) * 100)}%`).join(", ") : "nothing served yet");
    tiles.push(tile("Recommendations served", served.toLocaleString()));
  } else {
    kv("reco metrics", recoMetrics.failed.message);
  }
  if (!chatMetrics.failed) {
    const samples = parseMetrics(chatMetrics);
    const answers = samples.filter((s) => s.name === "reco_chat_answers_total");
    const total = answers.reduce((a, s) => a + s.value, 0);
    kv("Chat answers", total ? answers.filter((s) => s.value).map((s) => `${s.labels.producer} ${Math.round((s.value / total) * 100)}%`).join(", ") : "none yet");
    kv("Chat p95 latency", ms(percentile(samples, 0.95)));
  }
  $("#tiles").replaceChildren(...tiles);
  const docs = $("#docs-links");
  if (!docs.children.length) {
    const ports = await settle(fetch("/ports.json").then((r) => r.json()));
    for (const [name, port] of Object.entries(ports.failed ? {} : ports)) {
      const base = `${location.protocol}//${location.hostname}:${port}`;
      docs.append(h("li", {}, h("span", {}, name), h("span", {}, h("a", { href: `${base}/docs` }, "Swagger UI"), " · ", h("a", { href: `${base}/redoc` }, "ReDoc"))));
    }
  }
}

function opsMessage(text, kind = "") {
  const box = $("#ops-message");
  box.className = `notice ${kind}`;
  box.textContent = text;
  box.hidden = false;
}

async function trainNow() {
  const button = $("#train-now");
  button.disabled = true;
  try {
    const before = await call("trainer", "status");
    const ticket = await call("trainer", "train", { method: "POST" });
    opsMessage(`Training ${ticket.version_id}${ticket.already_running ? " (already running)" : ""}…`);
    for (let i = 0; i < 600; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const now = await call("trainer", "status");
      const last = now.last_run || {};
      if (!now.running && last.version_id === ticket.version_id) {
        const active = (now.active || {}).version_id;
        if (last.status === "failed") opsMessage(`Training failed: ${last.error}`, "bad");
        else if (active !== (before.active || {}).version_id) opsMessage(`New version ${active} is active.`, "ok");
        else opsMessage(`Run ${last.version_id} ended: ${last.status}. ${last.error || ""}`);
        break;
      }
    }
  } catch (error) {
    opsMessage(`Could not train: ${error.message}`, "bad");
  } finally {
    button.disabled = false;
    loadOps();
  }
}

async function rollBack() {
  if (!confirm("Serve the previous model version again?")) return;
  try {
    const result = await call("trainer", "rollback", { method: "POST" });
    opsMessage(result.message || `Active: ${result.active}`, result.changed ? "ok" : "");
  } catch (error) {
    opsMessage(`Could not roll back: ${error.message}`, "bad");
  }
  loadOps();
}

$("#train-now").addEventListener("click", trainNow);
$("#roll-back").addEventListener("click", rollBack);
$("#refresh-ops").addEventListener("click", loadOps);

// --- start --------------------------------------------------------------------------------
const tabFromHash = () => tabs.find((tab) => tab.id === `tab-${location.hash.slice(1)}`);
window.addEventListener("hashchange", () => {
  const tab = tabFromHash();
  if (tab && tab.getAttribute("aria-selected") !== "true") selectTab(tab);
});
selectTab(tabFromHash() || tabs[0]);
