// Web Worker of the browser upload (upload.js): the SHA-256 of the whole file,
// read and hashed here, off the page's main thread, while the page sends the
// parts. A worker may read a file synchronously (FileReaderSync), so each chunk
// is one copy from the browser's file into this thread.
//
// Two ways, the fastest that applies:
// - a file of at most `wholeFileBytes`: read at once and hashed by the
//   browser's own SHA-256 (WebCrypto; native code, with the CPU's SHA
//   instructions where it has them: 4-5 times hash-wasm's speed here). The
//   Web Crypto API has no incremental digest, hence the size limit on the
//   memory this takes; it is only there in secure contexts (HTTPS, localhost);
// - otherwise, chunk by chunk through hash-wasm's SHA-256 (a static file from
//   npm, loaded below), in constant memory whatever the file's size.
//
// In:  {file: File, library: URL of hash-wasm's sha256.umd.min.js, chunkBytes,
//       wholeFileBytes}
// Out: {type: "progress", bytes} now and then, then {type: "done", digest} or
//      {type: "error", message}.
"use strict";

const hex = (buffer) =>
  Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

self.onmessage = async (event) => {
  const { file, library, chunkBytes, wholeFileBytes } = event.data;
  try {
    if (file.size <= wholeFileBytes && self.crypto && self.crypto.subtle) {
      const whole = new FileReaderSync().readAsArrayBuffer(file);
      const digest = await self.crypto.subtle.digest("SHA-256", whole);
      self.postMessage({ type: "progress", bytes: file.size });
      self.postMessage({ type: "done", digest: hex(digest) });
      return;
    }
    importScripts(library); // defines self.hashwasm
    const hasher = await self.hashwasm.createSHA256();
    hasher.init();
    const reader = new FileReaderSync();
    let reported = 0;
    for (let offset = 0; offset < file.size; offset += chunkBytes) {
      const end = Math.min(offset + chunkBytes, file.size);
      hasher.update(new Uint8Array(reader.readAsArrayBuffer(file.slice(offset, end))));
      // A message per 64 MiB is plenty for a progress line.
      if (end - reported >= 64 * 1024 * 1024 || end === file.size) {
        self.postMessage({ type: "progress", bytes: end });
        reported = end;
      }
    }
    self.postMessage({ type: "done", digest: hasher.digest("hex") });
  } catch (error) {
    self.postMessage({ type: "error", message: (error && error.message) || String(error) });
  }
};
