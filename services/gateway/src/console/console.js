// FlexCore console: live updates on top of pages that read without it.
// - A run page (data-live="true") follows the run's Server-Sent Events: each
//   run.checkpointed moves the record counts, a final event reloads the page.
// - The overview ([data-overview]) refetches itself and swaps its figures in: a second
//   after run events (its data-events stream), and every 5 seconds while visible.
const FINAL = new Set(["run.succeeded", "run.failed", "run.cancelled", "run.timed_out"]);

function followRun(run) {
  const source = new EventSource(run.dataset.events);
  const set = (name, text) => {
    const el = run.querySelector(`[data-field="${name}"]`);
    if (el) el.textContent = text;
  };
  source.addEventListener("run.claimed", () => set("state", "running"));
  source.addEventListener("run.checkpointed", (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch { return; }
    const counters = (data.data && data.data.counters) || data.counters || {};
    let total = 0;
    for (const [stream, n] of Object.entries(counters)) {
      total += Number(n) || 0;
      const cell = run.querySelector(`[data-stream="${CSS.escape(stream)}"]`);
      if (cell) cell.textContent = String(n);
    }
    set("records_total", String(total));
  });
  for (const type of FINAL) {
    source.addEventListener(type, () => { source.close(); window.location.reload(); });
  }
  // The stream ends (204) once the run has ended: stop and show the final page.
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) window.location.reload(); };
}

// Times marked data-local (under root) also in the viewer's own zone.
function localTimes(root) {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const el of root.querySelectorAll("time[data-local]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) el.textContent += ` (yours: ${format.format(at)})`;
  }
}

// The audit log's first page: new events from the stream go on top.
function tailEvents(audit) {
  const body = audit.querySelector("tbody");
  const source = new EventSource(audit.dataset.tail);
  const add = (event) => {
    let e;
    try { e = JSON.parse(event.data); } catch { return; }
    const row = document.createElement("tr");
    const cells = [
      event.lastEventId,
      e.recorded_at || "",
      event.type,
      `${e.aggregate_type || ""} ${e.aggregate_id || ""}`,
      (e.metadata && e.metadata.actor) || "",
      (e.metadata && e.metadata.correlation_id) || "",
      JSON.stringify(e.data === undefined ? null : e.data),
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    row.className = "new";
    body.insertBefore(row, body.firstChild);
  };
  for (const type of ["plugin", "pipeline", "run", "schedule"].flatMap((a) => EVENT_TYPES[a])) {
    source.addEventListener(type, add);
  }
}

const EVENT_TYPES = {
  plugin: ["plugin.registered", "plugin.deprecated", "plugin.disabled", "plugin.enabled"],
  pipeline: ["pipeline.created", "pipeline.updated", "pipeline.paused", "pipeline.resumed", "pipeline.archived", "pipeline.state_committed"],
  run: ["run.requested", "run.claimed", "run.checkpointed", "run.succeeded", "run.failed", "run.retried", "run.cancelled", "run.timed_out"],
  schedule: ["schedule.created", "schedule.updated", "schedule.paused", "schedule.resumed", "schedule.deleted", "schedule.slot_skipped", "schedule.slots_missed"],
};

// A live run's log lines: the stream sends the stored ones, then new ones as they come.
function tailLog(log) {
  const body = log.querySelector("tbody");
  body.replaceChildren();
  const source = new EventSource(log.dataset.log);
  source.addEventListener("line", (event) => {
    let line;
    try { line = JSON.parse(event.data); } catch { return; }
    const row = document.createElement("tr");
    const at = new Date(line.at);
    for (const text of [at.toISOString().slice(11, 23), String(line.attempt), line.plugin, line.line]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    body.appendChild(row);
    while (body.rows.length > 1000) body.deleteRow(0);
  });
  // The stream ends with the run: no reconnection (it would send every line again).
  source.onerror = () => source.close();
}

// The overview: the same page fetched again, its [data-overview] part swapped in.
function liveOverview(root) {
  let pending = null;
  const refresh = async () => {
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser()
        .parseFromString(await response.text(), "text/html")
        .querySelector("[data-overview]");
      if (!fresh) return;
      root.replaceChildren(...fresh.childNodes);
      localTimes(root);
      root.dataset.updated = new Date().toISOString();
    } catch {
      // Offline for a moment: the next tick tries again.
    } finally {
      pending = null;
    }
  };
  const soon = (delay) => {
    if (!pending && document.visibilityState === "visible") pending = setTimeout(refresh, delay);
  };
  const source = new EventSource(root.dataset.events);
  for (const type of EVENT_TYPES.run) source.addEventListener(type, () => soon(1000));
  setInterval(() => soon(0), 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  for (const log of document.querySelectorAll("[data-log]")) tailLog(log);
  for (const audit of document.querySelectorAll("[data-tail]")) tailEvents(audit);
  for (const run of document.querySelectorAll('[data-live="true"]')) followRun(run);
  for (const overview of document.querySelectorAll("[data-overview]")) liveOverview(overview);
});
