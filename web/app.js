// The reference upload page: sign in, upload a video (and a cover) with Tencent's Web SDK, list "My videos".
// No build step: a browser runs this file as it is. The SDK (global TcVod) is loaded by index.html.

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const config = await (await fetch("config.json", { cache: "no-store" })).json();
const API = config.api.replace(/\/+$/, "");

// ---------------------------------------------------------------------------------------------- sign-in
const TOKEN_KEY = "vodupload.token";
let token = sessionStorage.getItem(TOKEN_KEY);

function claimsOf(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
  } catch {
    return {};
  }
}

const user = () => (token ? claimsOf(token).username || claimsOf(token).sub : null);

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Cloud stages: the OIDC provider's sign-in page (Cognito's hosted UI, or any issuer with a discovery
// document), authorization code with PKCE: a public client, so no secret lives in the page.
const oidc = {
  redirectUri: () => location.origin + location.pathname,
  async endpoints() {
    const r = await fetch(`${config.signIn.issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`);
    if (!r.ok) throw new Error(`the sign-in provider's discovery document answered ${r.status}`);
    return r.json();
  },
  async start() {
    const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    sessionStorage.setItem("vodupload.pkce", JSON.stringify({ verifier, state }));
    const url = new URL((await oidc.endpoints()).authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: "code", client_id: config.signIn.clientId, redirect_uri: oidc.redirectUri(),
      scope: config.signIn.scope || "openid", state, code_challenge: base64url(new Uint8Array(digest)),
      code_challenge_method: "S256",
    });
    location.assign(url);
  },
  async finish() {
    const params = new URLSearchParams(location.search);
    if (!params.has("code")) return;
    const saved = JSON.parse(sessionStorage.getItem("vodupload.pkce") || "null");
    sessionStorage.removeItem("vodupload.pkce");
    history.replaceState(null, "", oidc.redirectUri());
    if (!saved || saved.state !== params.get("state")) throw new Error("sign-in answer does not match its request");
    const r = await fetch((await oidc.endpoints()).token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", client_id: config.signIn.clientId, code: params.get("code"),
        redirect_uri: oidc.redirectUri(), code_verifier: saved.verifier,
      }),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(`sign-in failed: ${body.error || r.status}`);
    // The API accepts a Cognito access token (its client_id is the audience) or a token whose aud is ours.
    signedIn(body[config.signIn.tokenType || "access_token"]);
  },
};

// The local stage (make dev only): "sign in as <name>", a token minted by the dev stack.
async function localSignIn(name) {
  const r = await fetch(config.signIn.url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user: name }),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.message);
  signedIn(body.token);
}

function signedIn(newToken) {
  token = newToken;
  sessionStorage.setItem(TOKEN_KEY, token);
  render();
}

// The session ended (signed out, or the API no longer accepts the token): the page keeps nothing of it on
// screen, and the upload in progress stops.
function endSession() {
  clearUploadForm();
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  render();
}

// Signing out also forgets what this user could resume, so that a shared browser offers nothing of theirs to
// the next user. A session that merely expired keeps it for the same user's next sign-in (no one else's
// upload resumes it, see startUpload).
async function signOut() {
  const leaving = user();
  if (current) stopUpload(current); // first: a stopped upload records nothing more
  await forgetUploadsOf(leaving);
  endSession();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ----------------------------------------------------------------------------------------------- upload
// getSignature, as docs/api.md tells app developers: every VOD request the SDK makes gets a fresh one-time
// signature for the same upload intent. One per upload, holding that upload's intent and its user's token, so
// that no other upload, user or intent ever signs for it. A stopped upload (paused, cancelled, signed out) gets
// no more signatures: the SDK may still be mid-request when its task is cancelled.
function signerFor(upload) {
  return async () => {
    if (upload.stopped) throw new Error("the upload was stopped");
    const url = upload.uploadId ? `${API}/uploads/${upload.uploadId}/signature` : `${API}/uploads`;
    const r = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${upload.bearer}` } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.message);
    if (upload.cancelled && !upload.uploadId) {
      upload.uploadId = body.uploadId; // cancelled while its intent was being created: cancel that too
      cancelIntent(upload);
    }
    if (upload.stopped) throw new Error("the upload was stopped");
    if (!upload.uploadId) {
      upload.uploadId = body.uploadId;
      rememberIntent(upload);
    }
    return body.signature;
  };
}

const tcVod = new TcVod.default({}); // each upload brings its own getSignature
// The upload on screen: {user, bearer, name, uploadId, vodSessionKey, uploader, stopped, cancelled}.
let current = null;
let speed = null; // {loaded, at, bytesPerSecond}

// The SDK resumes an upload (after a pause, a closed tab or a reload) from localStorage, under a key made of
// the files' names and sizes only: whoever chooses files of the same names and sizes next, in this browser,
// would resume that session with signatures of their own. So the page keeps, per user and under the same
// name, the intent each upload is signed for and the SDK session it opened, and lets the SDK resume a session
// only for the user whose intent opened it.
const sessionName = (file, cover) => `${file.name}_${file.size};` + (cover ? `${cover.name}_${cover.size};` : "");
const INTENTS_KEY = "vodupload.intents"; // {<user>: {<session name>: {uploadId, vodSessionKey}}}
const allIntents = () => JSON.parse(localStorage.getItem(INTENTS_KEY) || "{}");
const intentsOf = (userName) => allIntents()[userName] || {};

function saveIntentsOf(userName, intents) {
  const { [userName]: _, ...others } = allIntents();
  const kept = Object.keys(intents).length ? { ...others, [userName]: intents } : others;
  localStorage.setItem(INTENTS_KEY, JSON.stringify(kept));
}

function rememberIntent(upload) {
  const { uploadId, vodSessionKey } = upload;
  saveIntentsOf(upload.user, { ...intentsOf(upload.user), [upload.name]: { uploadId, vodSessionKey } });
}

// The session the SDK has opened (after its first Apply), kept with the intent it was signed for.
function rememberSession(upload) {
  const opened = upload.uploader && upload.uploader.vodSessionKey;
  if (!opened || opened === upload.vodSessionKey) return;
  upload.vodSessionKey = opened;
  rememberIntent(upload);
}

// Where the SDK keeps a session to resume ("webugc_" + sha1 of the session name).
async function sdkSessionKey(name) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", new TextEncoder().encode(name)));
  return "webugc_" + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function forgetUpload(upload) {
  const { [upload.name]: _, ...rest } = intentsOf(upload.user);
  saveIntentsOf(upload.user, rest);
  localStorage.removeItem(await sdkSessionKey(upload.name));
}

// Signing out leaves nothing to resume for whoever uses this browser next: the user's intents, the SDK
// sessions they opened, and COS's cache of multipart uploads (which only serves resuming).
async function forgetUploadsOf(userName) {
  for (const session of Object.keys(intentsOf(userName))) localStorage.removeItem(await sdkSessionKey(session));
  saveIntentsOf(userName, {});
  localStorage.removeItem("cos_sdk_upload_cache");
}

const chosen = () => ({ file: $("file").files[0], cover: $("cover").files[0] });

function setButtons(state) {
  const ready = Boolean(chosen().file);
  $("upload").disabled = !(ready && (state === "idle" || state === "done" || state === "failed"));
  $("pause").disabled = state !== "uploading";
  $("resume").disabled = !(ready && state === "paused");
  $("cancel").disabled = !(state === "uploading" || state === "paused");
  $("file").disabled = $("cover").disabled = state === "uploading" || state === "paused";
  $("progress").dataset.state = state;
}

const mib = (bytes) => (bytes / 1048576).toFixed(1);

function showProgress(p) {
  const now = performance.now();
  if (!speed || p.loaded < speed.loaded) speed = { loaded: p.loaded, at: now, bytesPerSecond: 0 };
  else if (now - speed.at >= 250) {
    // Smoothed over the last samples, so that one fast or slow part does not swing the estimate.
    const latest = ((p.loaded - speed.loaded) * 1000) / (now - speed.at);
    speed = { loaded: p.loaded, at: now, bytesPerSecond: speed.bytesPerSecond ? 0.6 * speed.bytesPerSecond + 0.4 * latest : latest };
  }
  const percent = Math.floor(p.percent * 100);
  const eta = speed.bytesPerSecond > 0 ? Math.ceil((p.total - p.loaded) / speed.bytesPerSecond) : null;
  $("progress").dataset.percent = String(percent);
  $("progress").querySelector("progress").value = percent;
  $("progress").querySelector(".progress-text").textContent =
    `${percent}% · ${mib(p.loaded)} of ${mib(p.total)} MiB · ${mib(speed.bytesPerSecond)} MiB/s · ` +
    (eta === null ? "estimating…" : `${eta} s left`);
}

function setStatus(text) {
  $("progress").querySelector(".progress-text").textContent = text;
}

async function startUpload() {
  const { file, cover } = chosen();
  const upload = { user: user(), bearer: token, name: sessionName(file, cover), uploader: null, stopped: false };
  const saved = intentsOf(upload.user)[upload.name];
  Object.assign(upload, saved);
  if (current) stopUpload(current);
  current = upload;
  speed = null;
  showError("");
  delete $("progress").dataset.reported;
  delete $("progress").dataset.cancelled;
  setButtons("uploading");
  // The SDK would resume any session stored under these names and sizes, whoever opened it: it may resume only
  // the one this user's intent opened. Any other is dropped, and the SDK opens a new one for this intent.
  const sdkKey = await sdkSessionKey(upload.name);
  if (!saved || localStorage.getItem(sdkKey) !== saved.vodSessionKey) localStorage.removeItem(sdkKey);
  if (upload.stopped) return; // paused, cancelled or signed out meanwhile
  upload.uploader = tcVod.upload({ mediaFile: file, coverFile: cover, ...config.upload, getSignature: signerFor(upload) });
  upload.uploader.on("media_progress", (p) => {
    if (upload.stopped) return;
    rememberSession(upload);
    showProgress(p);
  });
  upload.uploader.done().then(
    async (result) => {
      await forgetUpload(upload);
      if (upload.stopped) return;
      setButtons("done");
      setStatus(`Uploaded: ${file.name} (file ${result.fileId}). Recording it…`);
      try {
        const reported = await reportDone(upload, result.fileId);
        $("progress").dataset.reported = reported.outcome;
        setStatus(`Uploaded: ${file.name} (file ${result.fileId}), in your videos below.`);
      } catch (error) {
        $("progress").dataset.reported = "failed";
        setStatus(`Uploaded: ${file.name} (file ${result.fileId}). VOD reports it to the backend; it appears below.`);
      }
      refreshVideos();
    },
    (error) => {
      if (upload.stopped) return;
      setButtons("failed");
      showError(`Upload failed: ${error.message || error}`);
    },
  );
}

// The SDK's success carries the FileId: reporting it attributes the upload now rather than when VOD's event
// reaches the backend (docs/sdk-wiring.md, "Report the upload done"). A failed report loses nothing, the event still
// attributes the upload; a 503 is retried after the time the API asks for.
async function reportDone(upload, fileId) {
  for (let attempt = 1; ; attempt++) {
    const r = await fetch(`${API}/uploads/${upload.uploadId}/complete`, {
      method: "POST",
      headers: { Authorization: `Bearer ${upload.bearer}` },
      body: JSON.stringify({ fileId }),
    });
    const body = await r.json();
    if (r.ok) return body;
    if (r.status !== 503 || attempt === 3) throw new Error(body.message);
    await new Promise((resolve) => setTimeout(resolve, 1000 * (body.retryAfter || 2)));
  }
}

function stopUpload(upload) {
  upload.stopped = true;
  if (upload.uploader) upload.uploader.cancel();
}

// The SDK has no pause: cancelling keeps what it needs to resume (its localStorage entry, the parts in COS),
// and resuming is a new upload of the same files, which sends only the parts COS does not have.
function pause() {
  rememberSession(current);
  stopUpload(current);
  setButtons("paused");
  setStatus(`Paused at ${$("progress").dataset.percent}%.`);
}

// Cancel stops the SDK, forgets what it could resume, then cancels the upload's intent: the backend frees its slot,
// signs no more for it and does not attribute a file VOD still receives for it (docs/api.md, DELETE
// /uploads/{uploadId}). If the SDK had finished first and the upload is attributed, the cancel is too late: the
// video stays, and is listed below. `progress`'s `data-cancelled` is the outcome: `cancelled`, `too_late`, `failed`.
async function cancel() {
  const upload = current;
  current = null;
  upload.cancelled = true;
  stopUpload(upload);
  await forgetUpload(upload);
  resetProgress();
  setButtons("idle");
  setStatus("Cancelling…");
  const outcome = await cancelIntent(upload);
  $("progress").dataset.cancelled = outcome;
  setStatus(
    {
      cancelled: "Cancelled.",
      too_late: "Too late to cancel: the upload had already finished. It is in your videos below.",
      failed: "Stopped, but the server was not told: the upload stays open until its upload window ends.",
    }[outcome],
  );
  if (outcome === "too_late") refreshVideos();
}

// DELETE /uploads/{uploadId}, a 503 retried after the time the API asks for. An upload whose intent was never
// created (cancelled before its first signature) has nothing to cancel.
async function cancelIntent(upload) {
  if (!upload.uploadId) return "cancelled";
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await fetch(`${API}/uploads/${encodeURIComponent(upload.uploadId)}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${upload.bearer}` },
      });
      const body = await r.json();
      if (r.ok) return "cancelled";
      if (r.status === 409 && body.reason === "already_completed") return "too_late";
      if (r.status !== 503 || attempt === 3) throw new Error(body.message);
      await new Promise((resolve) => setTimeout(resolve, 1000 * (body.retryAfter || 2)));
    } catch (error) {
      showError(`Cancel failed: ${error.message}`);
      return "failed";
    }
  }
}

function resetProgress() {
  $("progress").dataset.percent = "0";
  delete $("progress").dataset.reported;
  delete $("progress").dataset.cancelled;
  $("progress").querySelector("progress").value = 0;
  setStatus("");
}

function clearUploadForm() {
  if (current) stopUpload(current);
  current = null;
  $("file").value = $("cover").value = "";
  $("resumable").hidden = true;
  resetProgress();
  setButtons("idle");
}

function filesChosen() {
  const { file, cover } = chosen();
  $("resumable").hidden = !(file && intentsOf(user())[sessionName(file, cover)]);
  $("resumable").textContent = "An earlier upload of this file was interrupted: Upload resumes it.";
  setButtons("idle");
}

// ------------------------------------------------------------------------------------------- my videos
function statusOf(video) {
  if (!video.processing) return video.procedure ? "uploaded, waiting for processing" : "uploaded";
  return `processing: ${video.processing.status}`;
}

function videoItem(video) {
  const item = document.createElement("li");
  item.dataset.testid = "video";
  item.dataset.fileId = video.fileId;
  const player = document.createElement("video");
  player.controls = true;
  player.preload = "metadata";
  player.src = video.mediaUrl;
  if (video.coverUrl) player.poster = video.coverUrl;
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = video.title || video.fileName || video.name || video.fileId;
  const status = document.createElement("div");
  status.className = "status";
  status.dataset.testid = "video-status";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `file ${video.fileId} · ${mib(video.size || 0)} MiB`;
  item.append(player, title, status, meta);
  return item;
}

async function refreshVideos() {
  if (!token) return;
  let body;
  try {
    const r = await fetch(`${API}/videos?limit=50`, { headers: { Authorization: `Bearer ${token}` } });
    body = await r.json();
    if (r.status === 401) return endSession();
    if (!r.ok) throw new Error(body.message);
  } catch (error) {
    // A TypeError here is the browser refusing the answer: the API does not allow this page's origin (CORS).
    showError(`Could not load your videos from ${API}: ${error.message}`);
    return;
  }
  const list = $("videos");
  const items = new Map([...list.children].map((item) => [item.dataset.fileId, item]));
  // Update in place: replacing a <video> would stop it playing.
  body.videos.forEach((video, index) => {
    const item = items.get(video.fileId) || videoItem(video);
    item.querySelector(".status").textContent = statusOf(video);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  const shown = new Set(body.videos.map((video) => video.fileId));
  for (const [fileId, item] of items) if (!shown.has(fileId)) item.remove();
  document.getElementById("no-videos").hidden = body.videos.length > 0;
}

// ---------------------------------------------------------------------------------------------- wiring
function render() {
  const name = user();
  const local = config.signIn.mode === "local";
  $("user").textContent = name ? `Signed in as ${name}` : "";
  document.getElementById("signin-form").hidden = Boolean(name);
  $("signin-name").hidden = !local;
  $("signin").textContent = local ? "Sign in as" : "Sign in";
  document.getElementById("signout").hidden = !name;
  document.getElementById("upload-section").hidden = !name;
  document.getElementById("videos-section").hidden = !name;
  $("videos").replaceChildren();
  if (name) refreshVideos();
}

document.getElementById("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  try {
    if (config.signIn.mode === "local") await localSignIn($("signin-name").value.trim());
    else await oidc.start();
  } catch (error) {
    showError(`Sign-in failed: ${error.message}`);
  }
});
document.getElementById("signout").addEventListener("click", signOut);
$("file").addEventListener("change", filesChosen);
$("cover").addEventListener("change", filesChosen);
$("upload").addEventListener("click", startUpload);
$("pause").addEventListener("click", pause);
$("resume").addEventListener("click", startUpload);
$("cancel").addEventListener("click", cancel);
// Processing status changes as VOD's events reach the backend: look again every few seconds.
setInterval(() => document.visibilityState === "visible" && refreshVideos(), 3000);

try {
  if (config.signIn.mode === "oidc") await oidc.finish();
} catch (error) {
  showError(error.message);
}
render();
setButtons("idle");
