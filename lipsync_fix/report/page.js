// The review page (lipsync-fix report html): sort, filter and page the table, and draw
// the pictures of the rows on screen only. No request is made: everything is in the page.
(() => {
  "use strict";
  const body = document.querySelector("#rows tbody");
  const heads = Array.from(document.querySelectorAll("#rows th"));
  const rows = Array.from(body.rows);
  const pictures = JSON.parse(document.getElementById("pictures").textContent);
  const boxes = Array.from(document.querySelectorAll("#summary input[data-status]"));
  const filter = document.getElementById("filter");
  const size = document.getElementById("size");
  const shown = document.getElementById("shown");
  const state = { column: -1, direction: 1, page: 0 };
  let pending = 0;

  function value(row, column) {
    const kind = heads[column].dataset.sort;
    const raw = row.cells[column].dataset.v;
    if (raw === undefined) return null;
    if (kind === "text") return raw.toLowerCase();
    const number = Number(raw);
    if (!Number.isFinite(number)) return null;
    return kind === "mag" ? Math.abs(number) : number;
  }

  function compare(a, b) {
    const x = value(a, state.column), y = value(b, state.column);
    if (x === null || y === null) {  // rows without a value go last either way
      return (x === null) - (y === null) || a.dataset.i - b.dataset.i;
    }
    const order = x < y ? -1 : x > y ? 1 : 0;
    return order * state.direction || a.dataset.i - b.dataset.i;
  }

  function selected() {
    const statuses = new Set(boxes.filter((b) => b.checked).map((b) => b.dataset.status));
    const text = filter.value.trim().toLowerCase();
    return rows.filter((row) => statuses.has(row.dataset.status) &&
      (!text || row.cells[0].dataset.v.toLowerCase().includes(text)));
  }

  async function unpack(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text();
  }

  async function paint(row) {
    if (row.dataset.painted) return;
    row.dataset.painted = "1";
    const [svg, face] = pictures[Number(row.dataset.i)] || [];
    const cell = row.querySelector("div.picture");
    if (face) {
      const img = document.createElement("img");
      img.className = "face";
      img.alt = "the face crop that was scored";
      img.title = "the face crop that was scored";
      img.src = face;
      cell.appendChild(img);
    } else if (svg) {  // keeps the pictures of a page in one column
      const none = document.createElement("span");
      none.className = "face none";
      none.title = "no face crop recorded (reports of score/fix --report keep one)";
      cell.appendChild(none);
    }
    if (svg) {
      const holder = document.createElement("div");
      holder.className = "plot";
      cell.appendChild(holder);
      pending += 1;
      try {
        holder.innerHTML = await unpack(svg);
      } catch (error) {
        holder.textContent = "this browser cannot unpack the picture (" + error + ")";
      } finally {
        pending -= 1;
        if (pending === 0) document.body.dataset.painted = "1";
      }
    }
  }

  function render() {
    const chosen = selected();
    if (state.column >= 0) chosen.sort(compare);
    const per = Number(size.value);
    const pages = Math.max(1, Math.ceil(chosen.length / per));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const first = state.page * per;
    const page = chosen.slice(first, first + per);
    for (const row of rows) row.hidden = true;
    const fragment = document.createDocumentFragment();
    for (const row of page) {
      row.hidden = false;
      fragment.appendChild(row);
    }
    body.insertBefore(fragment, body.firstChild);
    shown.textContent = chosen.length
      ? `rows ${first + 1}\u2013${first + page.length} of ${chosen.length}` +
        (chosen.length < rows.length ? ` (${rows.length} in all)` : "")
      : `no rows of ${rows.length} match`;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    document.body.dataset.shown = String(page.length);
    if (!page.some((row) => !row.dataset.painted && pictures[Number(row.dataset.i)][0])) {
      if (pending === 0) document.body.dataset.painted = "1";
    } else {
      delete document.body.dataset.painted;
    }
    page.forEach(paint);
  }

  function remember() {  // the view in the address (#sort=worst&dir=desc&show=uncertain):
    const view = new URLSearchParams();  // a link, a bookmark or a reload shows it again
    if (state.column >= 0) {
      view.set("sort", heads[state.column].dataset.key);
      view.set("dir", state.direction > 0 ? "asc" : "desc");
    }
    const off = boxes.filter((b) => !b.checked);
    if (off.length) view.set("show", boxes.filter((b) => b.checked)
      .map((b) => b.dataset.status).join(","));
    if (filter.value) view.set("q", filter.value);
    if (size.value !== size.querySelector("option[selected]").value) view.set("size", size.value);
    if (state.page) view.set("page", String(state.page + 1));
    history.replaceState(null, "", "#" + view.toString());
  }

  function restore() {
    const view = new URLSearchParams(location.hash.slice(1));
    // Problems first unless the address says otherwise: sorted by verdict (out of sync,
    // uncertain, in sync, failed, ...).
    const key = view.get("sort") || "verdict";
    state.column = heads.findIndex((th) => th.dataset.key === key && th.dataset.sort);
    if (state.column < 0) state.column = heads.findIndex((th) => th.dataset.key === "verdict");
    state.direction = view.get("dir") === "desc" ? -1 : 1;
    heads[state.column].setAttribute("aria-sort",
      state.direction > 0 ? "ascending" : "descending");
    if (view.has("show")) {
      const show = new Set(view.get("show").split(","));
      boxes.forEach((b) => { b.checked = show.has(b.dataset.status); });
    }
    filter.value = view.get("q") || "";
    if (Array.from(size.options).some((o) => o.value === view.get("size"))) {
      size.value = view.get("size");
    }
    state.page = Math.max(0, (Number(view.get("page")) || 1) - 1);
  }

  function update() {
    render();
    remember();
  }

  heads.forEach((th, column) => {
    if (!th.dataset.sort) return;
    const sort = () => {
      state.direction = state.column === column ? -state.direction : 1;
      state.column = column;
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", state.direction > 0 ? "ascending" : "descending");
      update();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
  });
  boxes.forEach((box) => box.addEventListener("change", () => { state.page = 0; update(); }));
  filter.addEventListener("input", () => { state.page = 0; update(); });
  size.addEventListener("change", () => { state.page = 0; update(); });
  document.getElementById("prev").addEventListener("click", () => { state.page -= 1; update(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; update(); });
  const header = document.querySelector("header");
  const place = () => document.documentElement.style.setProperty(
    "--header-h", header.offsetHeight + "px");
  window.addEventListener("resize", place);
  place();
  restore();
  render();
  document.body.dataset.ready = "1";
})();
