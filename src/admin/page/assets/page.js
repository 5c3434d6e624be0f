// jitgate's approver page: the live parts. Without this file the page
// still works; it only stops updating by itself.
"use strict";

// Countdowns: "in 29m 41s", ticking once a second from the page's clock.
function span(secs) {
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m " + String(secs % 60).padStart(2, "0") + "s";
  return Math.floor(secs / 3600) + "h " + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
}

function tick() {
  const now = Date.now();
  for (const t of document.querySelectorAll("time[data-countdown]")) {
    const left = Math.round((Date.parse(t.getAttribute("datetime")) - now) / 1000);
    t.textContent = left > 0 ? "in " + span(left) : "now";
    t.classList.toggle("soon", left < 300);
  }
}

// Live sections: when the server says something changed, fetch this page
// again and swap each [data-live] section for its new self, except one the
// person is typing in (it is swapped once they leave it).
let waiting = new Set();

function swap(fresh) {
  for (const old of document.querySelectorAll("[data-live]")) {
    const next = fresh.getElementById(old.id);
    if (!next) continue;
    if (old.contains(document.activeElement) && document.activeElement !== document.body) {
      waiting.add(old.id);
      continue;
    }
    old.replaceWith(document.adoptNode(next));
  }
  tick();
}

let fetching = false, again = false, latest = null;

async function refresh() {
  if (fetching) { again = true; return; }
  fetching = true;
  try {
    const answer = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Jitgate-Live": "1" } });
    if (answer.redirected || answer.status === 401) { location.reload(); return; }
    if (answer.ok) {
      latest = new DOMParser().parseFromString(await answer.text(), "text/html");
      swap(latest);
    }
  } catch (e) {
    // The next event tries again.
  } finally {
    fetching = false;
    if (again) { again = false; refresh(); }
  }
}

document.addEventListener("focusout", () => {
  setTimeout(() => {
    if (!latest || waiting.size === 0) return;
    for (const id of [...waiting]) {
      const old = document.getElementById(id);
      const next = latest.getElementById(id);
      if (old && next && !old.contains(document.activeElement)) {
        old.replaceWith(next.cloneNode(true));
        waiting.delete(id);
      }
    }
    tick();
  }, 0);
});

// A browser allows a handful of connections to one server: a page being
// left closes its stream at once (it may otherwise linger in the
// back/forward cache and starve the next page's requests), and opens it
// again if the person comes back to it.
let events = null;

function listen() {
  const url = document.body.dataset.events;
  if (!url || !window.EventSource || events) return;
  events = new EventSource(url);
  events.addEventListener("changed", refresh);
  events.addEventListener("signedout", () => { events.close(); location.reload(); });
  // After a lost connection EventSource reconnects by itself; catch up then.
  events.addEventListener("open", () => { if (latest !== null) refresh(); else latest = document; });
}

window.addEventListener("pagehide", () => { if (events) { events.close(); events = null; } });
window.addEventListener("pageshow", (e) => { if (e.persisted) { latest = document; listen(); refresh(); } });

// The request form: only the levels of the chosen target, and its limit.
function picker() {
  const target = document.getElementById("target");
  const level = document.getElementById("level");
  if (!target || !level) return;
  const follow = () => {
    let first = null;
    for (const o of level.options) {
      const ok = o.dataset.targets.split(" ").includes(target.value);
      o.hidden = !ok; o.disabled = !ok;
      if (ok && first === null) first = o;
    }
    if (level.selectedOptions[0] && level.selectedOptions[0].disabled && first) first.selected = true;
    for (const s of document.querySelectorAll("#limits [data-target]")) {
      s.hidden = !(s.dataset.target === target.value && s.dataset.level === level.value);
    }
  };
  target.addEventListener("change", follow);
  level.addEventListener("change", follow);
  follow();
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  picker();
  listen();
});
