// The logs page: "Older lines" pages back, live tail polls for new lines every
// two seconds (pausable, and paused while the page is hidden). Rows are HTML
// rendered by the server (escaped by Django's templates).
(() => {
  "use strict";
  const table = document.getElementById("log-table");
  const body = document.getElementById("log-rows");
  if (!table || !body) return;
  const olderButton = document.getElementById("older");
  const toggle = document.getElementById("tail-toggle");
  const status = document.getElementById("tail-status");
  const rowsUrl = table.dataset.rowsUrl;
  const baseQuery = new URLSearchParams(table.dataset.query || "");
  baseQuery.delete("next");
  const TAIL_SECONDS = 2;
  const MAX_ROWS = 5000;
  let cursor = Number(table.dataset.tailAfter || 0);
  let paused = table.dataset.live !== "1";
  let timer = null;
  let busy = false;

  function rows(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return [...template.content.querySelectorAll("tr")];
  }

  function seenAtCursor() {
    return [...body.querySelectorAll(`tr[data-ts="${cursor}"]`)].map((tr) => tr.dataset.id).join(",");
  }

  async function tail() {
    timer = null;
    if (paused || busy || document.visibilityState !== "visible") return;
    busy = true;
    const params = new URLSearchParams(baseQuery);
    params.set("after", String(cursor));
    params.set("seen", seenAtCursor());
    try {
      const response = await fetch(`${rowsUrl}?${params}`, { credentials: "same-origin" });
      const text = await response.text();
      if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
      const fresh = rows(text);
      if (fresh.length) {
        body.querySelector("tr.empty")?.remove();
        for (const tr of fresh) tr.classList.add("new");
        body.prepend(...fresh);
        for (const tr of fresh) {
          const ts = Number(tr.dataset.ts || 0);
          if (ts > cursor) cursor = ts;
        }
        while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
      }
      status.textContent = `Live: checked ${new Date().toLocaleTimeString()}` +
        (fresh.length ? `, ${fresh.filter((tr) => tr.dataset.id).length} new` : "") + ".";
    } catch (error) {
      status.textContent = `Live tail failed: ${error.message}. Retrying.`;
    } finally {
      busy = false;
      if (!paused) timer = setTimeout(tail, TAIL_SECONDS * 1000);
    }
  }

  function setPaused(value) {
    paused = value;
    if (toggle) {
      toggle.textContent = paused ? "Resume live tail" : "Pause live tail";
      toggle.setAttribute("aria-pressed", String(!paused));
    }
    clearTimeout(timer);
    timer = null;
    if (paused) status.textContent = "Live tail paused.";
    else tail();
  }

  toggle?.addEventListener("click", () => setPaused(!paused));

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !paused && !timer) tail();
  });

  // "Older lines" is a link (it works without JavaScript); here it appends instead.
  olderButton?.addEventListener("click", async (event) => {
    const token = olderButton.dataset.next;
    if (!token) return;
    event.preventDefault();
    if (olderButton.getAttribute("aria-busy") === "true") return;
    olderButton.setAttribute("aria-busy", "true");
    const params = new URLSearchParams(baseQuery);
    params.set("next", token);
    try {
      const response = await fetch(`${rowsUrl}?${params}`, { credentials: "same-origin" });
      const text = await response.text();
      if (!response.ok) throw new Error(text || `HTTP ${response.status}`);
      const older = rows(text).filter((tr) => !tr.classList.contains("empty"));
      body.append(...older);
      const next = response.headers.get("X-Next-Token") || "";
      olderButton.dataset.next = next;
      olderButton.hidden = !next;
      const link = new URLSearchParams(baseQuery);
      link.set("next", next);
      olderButton.href = `?${link}`;
    } catch (error) {
      status.textContent = `Could not load older lines: ${error.message}`;
    } finally {
      olderButton.removeAttribute("aria-busy");
    }
  });

  // The stream picker's streams, loaded after the first screen of lines.
  const picker = document.getElementById("stream-picker");
  if (picker && picker.dataset.streamsUrl) {
    fetch(picker.dataset.streamsUrl, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : null))
      .then((streams) => {
        if (!streams) return;
        const current = picker.dataset.current;
        for (const group of ["application", "service"]) {
          const box = picker.querySelector(`optgroup[data-group="${group}"]`);
          for (const name of streams[group] || []) {
            if (name === current) {
              picker.querySelector(`option[value="${CSS.escape(name)}"]:not(optgroup option)`)?.remove();
            }
            const option = new Option(name, name, false, name === current);
            box.appendChild(option);
          }
        }
      })
      .catch(() => {});
  }

  if (!paused) timer = setTimeout(tail, TAIL_SECONDS * 1000);
})();
