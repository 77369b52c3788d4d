// Web Worker of the browser upload (upload.js): the SHA-256 of the whole file,
// read and hashed here, off the page's main thread, while the page sends the
// parts. A worker may read a file synchronously (FileReaderSync), so each chunk
// is one copy from the browser's file into this thread, straight into the
// hasher (hash-wasm's SHA-256, a static file from npm, loaded below).
//
// In:  {file: File, library: URL of hash-wasm's sha256.umd.min.js, chunkBytes}
// Out: {type: "progress", bytes} now and then, then {type: "done", digest} or
//      {type: "error", message}.
"use strict";

self.onmessage = async (event) => {
  const { file, library, chunkBytes } = event.data;
  try {
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
