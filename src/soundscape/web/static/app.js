// soundscape web page: verdict buttons without a page reload (a hit's own label kept), and "play from here" links.
// Everything works without this file too (plain form posts and links).
"use strict";
(function () {
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.matches("form.verdict")) return;
    event.preventDefault();
    const data = new FormData(form);
    const verdict = event.submitter ? event.submitter.value : "yes";
    data.set("verdict", verdict);
    // a hit's own class, concept or classifier label is kept; others take the page's label
    const label = document.getElementById("verdict-label");
    if (label && !form.dataset.ownLabel) {
      if (!label.value.trim()) { label.reportValidity(); label.focus(); return; }
      data.set("label", label.value.trim());
    }
    const out = form.querySelector(".saved");
    out.textContent = "saving…";
    try {
      const response = await fetch("/annotations", {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "X-CSRF-Token": token, "Accept": "application/json" },
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      const card = form.closest("li.hit");
      card.classList.remove("judged-yes", "judged-no", "judged-unsure");
      card.classList.add("judged-" + verdict);
      card.dataset.annotation = body.id;
      form.querySelectorAll("button[name=verdict]").forEach((b) => {
        b.setAttribute("aria-pressed", String(b.value === verdict));
      });
      out.textContent = verdict + " saved";
    } catch (err) {
      out.textContent = "not saved: " + err.message;
    }
  });

  // recordings page: a filter chip applies at once (the Show button does without this file)
  document.addEventListener("change", (event) => {
    const form = event.target.closest("form.recording-filters");
    if (form && event.target.closest("label.chip")) form.requestSubmit();
  });

  const player = document.getElementById("player");
  if (player) {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.seek");
      if (!button) return;
      player.currentTime = parseFloat(button.dataset.t);
      player.play();
    });
    const match = location.hash.match(/^#t=([\d.]+)/);
    if (match) player.addEventListener("loadedmetadata", () => { player.currentTime = parseFloat(match[1]); }, { once: true });
  }
})();
