// Browser upload of a model version: the file goes straight to S3 through
// presigned multipart URLs handed out by the dashboard's API; the dashboard
// never holds the bytes. See dashboard/registry/uploads.py for the server side.
//
// - Each part is sent as a slice of the File itself (a Blob), never read into
//   the page: the browser streams it from the file to the network, as a plain
//   `fetch` of the same slice would, so the page holds no part in memory and
//   copies nothing. PARALLEL parts are in flight, as many as Chromium opens
//   connections to one host.
// - The SHA-256 of the whole file is computed at the same time in a Web Worker
//   (static/js/upload-hash.js: the browser's native SHA-256 for files up to
//   512 MiB, hash-wasm chunk by chunk above), reading the file once, so hashing
//   takes no time from the page or from the uploads' own thread.
//   The server re-checks it against what S3 really holds.
// - An upload survives a dropped connection or a closed tab: localStorage
//   remembers it, and picking the same file for the same version again asks S3
//   which parts it already has and sends only the others.
(() => {
  "use strict";

  const form = document.getElementById("upload-form");
  if (!form) return;

  const PARALLEL = 6; // Chromium's limit of connections per host (HTTP/1.1)
  const HASH_CHUNK_BYTES = 8 * 1024 * 1024;
  // Files up to this size are hashed in one go by the browser's native SHA-256
  // (see upload-hash.js), which holds the file in memory meanwhile. The form
  // may lower it (data-hash-whole-file-bytes; the browser tests use 0 to take
  // the other way).
  const wholeFileBytes = () => (form.dataset.hashWholeFileBytes !== undefined
    ? Number(form.dataset.hashWholeFileBytes) : 512 * 1024 * 1024);
  const RETRIES = 3; // per part, after the first attempt
  const BACKOFF_MS = 1000; // doubled on each retry
  const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const model = form.dataset.model;
  const apiBase = form.dataset.api;
  const maxBytes = Number(form.dataset.maxBytes);
  const hashWorkerUrl = form.dataset.hashWorker;
  const hashLibraryUrl = new URL(form.dataset.hashLibrary, window.location.href).href;
  const el = (id) => document.getElementById(id);
  const ui = {
    start: el("upload-start"), cancel: el("upload-cancel"), progress: el("upload-progress"),
    bar: el("upload-bar"), stats: el("upload-stats"), note: el("upload-note"),
    error: el("upload-error"), done: el("upload-done"), hint: el("upload-resume-hint"),
  };
  let current = null; // the running upload: {controller, uploadId}

  // --- Remembered uploads (resume) -------------------------------------------
  // One entry per model and version; the file is recognised by name, size and
  // lastModified (reading it to compare hashes would cost a whole pass). If the
  // file did change anyway, the final SHA-256 will not match and validation
  // marks the version invalid: nothing wrong can be promoted.
  const storeKey = (version) => `modeldeck.upload.${model}.${version}`;
  const remembered = (version) => {
    try { return JSON.parse(localStorage.getItem(storeKey(version)) || "null"); }
    catch { return null; }
  };
  const remember = (record) => localStorage.setItem(storeKey(record.version), JSON.stringify(record));
  const forget = (version) => localStorage.removeItem(storeKey(version));
  const sameFile = (record, file) => record && record.name === file.name &&
    record.size === file.size && record.lastModified === file.lastModified;

  function showResumeHint() {
    const pending = [];
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (key && key.startsWith(`modeldeck.upload.${model}.`)) {
        const record = remembered(key.slice(`modeldeck.upload.${model}.`.length));
        if (record) pending.push(`${record.version} (${record.name})`);
      }
    }
    if (!ui.hint) return;
    ui.hint.hidden = pending.length === 0;
    ui.hint.textContent = pending.length
      ? `Unfinished upload: ${pending.join(", ")}. Pick the same file with the same version to resume.`
      : "";
  }

  // --- The dashboard's API -----------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  function csrfToken() {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (input && input.value) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(method, path, body) {
    let response;
    try {
      response = await fetch(apiBase + path, {
        method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "The dashboard did not answer: check your connection and try again.");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail
        : `the dashboard answered ${response.status} ${response.statusText}`;
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  // --- S3 part uploads -------------------------------------------------------
  // XMLHttpRequest rather than fetch: only it reports upload progress, which
  // the progress bar needs for multi-MB parts.
  function putPart(url, body, onProgress, signal) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const fail = (status, message) => {
        const error = new Error(message);
        error.status = status;
        reject(error);
      };
      if (signal.aborted) return fail(0, "aborted");
      const abort = () => xhr.abort();
      signal.addEventListener("abort", abort, { once: true });
      xhr.open("PUT", url);
      xhr.upload.onprogress = (event) => onProgress(event.loaded);
      xhr.onload = () => {
        signal.removeEventListener("abort", abort);
        const etag = xhr.getResponseHeader("ETag");
        if (xhr.status >= 200 && xhr.status < 300 && etag) return resolve(etag);
        if (xhr.status >= 200 && xhr.status < 300) {
          return fail(xhr.status, "S3 hid the part's ETag: the bucket's CORS rule must expose it");
        }
        const s3Message = /<Message>([^<]*)<\/Message>/.exec(xhr.responseText || "");
        fail(xhr.status, `S3 answered ${xhr.status}${s3Message ? `: ${s3Message[1]}` : ""}`);
      };
      xhr.onerror = () => fail(0, "the connection to S3 failed");
      xhr.onabort = () => fail(0, "aborted");
      xhr.send(body);
    });
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
  // Network errors, throttling, S3 hiccups and expired URLs are worth another
  // try; anything else (e.g. the upload was aborted elsewhere) will not heal.
  const retryable = (status) => status === 0 || status === 403 || status === 408 ||
    status === 429 || status >= 500;

  // --- Progress ---------------------------------------------------------------
  // Sizes as people read them: bytes, kB or MB (decimal units). `unitOf`
  // picks the unit from another size, so "x of y" share one unit.
  function bytesText(bytes, unitOf = bytes) {
    if (unitOf < 1e3) return `${Math.round(bytes)} B`;
    if (unitOf < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
    return `${(bytes / 1e6).toFixed(1)} MB`;
  }
  function duration(seconds) {
    if (!Number.isFinite(seconds)) return "…";
    if (seconds < 60) return `${Math.ceil(seconds)} s`;
    const minutes = Math.floor(seconds / 60);
    return minutes < 60 ? `${minutes} min ${Math.round(seconds % 60)} s`
      : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // Bytes done = finished parts + what the in-flight PUTs have sent. Speed is
  // measured over the last few seconds only, so the time left follows changes
  // in bandwidth; parts S3 had before a resume do not count as speed.
  function progressMeter(size, alreadyDone) {
    const inFlight = new Map();
    const samples = [];
    let finished = alreadyDone;
    let hashed = 0;
    const meter = {
      loaded(part, bytes) { inFlight.set(part, bytes); },
      finish(part, bytes) { inFlight.delete(part); finished += bytes; },
      hashed(bytes) { hashed = bytes; },
      render() {
        let done = finished;
        for (const bytes of inFlight.values()) done += bytes;
        const now = performance.now();
        samples.push([now, done]);
        while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
        const [t0, b0] = samples[0];
        const speed = now > t0 ? (done - b0) / ((now - t0) / 1000) : 0;
        ui.bar.value = size ? (100 * done) / size : 100;
        ui.stats.textContent = `${bytesText(done, size)} of ${bytesText(size)} · ` +
          `${bytesText(speed)}/s · ` +
          `${speed > 0 ? duration((size - done) / speed) : "…"} left` +
          (hashed < size ? ` · SHA-256 ${Math.floor((100 * hashed) / size)}%` : "");
      },
    };
    return meter;
  }

  // --- SHA-256 in a Web Worker ----------------------------------------------
  // Resolves with the hex digest of the whole file; rejects if the file cannot
  // be read. The worker stops at once when `signal` aborts.
  function hashFile(file, signal, onProgress) {
    return new Promise((resolve, reject) => {
      const worker = new Worker(hashWorkerUrl);
      const stop = () => { worker.terminate(); reject(new DOMException("cancelled", "AbortError")); };
      if (signal.aborted) return stop();
      signal.addEventListener("abort", stop, { once: true });
      const finish = () => { signal.removeEventListener("abort", stop); worker.terminate(); };
      worker.onmessage = (event) => {
        const message = event.data;
        if (message.type === "progress") return onProgress(message.bytes);
        finish();
        if (message.type === "done") resolve(message.digest);
        else reject(new Error(message.message));
      };
      worker.onerror = (event) => {
        finish();
        reject(new Error(event.message || "the hashing worker failed"));
      };
      worker.postMessage({ file, library: hashLibraryUrl, chunkBytes: HASH_CHUNK_BYTES,
        wholeFileBytes: wholeFileBytes() });
    });
  }

  // --- One upload from start (or resume) to the new version -------------------
  async function transfer(file, plan, signal) {
    const { part_size: partSize, part_count: partCount, size } = plan;
    const etags = new Map(plan.parts_done.map((p) => [p.part_number, p.etag]));
    const urls = new Map(plan.parts.map((p) => [p.part_number, p.url]));
    const doneBytes = plan.parts_done.reduce((sum, p) => sum + p.size, 0);
    const meter = progressMeter(size, doneBytes);
    const started = performance.now();
    const ticker = setInterval(meter.render, 250);
    // Stops the other PUTs once one part has failed for good, and on Cancel.
    const stop = new AbortController();
    signal.addEventListener("abort", () => stop.abort(), { once: true });

    // Fresh URLs for the parts still missing (ours expired): one request even
    // when several parts notice at the same time.
    let refreshing = null;
    const refreshUrls = () => {
      refreshing ??= api("GET", `/${plan.upload_id}`).then((fresh) => {
        for (const p of fresh.parts) urls.set(p.part_number, p.url);
      }).finally(() => { refreshing = null; });
      return refreshing;
    };

    async function send(number, body) {
      for (let attempt = 0; ; attempt++) {
        try {
          const etag = await putPart(urls.get(number), body,
            (loaded) => meter.loaded(number, loaded), stop.signal);
          meter.finish(number, body.size);
          return etag;
        } catch (error) {
          meter.loaded(number, 0);
          if (stop.signal.aborted || attempt >= RETRIES || !retryable(error.status)) {
            throw new Error(`Part ${number} of ${partCount} failed: ${error.message}`);
          }
          if (error.status === 403) await refreshUrls().catch(() => {});
          await sleep(BACKOFF_MS * 2 ** attempt, stop.signal);
        }
      }
    }

    // The whole file is hashed (parts S3 already has too: the digest covers
    // every byte) while the missing parts go up.
    let failure = null;
    const digest = hashFile(file, stop.signal, meter.hashed).catch((error) => {
      if (error.name !== "AbortError") {
        failure ??= new Error(`Could not read ${file.name}: ${error.message}`);
        stop.abort();
      }
      return null;
    });
    const running = new Set();
    try {
      for (let number = 1; number <= partCount && !failure && !stop.signal.aborted; number++) {
        if (etags.has(number)) continue;
        while (running.size >= PARALLEL) await Promise.race(running);
        if (failure || stop.signal.aborted) break;
        const start = (number - 1) * partSize;
        // A slice of the File: the browser reads it from disk as it sends.
        const body = file.slice(start, Math.min(start + partSize, size));
        const task = send(number, body).then(
          (etag) => { etags.set(number, etag); },
          (error) => { failure ??= error; stop.abort(); },
        ).finally(() => running.delete(task));
        running.add(task);
      }
      await Promise.all(running);
      await digest; // the ticker shows how far the SHA-256 has come
    } finally {
      clearInterval(ticker);
      meter.render();
    }
    const sha256 = await digest;
    if (signal.aborted) throw new DOMException("cancelled", "AbortError");
    if (failure) throw failure;
    if (!sha256) throw new Error(`Could not read ${file.name}`);
    ui.stats.textContent += " · finishing…";
    ui.cancel.hidden = true; // too late to cancel: S3 is assembling the parts
    const parts = [...etags.entries()].sort((a, b) => a[0] - b[0])
      .map(([part_number, etag]) => ({ part_number, etag }));
    const version = await api("POST", `/${plan.upload_id}/complete`, { parts, sha256 });
    const seconds = (performance.now() - started) / 1000;
    ui.stats.textContent = `${bytesText(size - doneBytes)} sent in ${duration(seconds)} ` +
      `(${bytesText((size - doneBytes) / seconds)}/s on average).`;
    return version;
  }

  // --- Form --------------------------------------------------------------------
  function readForm() {
    const data = new FormData(form);
    const version = String(data.get("version") || "").trim();
    const file = form.elements.file.files[0];
    if (!VERSION_RE.test(version)) {
      throw new Error("Version must start with a letter or digit and contain only letters, " +
        "digits, '.', '_' or '-' (at most 64 characters).");
    }
    if (!file) throw new Error("Choose the model file to upload.");
    if (file.size === 0) throw new Error(`${file.name} is empty.`);
    if (file.size > maxBytes) {
      throw new Error(
        `${file.name} is ${bytesText(file.size)}, over the limit of ${bytesText(maxBytes)}.`);
    }
    const shapeText = String(data.get("shape") || "").trim();
    const shape = shapeText.split(",").map((s) => s.trim());
    if (!shape.every((s) => /^\d+$/.test(s) && Number(s) > 0)) {
      throw new Error("Input shape must be positive whole numbers separated by commas, e.g. 3, 224, 224.");
    }
    let metrics = {};
    const metricsText = String(data.get("metrics") || "").trim();
    if (metricsText) {
      try { metrics = JSON.parse(metricsText); } catch {
        throw new Error('Metrics must be a JSON object, e.g. {"accuracy": 0.97}.');
      }
      if (metrics === null || typeof metrics !== "object" || Array.isArray(metrics) ||
          !Object.values(metrics).every((v) => typeof v === "number" && Number.isFinite(v))) {
        throw new Error('Metrics must be a JSON object of numbers, e.g. {"accuracy": 0.97}.');
      }
    }
    return {
      file,
      body: {
        version, filename: file.name, size: file.size, sha256: null,
        format: data.get("format") || null,
        input: { shape: shape.map(Number), dtype: data.get("dtype") },
        notes: String(data.get("notes") || ""), metrics,
      },
    };
  }

  function setBusy(busy) {
    ui.start.disabled = busy;
    ui.cancel.hidden = !busy;
    for (const field of form.querySelectorAll("input, select, textarea")) field.disabled = busy;
  }
  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }
  const warnOnLeave = (event) => { event.preventDefault(); event.returnValue = ""; };

  // Resume when this browser remembers an upload of this version from this very
  // file and S3 still has it open; otherwise start a new one.
  async function startOrResume(file, body) {
    const record = remembered(body.version);
    if (sameFile(record, file)) {
      try {
        const plan = await api("GET", `/${record.upload_id}`);
        // Parts S3 has are still read (for the checksum), not sent again.
        ui.note.textContent = `Resuming: ${plan.parts_done.length} of ${plan.part_count} ` +
          "parts already uploaded; re-reading them for the checksum.";
        return plan;
      } catch (error) {
        // Gone (404) or no longer open (409: completed or aborted): start over.
        if (error.status !== 404 && error.status !== 409) throw error;
        forget(body.version);
      }
    }
    let plan;
    try {
      plan = await api("POST", "", body);
    } catch (error) {
      if (error.status === 409 && record && !sameFile(record, file)) {
        throw new Error(`${error.message}. This browser started it from ${record.name}: ` +
          "pick that file to resume it.");
      }
      throw error;
    }
    remember({ upload_id: plan.upload_id, model, version: body.version, name: file.name,
      size: file.size, lastModified: file.lastModified });
    // The file's own size: part_size is only what a part holds at most.
    ui.note.textContent = plan.part_count === 1
      ? `Uploading ${bytesText(plan.size)} in 1 part.`
      : `Uploading ${bytesText(plan.size)} in ${plan.part_count} parts of up to ` +
        `${bytesText(plan.part_size)}, ${PARALLEL} at a time.`;
    return plan;
  }

  async function onSubmit(event) {
    event.preventDefault();
    if (current) return;
    ui.error.hidden = true;
    ui.done.hidden = true;
    let input;
    try {
      input = readForm();
    } catch (error) {
      return showError(error.message);
    }
    if (typeof Worker === "undefined") {
      return showError("This browser cannot run the upload's SHA-256 worker (Web Workers).");
    }
    const { file, body } = input;
    const controller = new AbortController();
    current = { controller, uploadId: null, version: body.version };
    setBusy(true);
    ui.bar.value = 0;
    ui.stats.textContent = "";
    ui.note.textContent = "Starting…";
    ui.progress.hidden = false;
    window.addEventListener("beforeunload", warnOnLeave);
    try {
      // Not given the abort signal: a cancelled request could still create
      // the upload server-side, leaving its version name reserved.
      const plan = await startOrResume(file, body);
      current.uploadId = plan.upload_id;
      if (controller.signal.aborted) throw new DOMException("cancelled", "AbortError");
      const version = await transfer(file, plan, controller.signal);
      forget(body.version);
      const url = `/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version.version)}/`;
      ui.done.replaceChildren(`Uploaded ${model} ${version.version}; it is being validated. `);
      const link = document.createElement("a");
      link.href = url;
      link.textContent = "See the version";
      ui.done.append(link);
      ui.done.hidden = false;
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) {
        await discard(current);
      } else {
        showError(error.message + (remembered(body.version)
          ? " Submit again (same file, same version) to resume." : ""));
      }
    } finally {
      window.removeEventListener("beforeunload", warnOnLeave);
      current = null;
      setBusy(false);
      showResumeHint();
    }
  }

  // Cancel: the PUTs stop at once (abort), then S3 drops the parts it holds and
  // the version name is released.
  async function discard(upload) {
    ui.note.textContent = "Cancelling…";
    try {
      // 404: already gone (aborted elsewhere, or by the janitor): same result.
      if (upload.uploadId) {
        await api("DELETE", `/${upload.uploadId}`).catch((error) => {
          if (error.status !== 404) throw error;
        });
      }
      forget(upload.version);
      ui.progress.hidden = true;
      ui.note.textContent = "";
      ui.stats.textContent = "";
      ui.done.textContent = "Upload cancelled; nothing was kept.";
      ui.done.hidden = false;
    } catch (error) {
      showError(`Could not cancel the upload: ${error.message}`);
    }
  }

  form.noValidate = true; // our checks give clearer messages, shown in #upload-error
  form.addEventListener("submit", onSubmit);
  ui.cancel.addEventListener("click", () => current && current.controller.abort());
  showResumeHint();
})();
