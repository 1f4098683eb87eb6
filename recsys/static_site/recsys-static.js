// recsys, static: "similar items" and "more like your history" computed in the browser.
// Data comes from items.js and vectors.js (script files, so the page also works from file://).
// The profile is the server's: the weighted mean of the viewed items' vectors (centred space),
// each event weighted by its type; seen items are never recommended.
(function () {
  "use strict";
  const items = window.RECSYS_ITEMS;
  const meta = window.RECSYS_META;
  const dim = meta.dim;
  const n = items.length;
  const rowOf = new Map(items.map((item, row) => [item.id, row]));
  const storageKey = "recsys-static-history:" + meta.model;

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * Math.pow(2, -14) * (fraction / 1024);
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
  }

  function decode(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const out = new Float32Array(n * dim);
    if (meta.quantise === "int8") {
      const q = new Int8Array(bytes.buffer);
      for (let r = 0; r < n; r++) {
        for (let d = 0; d < dim; d++) out[r * dim + d] = q[r * dim + d] * meta.scale[d];
      }
    } else {
      const h = new Uint16Array(bytes.buffer);
      for (let i = 0; i < h.length; i++) out[i] = halfToFloat(h[i]);
    }
    return out;
  }

  const vectors = decode(window.RECSYS_VECTORS);

  function dot(row, query) {
    let s = 0;
    const offset = row * dim;
    for (let d = 0; d < dim; d++) s += vectors[offset + d] * query[d];
    return s;
  }

  function nearest(query, k, exclude) {
    const scored = [];
    for (let r = 0; r < n; r++) {
      if (!exclude.has(items[r].id)) scored.push([r, dot(r, query)]);
    }
    scored.sort((a, b) => b[1] - a[1]);
    return scored.slice(0, k).map(([r, score]) => ({ ...items[r], score }));
  }

  function vectorOf(id) {
    const row = rowOf.get(id);
    return vectors.subarray(row * dim, (row + 1) * dim);
  }

  function similar(id, k) {
    if (!rowOf.has(id)) return [];
    return nearest(vectorOf(id), k, new Set([id]));
  }

  function profile(history) {
    const weights = new Map();
    for (const event of history) {
      if (!rowOf.has(event.id)) continue;
      const w = meta.event_weights[event.event] ?? 1;
      weights.set(event.id, (weights.get(event.id) || 0) + w);
    }
    const mean = new Float32Array(dim);
    let total = 0;
    for (const [id, w] of weights) {
      const v = vectorOf(id);
      for (let d = 0; d < dim; d++) mean[d] += w * v[d];
      total += w;
    }
    if (total <= 0) return null;
    let norm = 0;
    for (let d = 0; d < dim; d++) norm += mean[d] * mean[d];
    norm = Math.sqrt(norm);
    if (norm === 0) return null;
    for (let d = 0; d < dim; d++) mean[d] /= norm;
    return mean;
  }

  function recommend(history, k) {
    const seen = new Set(history.map((e) => e.id));
    const query = profile(history);
    if (query === null) {
      const start = meta.start.filter((id) => !seen.has(id)).slice(0, k);
      return { coldStart: true, items: start.map((id) => ({ ...items[rowOf.get(id)], score: 0 })) };
    }
    const hits = nearest(query, k, seen);
    const viewed = [...seen].filter((id) => rowOf.has(id));
    for (const hit of hits) {  // because you viewed: the history item nearest to it
      let best = null;
      let bestScore = -Infinity;
      for (const id of viewed) {
        const s = dot(rowOf.get(hit.id), vectorOf(id));
        if (s > bestScore) [best, bestScore] = [id, s];
      }
      hit.because = best === null ? null : items[rowOf.get(best)].key;
    }
    return { coldStart: false, items: hits };
  }

  function loadHistory() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "[]");
      return Array.isArray(saved) ? saved.filter((e) => rowOf.has(e.id)) : [];
    } catch (error) {
      return [];
    }
  }

  function saveHistory(history) {
    localStorage.setItem(storageKey, JSON.stringify(history.slice(-500)));
  }

  // -- the page ---------------------------------------------------------------------------

  function card(item, onPick) {
    const figure = document.createElement("figure");
    figure.className = "card";
    figure.dataset.id = item.id;
    figure.dataset.key = item.key;
    figure.dataset.label = item.label || "";
    const button = document.createElement("button");
    button.className = "pick";
    button.type = "button";
    button.title = "view " + (item.title || item.key);
    const img = document.createElement("img");
    img.src = "thumbs/" + item.id + ".jpg";
    img.alt = item.title || item.key;
    button.appendChild(img);
    button.addEventListener("click", () => onPick(item.id));
    const caption = document.createElement("figcaption");
    const title = document.createElement("a");
    title.className = "title";
    title.href = "#item=" + item.id;
    title.textContent = item.title || item.key;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = item.label || "";
    caption.append(title, label);
    if (item.because) {
      const because = document.createElement("span");
      because.className = "because";
      because.textContent = "because you viewed " + item.because;
      caption.appendChild(because);
    }
    figure.append(button, caption);
    return figure;
  }

  function render() {
    const history = loadHistory();
    const strip = document.getElementById("history");
    strip.replaceChildren(
      ...history
        .slice()
        .reverse()
        .slice(0, 30)
        .map((event) => {
          const item = items[rowOf.get(event.id)];
          const link = document.createElement("a");
          link.href = "#item=" + item.id;
          link.dataset.key = item.key;
          link.dataset.label = item.label || "";
          const img = document.createElement("img");
          img.src = "thumbs/" + item.id + ".jpg";
          img.alt = item.title || item.key;
          link.appendChild(img);
          return link;
        })
    );
    document.getElementById("history-empty").hidden = history.length > 0;
    const result = recommend(history, 12);
    document.getElementById("grid-title").textContent = result.coldStart
      ? "Popular: click what you like"
      : "More like your history";
    document.getElementById("recommendations").replaceChildren(...result.items.map((it) => card(it, pick)));
    const match = /^#item=(\d+)$/.exec(location.hash);
    const section = document.getElementById("similar-section");
    if (match && rowOf.has(Number(match[1]))) {
      const id = Number(match[1]);
      const item = items[rowOf.get(id)];
      document.getElementById("similar-of").textContent = item.title || item.key;
      document.getElementById("similar").replaceChildren(...similar(id, 12).map((it) => card(it, pick)));
      section.hidden = false;
    } else {
      section.hidden = true;
    }
  }

  function pick(id) {
    const history = loadHistory();
    history.push({ id: id, event: "view", ts: Date.now() });
    saveHistory(history);
    render();
  }

  window.RecsysStatic = { similar, recommend, profile, items, meta };
  document.getElementById("clear").addEventListener("click", () => {
    localStorage.removeItem(storageKey);
    render();
  });
  window.addEventListener("hashchange", render);
  render();
})();
