// soundscape review queue (/review): one clip at a time, judged by keyboard.
// y / n / u: verdict, saved and on to the next clip; s: skip; space: play or pause;
// left / right arrows: back / next; z (or Backspace): undo the last verdict.
// The clips are all in the page (#queue-data); the next clip's audio and spectrogram are
// fetched while this one plays, so moving on waits for nothing.
"use strict";
(function () {
  const root = document.getElementById("queue");
  const data = document.getElementById("queue-data");
  if (!root || !data) return;
  const clips = JSON.parse(data.textContent || "[]");
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (id) => document.getElementById(id);
  const audio = $("clip-audio"), image = $("clip-image"), status = $("clip-verdict");
  const judged = new Map(); // index -> {id, verdict}
  const history = []; // indexes judged, newest last (undo)
  const prefetched = new Map(); // index -> [Image, Audio]
  let index = 0, busy = false, playing = false;

  function prefetch(i) {
    if (i < 0 || i >= clips.length || prefetched.has(i)) return;
    const img = new Image();
    img.src = clips[i].image;
    const snd = new Audio();
    snd.preload = "auto";
    snd.src = clips[i].audio;
    prefetched.set(i, [img, snd]);
    for (const k of prefetched.keys()) if (k < i - 2) prefetched.delete(k);
  }

  function show(i) {
    if (!clips.length) return;
    if (i >= clips.length) {
      $("queue-finished").hidden = false;
      $("clip").hidden = true;
      status.textContent = "";
      audio.pause();
      index = clips.length;
      $("queue-position").textContent = String(clips.length);
      return;
    }
    index = Math.max(0, i);
    $("queue-finished").hidden = true;
    $("clip").hidden = false;
    const c = clips[index];
    $("queue-position").textContent = String(index + 1);
    $("clip-label").textContent = c.label;
    $("clip-score").textContent = c.score.toFixed(3);
    $("clip-place").textContent = [c.sensor, c.site].filter(Boolean).join(" · ");
    $("clip-time").textContent = c.local || "time unknown";
    $("clip-file").textContent = c.file + " at " + c.start_s.toFixed(1) + " s";
    image.src = c.image;
    audio.src = c.audio;
    const v = judged.get(index);
    status.textContent = v ? "you said " + v.verdict : "";
    $("clip").className = "clip" + (v ? " judged-" + v.verdict : "");
    root.dataset.segment = String(c.segment_id);
    if (playing) audio.play().catch(() => {});
    prefetch(index + 1);
    prefetch(index + 2);
  }

  async function post(url, fields) {
    const body = new FormData();
    for (const [k, v] of Object.entries(fields)) body.set(k, String(v));
    const response = await fetch(url, {
      method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "Accept": "application/json" },
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }

  async function judge(verdict) {
    if (busy || index >= clips.length) return;
    const c = clips[index];
    busy = true;
    status.textContent = "saving " + verdict + "…";
    try {
      const saved = await post("/annotations", {
        segment_id: c.segment_id, start_s: c.start_s, end_s: c.end_s, label: c.label, verdict,
      });
      if (!judged.has(index)) $("queue-done").textContent = String(judged.size + 1);
      judged.set(index, { id: saved.id, verdict });
      history.push(index);
      root.dataset.saved = String(Number(root.dataset.saved || 0) + 1);
      show(index + 1);
    } catch (err) {
      status.textContent = "not saved: " + err.message;
    } finally {
      busy = false;
    }
  }

  async function undo() {
    if (busy || !history.length) return;
    const i = history.pop();
    const v = judged.get(i);
    busy = true;
    try {
      await post("/annotations/undo", { id: v.id });
      judged.delete(i);
      $("queue-done").textContent = String(judged.size);
      show(i);
      status.textContent = "undone: " + v.verdict;
    } catch (err) {
      history.push(i);
      status.textContent = "not undone: " + err.message;
    } finally {
      busy = false;
    }
  }

  function toggle() {
    if (audio.paused) { playing = true; audio.play().catch(() => {}); }
    else { playing = false; audio.pause(); }
  }

  const keys = {
    y: () => judge("yes"), n: () => judge("no"), u: () => judge("unsure"),
    s: () => show(index + 1), " ": toggle, ArrowRight: () => show(index + 1),
    ArrowLeft: () => show(index - 1), z: undo, Backspace: undo,
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea")) return;
    const action = keys[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });
  root.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-verdict], button[data-action]");
    if (!button) return;
    const act = button.dataset.action;
    if (button.dataset.verdict) judge(button.dataset.verdict);
    else if (act === "skip" || act === "next") show(index + 1);
    else if (act === "prev") show(index - 1);
    else if (act === "undo") undo();
    button.blur(); // keys keep working (space must not press the button again)
  });
  audio.addEventListener("play", () => { playing = true; });

  const retrain = $("retrain");
  if (retrain) {
    retrain.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = $("retrain-result");
      const button = retrain.querySelector("button");
      button.disabled = true;
      out.textContent = "training…";
      try {
        const answer = await post("/review/retrain", { classifier: retrain.elements.classifier.value });
        out.textContent = "";
        const table = document.createElement("table");
        table.className = "retrained";
        table.innerHTML = "<caption></caption><tr><th>label</th><th>precision</th><th>recall</th><th>yes</th><th>no</th></tr>";
        table.querySelector("caption").textContent =
          answer.classifier + " v" + answer.labels[0].version + ", cross-validated";
        for (const row of answer.labels) {
          const tr = table.insertRow();
          const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));
          for (const cell of [row.label, fmt(row.precision), fmt(row.recall), row.n_pos, row.n_neg]) {
            tr.insertCell().textContent = String(cell);
          }
        }
        out.appendChild(table);
        const model = $("model"), mine = answer.labels.find((r) => r.label === root.dataset.label);
        if (model && mine) {
          const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));
          model.textContent = answer.classifier + " v" + mine.version + " · " + mine.label +
            ": cross-validated precision " + fmt(mine.precision) + ", recall " + fmt(mine.recall);
        }
      } catch (err) {
        out.textContent = "not trained: " + err.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  show(0);
})();
