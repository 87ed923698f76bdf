// jobnet console: live updates (Server-Sent Events), confirmations and actions, the virtual job list.
// Plain JavaScript, no build step, no network access but this console's own server.
"use strict";

const ROW_HEIGHT = 24;
const LIST_HEIGHT = 420;
const REFRESH_DELAY_MS = 250;

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

function notice(text, isError, link) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error shown" : "ok shown";
  if (link) {
    const anchor = document.createElement("a");
    anchor.href = link.href;
    anchor.textContent = link.text;
    anchor.id = "notice-link";
    box.append(" ", anchor);
  }
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch (error) {
    answer = { error: `HTTP ${response.status}` };
  }
  return { ok: response.ok, answer };
}

// ------------------------------------------------------------------ live region

let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
}

async function refresh() {
  refreshTimer = null;
  const region = document.getElementById("live-region");
  if (!region || !region.dataset.fragment) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    const response = await fetch(region.dataset.fragment, { credentials: "same-origin" });
    if (response.ok) {
      const graph = document.getElementById("graph");
      const scroll = graph ? [graph.scrollLeft, graph.scrollTop] : null;
      const list = document.querySelector("#job-list .vlist-body");
      const listScroll = list ? list.scrollTop : 0;
      region.innerHTML = await response.text();
      const newGraph = document.getElementById("graph");
      if (newGraph && scroll) [newGraph.scrollLeft, newGraph.scrollTop] = scroll;
      initRegion(listScroll);
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
    }
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh();
    }
  }
}

function connectStream() {
  const url = document.body.dataset.stream;
  const live = document.getElementById("live");
  if (!url) return;
  const watchRun = document.body.dataset.watchRun;
  const source = new EventSource(url);
  source.addEventListener("ready", () => {
    // The stream watches from the resourceVersion the page was rendered at: nothing is missed.
    live.textContent = "● " + live.dataset.live;
    live.className = "live on";
  });
  source.addEventListener("change", (message) => {
    const change = JSON.parse(message.data);
    if (watchRun && change.what === "jobruns" && change.name && change.name !== watchRun) return;
    scheduleRefresh();
  });
  source.addEventListener("problem", (message) => {
    live.title = JSON.parse(message.data).message;
  });
  source.onerror = () => {
    live.textContent = "○ " + live.dataset.down;
    live.className = "live off";
  };
}

// ------------------------------------------------------------------ the virtual job list

// As the server writes durations (jobnet.plugin.tree.format_duration): 850ms, 12.3s, 4m05s, 2h03m.
function formatDuration(startedAt, finishedAt) {
  const end = finishedAt ? Date.parse(finishedAt) : Date.now();
  const seconds = (end - Date.parse(startedAt)) / 1000;
  if (!(seconds >= 0)) return "-";
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const whole = Math.floor(seconds);
  const pad = (number) => String(number).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
  return `${Math.floor(whole / 3600)}h${pad(Math.floor((whole % 3600) / 60))}m`;
}

function initJobList(scrollTop) {
  const list = document.getElementById("job-list");
  const data = document.getElementById("jobs-data");
  if (!list || !data) return;
  const rows = JSON.parse(data.textContent);
  const body = list.querySelector(".vlist-body");
  const spacer = list.querySelector(".vlist-spacer");
  body.style.height = Math.min(LIST_HEIGHT, rows.length * ROW_HEIGHT + 2) + "px";
  spacer.style.height = rows.length * ROW_HEIGHT + "px";
  const base = list.dataset.base;
  function draw() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - 5);
    const last = Math.min(rows.length, first + Math.ceil(LIST_HEIGHT / ROW_HEIGHT) + 10);
    const fragment = document.createDocumentFragment();
    for (let index = first; index < last; index++) {
      const [path, state, icon, attempt, startedAt, finishedAt, reason] = rows[index];
      const duration = startedAt ? formatDuration(startedAt, finishedAt) : "";
      const row = document.createElement("div");
      row.className = "vlist-row";
      row.dataset.path = path;
      row.style.top = index * ROW_HEIGHT + "px";
      const link = document.createElement("a");
      link.href = base + encodeURIComponent(path);
      link.textContent = path;
      const stateCell = document.createElement("span");
      stateCell.className = "state state-" + state;
      stateCell.textContent = icon + " " + state;
      const cells = [link, stateCell];
      for (const text of [attempt ? "#" + attempt : "", duration, reason]) {
        const cell = document.createElement("span");
        cell.textContent = text;
        cells.push(cell);
      }
      row.append(...cells);
      fragment.append(row);
    }
    spacer.replaceChildren(fragment);
  }
  body.onscroll = draw;
  body.scrollTop = scrollTop || 0;
  draw();
}

// ------------------------------------------------------------------ full output, streamed and paged

// The job's output from its VM: the last page first, then what the running job writes, as it
// writes it (Server-Sent Events); earlier pages on request.
function initOutput() {
  const holder = document.querySelector(".full-output");
  if (!holder) return;
  const shown = document.getElementById("full-output");
  const earlier = document.getElementById("earlier-output");
  const problem = document.getElementById("output-problem");
  const status = document.getElementById("output-status");
  const pageBytes = Number(holder.dataset.pageBytes);
  let source = null;
  let stream = "stdout";
  let start = 0; // the byte offset of the first byte shown

  function stopFollowing() {
    if (source) source.close();
    source = null;
  }
  function showProblem(text) {
    stopFollowing();
    status.textContent = "";
    problem.textContent = text;
    problem.hidden = false;
  }
  function follow(chosen) {
    stopFollowing();
    stream = chosen;
    start = 0;
    shown.textContent = "";
    shown.hidden = true;
    earlier.hidden = true;
    problem.hidden = true;
    holder.dataset.done = "";
    status.textContent = holder.dataset.following;
    source = new EventSource(`${holder.dataset.streamUrl}&stream=${stream}`);
    source.addEventListener("page", (message) => {
      const page = JSON.parse(message.data);
      shown.textContent = page.text;
      shown.hidden = false;
      start = page.start;
      earlier.hidden = start === 0;
    });
    source.addEventListener("more", (message) => {
      const atBottom = shown.scrollTop + shown.clientHeight >= shown.scrollHeight - 4;
      shown.append(JSON.parse(message.data).text);
      if (atBottom) shown.scrollTop = shown.scrollHeight;
    });
    source.addEventListener("end", () => {
      stopFollowing();
      status.textContent = holder.dataset.ended;
      holder.dataset.done = "1";
    });
    source.addEventListener("problem", (message) => showProblem(JSON.parse(message.data).message));
    source.onerror = () => {
      if (source) showProblem(holder.dataset.lost);
    };
  }
  async function loadEarlier() {
    const from = Math.max(0, start - pageBytes);
    const url = `${holder.dataset.url}&stream=${stream}&offset=${from}&length=${start - from}`;
    const response = await fetch(url, { credentials: "same-origin" });
    const answer = await response.json();
    if (!response.ok) {
      problem.textContent = answer.error;
      problem.hidden = false;
      return;
    }
    shown.prepend(answer.text);
    start = from;
    earlier.hidden = start === 0;
  }
  for (const button of holder.querySelectorAll(".load-output")) {
    button.onclick = () => follow(button.dataset.stream);
  }
  earlier.onclick = loadEarlier;
}

function initRegion(scrollTop) {
  initJobList(scrollTop);
}

// ------------------------------------------------------------------ actions

let pendingAction = null;

function actionUrl(element) {
  if (element.dataset.url) return element.dataset.url;
  const holder = element.closest("[data-api]");
  return holder.dataset.api + "/" + element.dataset.action;
}

function askToConfirm(element) {
  const dialog = document.getElementById("confirm-dialog");
  const isOverride = element.dataset.action === "override";
  const path = element.dataset.path;
  pendingAction = {
    url: actionUrl(element),
    // An override carries the state and attempt shown: it applies only while they still hold.
    body: isOverride
      ? { path, state: element.dataset.state, seen: element.dataset.seen, attempt: element.dataset.attempt }
      : { path },
    isOverride,
  };
  const english = document.documentElement.lang !== "ja";
  document.getElementById("confirm-text").textContent = isOverride
    ? (english ? `Set ${path} to ${element.dataset.state}?` : `${path} を ${element.dataset.state} に変更しますか?`)
    : (english ? `Stop ${path}?` : `${path} を停止しますか?`);
  document.getElementById("confirm-message-label").hidden = !isOverride;
  document.getElementById("confirm-message").value = "";
  dialog.showModal();
}

async function confirmed() {
  const action = pendingAction;
  pendingAction = null;
  if (!action) return;
  if (action.isOverride) action.body.message = document.getElementById("confirm-message").value;
  const { ok, answer } = await post(action.url, action.body);
  notice(ok ? answer.message : answer.error, !ok);
  scheduleRefresh();
}

function initActions() {
  document.addEventListener("click", (event) => {
    const element = event.target.closest("[data-action]");
    if (!element) return;
    event.preventDefault();
    askToConfirm(element);
  });
  const dialog = document.getElementById("confirm-dialog");
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok") confirmed();
    else pendingAction = null;
  });
  const start = document.getElementById("start-run");
  if (start) {
    const select = document.getElementById("start-jobnet");
    const link = document.getElementById("jobnet-link");
    const point = () => { link.href = link.dataset.base + encodeURIComponent(select.value); };
    select.addEventListener("input", point);
    point();
    start.addEventListener("submit", async (event) => {
      event.preventDefault();
      const { ok, answer } = await post(start.dataset.url, {
        jobnet: select.value,
        env: document.getElementById("start-env").value,
      });
      if (ok) {
        const namespace = start.dataset.url.split("/").pop();
        notice(answer.message, false, { href: `/runs/${namespace}/${encodeURIComponent(answer.name)}`, text: answer.name });
      } else {
        notice(answer.error, true);
      }
      scheduleRefresh();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  initRegion(0);
  initOutput(); // outside the live region: what was loaded stays while the page updates
  initActions();
  connectStream();
});
