// The metrics page: every chart from one JSON answer (one GetMetricData call on
// the server), drawn with uPlot, deployment markers as dashed lines labelled
// with the version (links to the deployment), refreshed while the page is
// visible and not while it is hidden.
(() => {
  "use strict";
  const form = document.getElementById("metrics-controls");
  const chartsBox = document.getElementById("charts");
  const notesBox = document.getElementById("metrics-notes");
  const statusLine = document.getElementById("metrics-status");
  if (!form || !chartsBox || typeof uPlot === "undefined") return;

  const PALETTE = ["#2456d6", "#7c3aed", "#0891b2", "#a15c00", "#1a7f46", "#db2777"];
  const NAMED = { "2xx": "#1a7f46", "4xx": "#a15c00", "5xx": "#b42318", p50: "#0891b2", p90: "#2456d6", p99: "#7c3aed" };
  const state = {
    range: new URLSearchParams(location.search).get("range") || form.dataset.range || "1h",
    start: null,
    end: null,
    tz: localStorage.getItem("modeldeck.tz") || "local",
    timer: null,
    inFlight: null,
    data: null,
  };
  const plots = new Map(); // chart id -> {u, section, key}

  // --- Time zone -------------------------------------------------------------
  const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  function offsetLabel() {
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes >= 0 ? "+" : "-";
    const abs = Math.abs(minutes);
    return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  }
  const tzOption = document.getElementById("tz-local");
  if (tzOption) tzOption.textContent = `Local (${localZone}, ${offsetLabel()})`;
  form.elements.tz.value = state.tz;
  const fmtOptions = (withDate) => ({
    ...(withDate ? { year: "numeric", month: "2-digit", day: "2-digit" } : {}),
    hour: "2-digit", minute: "2-digit", hour12: false,
    ...(state.tz === "utc" ? { timeZone: "UTC" } : {}),
  });
  function fmtTime(ts, withDate = true) {
    return new Intl.DateTimeFormat(undefined, fmtOptions(withDate)).format(new Date(ts * 1000)) +
      (withDate ? (state.tz === "utc" ? " UTC" : "") : "");
  }

  // --- Numbers ---------------------------------------------------------------
  function fmtNumber(v) {
    if (v == null || Number.isNaN(v)) return "—";
    const abs = Math.abs(v);
    if (abs >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (abs >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (abs >= 100) return v.toFixed(0);
    if (abs >= 10) return v.toFixed(1);
    return String(Math.round(v * 100) / 100);
  }
  const withUnit = (v, unit) => (v == null ? "—" : `${fmtNumber(v)}${unit === "%" ? "%" : unit === "ms" || unit === "s" ? " " + unit : ""}`);

  // --- Deployment markers (a uPlot plugin) ----------------------------------------
  function markersPlugin(getMarkers) {
    function place(u) {
      u.over.querySelectorAll(".marker-label").forEach((el) => el.remove());
      const [min, max] = [u.scales.x.min, u.scales.x.max];
      let lastLeft = -1e9;
      let row = 0;
      for (const m of getMarkers()) {
        if (m.at < min || m.at > max) continue;
        const left = u.valToPos(m.at, "x");
        row = left - lastLeft < 90 ? (row + 1) % 3 : 0;
        lastLeft = left;
        const a = document.createElement("a");
        a.className = `marker-label kind-${m.kind}`;
        a.href = m.url;
        a.textContent = m.version;
        a.title = `Deployment #${m.id} (${m.kind.replace("_", " ")}) of ${m.version}, live ${fmtTime(m.at)}`;
        a.dataset.deployment = String(m.id);
        a.style.left = `${left}px`;
        // Near the right edge the label goes to the left of its line.
        if (left > u.over.clientWidth - 90) a.classList.add("flip");
        a.style.top = `${2 + row * 18}px`;
        u.over.appendChild(a);
      }
    }
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          const [min, max] = [u.scales.x.min, u.scales.x.max];
          ctx.save();
          ctx.lineWidth = Math.max(1, devicePixelRatio);
          ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
          for (const m of getMarkers()) {
            if (m.at < min || m.at > max) continue;
            const x = Math.round(u.valToPos(m.at, "x", true));
            ctx.strokeStyle = m.kind === "promote" ? "#d97706" : "#b42318";
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
          place(u);
        }],
      },
    };
  }

  // --- Charts ------------------------------------------------------------------
  function colorFor(label, index) {
    return NAMED[label] || PALETTE[index % PALETTE.length];
  }

  // As wide as the longest tick label, so "1.5k ms" is never clipped.
  function axisSize(u, values, axisIdx) {
    const axis = u.axes[axisIdx];
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, v) => (v.length > a.length ? v : a), "");
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 8;
  }

  function optsFor(chart, width) {
    const unit = chart.unit;
    return {
      width,
      height: 220,
      tzDate: state.tz === "utc" ? (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC") : undefined,
      cursor: { drag: { x: true, y: false }, focus: { prox: 24 } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo ?? 0), hi > 0 ? hi * 1.1 : 1] } },
      series: [
        { label: "Time", value: (u, ts) => (ts == null ? "—" : fmtTime(ts)) },
        ...chart.series.map((s, i) => ({
          label: s.label,
          stroke: colorFor(s.label, i),
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => withUnit(v, unit),
        })),
      ],
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef0f3" } },
        {
          stroke: "#6b7385",
          grid: { stroke: "#eef0f3" },
          size: axisSize,
          values: (u, splits) => splits.map((v) => withUnit(v, unit)),
        },
      ],
      plugins: [markersPlugin(() => (state.data ? state.data.markers : []))],
      hooks: {
        draw: [(u) => {
          const section = u.root.closest(".chart");
          if (section && !section.dataset.painted) section.dataset.painted = String(performance.now());
        }],
      },
    };
  }

  function dataFor(chart, timestamps) {
    return [timestamps, ...chart.series.map((s) => s.values)];
  }

  function hasData(chart) {
    return chart.series.some((s) => s.values.some((v) => v != null && v !== 0));
  }

  function section(chart) {
    const el = document.createElement("section");
    el.className = "card chart";
    el.dataset.chart = chart.id;
    const h = document.createElement("h3");
    h.textContent = chart.title;
    const unit = document.createElement("span");
    unit.className = "unit";
    h.appendChild(unit);
    el.appendChild(h);
    if (chart.help) {
      const p = document.createElement("p");
      p.className = "muted small help";
      p.textContent = chart.help;
      el.appendChild(p);
    }
    const plot = document.createElement("div");
    plot.className = "plot";
    el.appendChild(plot);
    const empty = document.createElement("p");
    empty.className = "muted small empty-note";
    el.appendChild(empty);
    return el;
  }

  function drawChart(chart, data, per) {
    const key = `${chart.series.map((s) => s.label).join("|")}|${state.tz}`;
    let entry = plots.get(chart.id);
    if (!entry) {
      const el = section(chart);
      chartsBox.appendChild(el);
      entry = { section: el, u: null, key: "" };
      plots.set(chart.id, entry);
    }
    entry.section.querySelector(".unit").textContent =
      `${chart.unit}${["requests", "responses", "examples", "errors"].includes(chart.unit) ? " " + per : ""}`;
    const empty = entry.section.querySelector(".empty-note");
    empty.textContent = chart.series.length === 0
      ? "No model version served in this range."
      : hasData(chart) ? "" : "No data in this range.";
    entry.section.dataset.empty = hasData(chart) ? "0" : "1";
    const plotBox = entry.section.querySelector(".plot");
    const width = Math.max(280, plotBox.clientWidth || 500);
    if (entry.u && entry.key === key) {
      entry.u.setData(dataFor(chart, data.timestamps));
    } else {
      if (entry.u) entry.u.destroy();
      entry.u = new uPlot(optsFor(chart, width), dataFor(chart, data.timestamps), plotBox);
      entry.key = key;
    }
  }

  let renderRun = 0;
  function render(data) {
    state.data = data;
    const run = ++renderRun;
    document.getElementById("charts-loading")?.remove();
    chartsBox.setAttribute("aria-busy", "false");
    const per = `per ${data.period >= 3600 ? data.period / 3600 + " h" : data.period / 60 + " min"}`;
    // The first charts now, the rest a pair per frame: the first one is on
    // screen before the others are built.
    const charts = [...data.charts];
    const batch = () => {
      if (run !== renderRun) return; // newer data arrived meanwhile
      for (const chart of charts.splice(0, 2)) drawChart(chart, data, per);
      if (charts.length) requestAnimationFrame(batch);
    };
    batch();
    notesBox.replaceChildren(...data.notes.map((text) => {
      const p = document.createElement("p");
      p.className = "msg small";
      p.textContent = text;
      return p;
    }));
    const when = new Date().toLocaleTimeString();
    statusLine.classList.remove("error");
    statusLine.textContent = `Updated ${when}${data.cached ? " (shared answer)" : ""}` +
      (state.range !== "custom" && data.refresh ? `; refreshes every ${data.refresh} s while this page is visible.` : ".");
  }

  // --- Loading and refreshing ------------------------------------------------------
  function dataUrl() {
    const params = new URLSearchParams();
    if (state.range === "custom" && state.start && state.end) {
      params.set("start", state.start.toISOString());
      params.set("end", state.end.toISOString());
    } else {
      params.set("range", state.range === "custom" ? "1h" : state.range);
    }
    return `${form.dataset.url}?${params}`;
  }

  async function load() {
    clearTimeout(state.timer);
    if (state.inFlight) state.inFlight.abort();
    const controller = new AbortController();
    state.inFlight = controller;
    statusLine.textContent = "Loading…";
    try {
      const response = await fetch(dataUrl(), { credentials: "same-origin", signal: controller.signal });
      const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
      if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
      render(body);
      schedule(nextRefresh(body));
    } catch (error) {
      if (error.name === "AbortError") return;
      statusLine.classList.add("error");
      statusLine.textContent = `Could not load the metrics: ${error.message}. Retrying in 30 s.`;
      schedule(30);
    } finally {
      if (state.inFlight === controller) state.inFlight = null;
    }
  }

  // Seconds until the next refresh: when the answer's refresh slot ends (the
  // server rounds a range's end up to it), so every open page asks for the
  // next slot together and they share one CloudWatch call; a little jitter
  // spreads them. Timed by the server's clock, not this one.
  function nextRefresh(data) {
    if (!data.refresh) return 0;
    const untilSlotEnd = data.end - data.server_time;
    const jitter = 0.5 + Math.random() * 2;
    return untilSlotEnd > 0 && untilSlotEnd <= data.refresh ? untilSlotEnd + jitter : data.refresh;
  }

  function schedule(seconds) {
    clearTimeout(state.timer);
    if (!seconds || document.visibilityState !== "visible") return;
    if (state.range === "custom" && !(state.data && state.data.refresh)) return;
    state.timer = setTimeout(load, seconds * 1000);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") load();
    else {
      clearTimeout(state.timer);
      statusLine.textContent = "Paused while the page is hidden.";
    }
  });

  // --- Controls ------------------------------------------------------------------
  function showRange() {
    form.querySelectorAll(".range-buttons button").forEach((b) => {
      b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
    });
    form.classList.toggle("custom", state.range === "custom");
    const params = new URLSearchParams(location.search);
    params.set("range", state.range);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  function parseInput(value) {
    if (!value) return null;
    const date = new Date(state.tz === "utc" ? `${value}Z` : value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  form.querySelector(".range-buttons").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-range]");
    if (!button) return;
    state.range = button.dataset.range;
    showRange();
    if (state.range !== "custom") load();
    else if (state.data) {
      const toInput = (ts) => {
        const d = new Date(ts * 1000);
        const shifted = state.tz === "utc" ? d : new Date(d.getTime() - d.getTimezoneOffset() * 60000);
        return shifted.toISOString().slice(0, 16);
      };
      form.elements.start.value = toInput(state.data.start);
      form.elements.end.value = toInput(state.data.end);
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const start = parseInput(form.elements.start.value);
    const end = parseInput(form.elements.end.value);
    if (!start || !end || end <= start) {
      statusLine.classList.add("error");
      statusLine.textContent = "Pick a start and an end after it.";
      return;
    }
    state.start = start;
    state.end = end;
    load();
  });

  form.elements.tz.addEventListener("change", () => {
    state.tz = form.elements.tz.value;
    localStorage.setItem("modeldeck.tz", state.tz);
    if (state.data) render(state.data);
  });

  window.addEventListener("resize", () => {
    for (const entry of plots.values()) {
      if (!entry.u) continue;
      const width = Math.max(280, entry.section.querySelector(".plot").clientWidth);
      if (Math.abs(width - entry.u.width) > 2) entry.u.setSize({ width, height: 220 });
    }
  });

  if (!["1h", "6h", "24h", "7d"].includes(state.range)) state.range = "1h";
  showRange();
  load();
})();
