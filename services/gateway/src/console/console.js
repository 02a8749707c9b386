// FlexCore console: live updates on top of pages that read without it.
// - A run page (data-live="true") follows the run's Server-Sent Events: each
//   run.checkpointed moves the record counts, a final event reloads the page.
// - The overview (data-refresh="N") reloads every N seconds while visible.
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

document.addEventListener("DOMContentLoaded", () => {
  for (const run of document.querySelectorAll('[data-live="true"]')) followRun(run);
  const refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    const seconds = Number(refresh.dataset.refresh) || 10;
    setInterval(() => { if (document.visibilityState === "visible") window.location.reload(); }, seconds * 1000);
  }
});
