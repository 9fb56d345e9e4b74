"use strict";
// Drives the official vod-js-sdk-v6 (unmodified) in Node 20 against vodlocal.
// Browser shims per docs/vod-js-sdk.md §4: an XMLHttpRequest over node:http that sends Tencent's real
// hostnames to the emulator while keeping the original Host header, a file-backed localStorage (so resume
// works across processes), window.DOMParser/performance, FileReader.
// Prints exactly one JSON line on stdout: {"ok":true,"result":…} | {"ok":false,"error":…} | {"ok":false,"cancelled":true}.
//
// Environment:
//   EMU            emulator base URL (default http://127.0.0.1:8001)
//   SIGNING_URL    signature service base URL; POST /uploads then POST /uploads/{id}/signature
//   AUTH_TOKEN     bearer token for the signature service
//   UPLOAD_ID      reuse an existing upload intent (every call mints via /uploads/{id}/signature)
//   REUSE_SIGNATURE=1  fetch one signature and return it for every call (to provoke "duplicate vod signature")
//   FILE, COVER    paths of the media file and the optional cover; FILE_ID: replace the cover of this file
//   CHUNK_SIZE, PARALLEL  COS chunkSize / chunkParallelLimit
//   CANCEL_AFTER_PARTS=N  cancel after N UploadPart successes (resume later with the same LS_FILE)
//   PART_DELAY_MS  delay each UploadPart (slow network: lets short-lived COS credentials run out mid-upload)
//   LS_FILE        JSON file backing localStorage; RACE=0 disables the region race; REPORT=1 enables reporting
//   TIMEOUT_MS     overall timeout (default 120000); RETRY_DELAY_MS: the SDK's retryDelay (default 200)
const http = require("http");
const fs = require("fs");
const path = require("path");

const env = process.env;
const EMU = new URL(env.EMU || "http://127.0.0.1:8001");
const REDIRECT = /^(vod2\.qcloud\.com|vod2\.dnsv1\.com|vodreport\.qcloud\.com)$|\.(myqcloud\.com|tencentcos\.cn)$/;
const cancelAfter = env.CANCEL_AFTER_PARTS ? Number(env.CANCEL_AFTER_PARTS) : 0;
let partsDone = 0;
let halted = false;
let onHalt = null;
const partDelay = Number(env.PART_DELAY_MS || 0);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

class XHR {
  constructor() {
    Object.assign(this, { readyState: 0, status: 0, statusText: "", response: null, responseText: "",
      responseType: "", timeout: 0, withCredentials: false, _h: {}, _rh: {}, upload: {} });
  }
  open(method, url) { this._m = method; this._url = url; this.readyState = 1; }
  setRequestHeader(k, v) { this._h[k] = String(v); }
  getAllResponseHeaders() { return Object.entries(this._rh).map(([k, v]) => `${k}: ${v}`).join("\r\n"); }
  getResponseHeader(k) { return this._rh[k.toLowerCase()] ?? null; }
  abort() { this._aborted = true; if (this._req) this._req.destroy(); if (this.onabort) this.onabort({}); }
  _done(ev) {
    this.readyState = 4;
    if (ev === "onload" && this._m === "PUT" && /[?&]partNumber=/.test(this._url) && this.status === 200) {
      partsDone += 1;
      if (cancelAfter && partsDone >= cancelAfter && !halted) { halted = true; onHalt && onHalt(); return; }
    }
    if (halted) return;
    if (this.onreadystatechange) this.onreadystatechange();
    if (this[ev]) this[ev]({ target: this });
    if (this.onloadend) this.onloadend({ target: this });
  }
  async send(body) {
    if (halted) return;
    if (partDelay && this._m === "PUT" && /[?&]partNumber=/.test(this._url)) await sleep(partDelay);
    const buf = body instanceof Blob ? Buffer.from(await body.arrayBuffer()) : Buffer.from(body || "");
    const u = new URL(this._url);
    const local = REDIRECT.test(u.hostname);
    if (!local) throw new Error(`harness: refusing to contact ${u.host}`);
    const req = this._req = http.request({
      method: this._m, hostname: EMU.hostname, port: EMU.port, path: u.pathname + u.search,
      headers: { Host: u.host, "Content-Length": buf.length, ...this._h },
    }, (res) => {
      const chunks = [];
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => {
        if (this._aborted) return;
        const data = Buffer.concat(chunks);
        Object.assign(this, { status: res.statusCode, statusText: res.statusMessage, _rh: res.headers,
          responseText: data.toString() });
        this.response = this.responseType === "arraybuffer"
          ? data.buffer.slice(data.byteOffset, data.byteOffset + data.length)
          : this.responseType === "blob" ? new Blob([data]) : this.responseText;
        this._done("onload");
      });
    });
    if (this.timeout) req.setTimeout(this.timeout, () => { req.destroy(); this._done("ontimeout"); });
    req.on("error", () => { if (!this._aborted) this._done("onerror"); });
    req.end(buf, () => this.upload.onprogress
      && this.upload.onprogress({ lengthComputable: true, loaded: buf.length, total: buf.length }));
  }
}

class FileReaderShim {
  _r(blob, f) { blob.arrayBuffer().then((a) => { this.result = f(a); if (this.onload) this.onload({ target: this }); }); }
  readAsArrayBuffer(blob) { this._r(blob, (a) => a); }
  readAsBinaryString(blob) { this._r(blob, (a) => Buffer.from(a).toString("latin1")); }
}

function fileStorage(file) {
  let data = {};
  if (file && fs.existsSync(file)) data = JSON.parse(fs.readFileSync(file, "utf8") || "{}");
  const save = () => { if (file) fs.writeFileSync(file, JSON.stringify(data)); };
  return {
    getItem: (k) => (Object.prototype.hasOwnProperty.call(data, k) ? data[k] : null),
    setItem: (k, v) => { data[k] = String(v); save(); },
    removeItem: (k) => { delete data[k]; save(); },
    clear: () => { data = {}; save(); },
  };
}

Object.assign(globalThis, {
  XMLHttpRequest: XHR,
  FileReader: FileReaderShim,
  localStorage: fileStorage(env.LS_FILE),
  navigator: globalThis.navigator ?? { userAgent: "vodlocal-harness" },
  window: {
    DOMParser: function DOMParser() {},
    performance: {
      mark: (n) => performance.mark(String(n)),
      measure: (n, a, b) => performance.measure(String(n), String(a), String(b)),
      getEntriesByName: (n) => performance.getEntriesByName(String(n)),
    },
  },
});

const TcVod = require("vod-js-sdk-v6").default; // after the shims: axios picks its XHR adapter at require time

// --- signatures, always over HTTP from the signing service ---------------------------------------------
const signatures = [];
let uploadId = env.UPLOAD_ID || null;
let reused = null;

async function signingCall(urlPath, body) {
  const res = await fetch(new URL(urlPath, env.SIGNING_URL), {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${env.AUTH_TOKEN || ""}` },
    body: JSON.stringify(body || {}),
  });
  const text = await res.text();
  if (!res.ok) throw Object.assign(new Error(`signing service ${urlPath}: HTTP ${res.status} ${text}`), { code: res.status });
  return JSON.parse(text);
}

async function getSignature() {
  if (env.REUSE_SIGNATURE === "1" && reused) { signatures.push(reused); return reused; }
  let reply;
  if (!uploadId) {
    reply = await signingCall("uploads", { title: env.TITLE || path.basename(env.FILE || "clip"),
      fileName: path.basename(env.FILE || env.COVER || "clip.mp4") });
    uploadId = reply.uploadId;
  } else {
    reply = await signingCall(`uploads/${encodeURIComponent(uploadId)}/signature`, {});
  }
  reused = reply.signature;
  signatures.push(reply.signature);
  return reply.signature;
}

// --- the upload ---------------------------------------------------------------------------------------
const TYPES = { mp4: "video/mp4", mov: "video/quicktime", jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png" };
function fileFrom(p) {
  const ext = path.extname(p).slice(1).toLowerCase();
  return new File([fs.readFileSync(p)], path.basename(p), { type: TYPES[ext] || "application/octet-stream" });
}

function summary() {
  return { uploadId, signatureCalls: signatures.length, distinctSignatures: new Set(signatures).size, partsDone };
}

async function main() {
  const tcVod = new TcVod({ getSignature, allowReport: env.REPORT === "1", enableRaceRegion: env.RACE !== "0" });
  const params = {};
  if (env.FILE) params.mediaFile = fileFrom(env.FILE);
  if (env.COVER) params.coverFile = fileFrom(env.COVER);
  if (env.FILE_ID) params.fileId = env.FILE_ID;
  if (env.CHUNK_SIZE) params.chunkSize = Number(env.CHUNK_SIZE);
  if (env.PARALLEL) params.chunkParallelLimit = Number(env.PARALLEL);
  params.retryDelay = Number(env.RETRY_DELAY_MS || 200);
  const started = Date.now();
  const uploader = tcVod.upload(params);
  const halt = new Promise((resolve) => { onHalt = () => { uploader.cancel(); resolve("cancelled"); }; });
  const timeout = new Promise((_, reject) => setTimeout(
    () => reject(Object.assign(new Error("harness timeout"), { code: "TIMEOUT" })), Number(env.TIMEOUT_MS || 120000)));
  const outcome = await Promise.race([uploader.done(), halt, timeout]);
  if (outcome === "cancelled") return { ok: false, cancelled: true, ...summary() };
  return { ok: true, result: outcome, vodSessionKey: uploader.vodSessionKey, ms: Date.now() - started, ...summary() };
}

main().then(
  (out) => { emit(out); process.exit(0); },
  (err) => {
    emit({ ok: false, error: { message: String(err && err.message), code: err && err.code }, ...summary() });
    process.exit(0);
  },
);
