// gen_durable dashboard: progressive enhancement only; every page works without it.
// Live refresh polls the page itself and swaps its [data-live] sections (HTML, never
// JSON: numbers stay the server's text, exact past 2^53). No LISTEN, no websocket.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "5");
  var toggle = document.getElementById("live-toggle");
  var KEY = "gd-live";

  if (toggle) {
    toggle.checked = localStorage.getItem(KEY) !== "off";
    toggle.addEventListener("change", function () {
      localStorage.setItem(KEY, toggle.checked ? "on" : "off");
    });
  }

  function busy(section) {
    var active = document.activeElement;
    if (active && active !== body && section.contains(active) && active.tagName !== "TR") return true;
    return section.querySelector("details[open]") !== null;
  }

  function refresh() {
    if (!toggle || !toggle.checked || document.hidden) return;
    var sections = document.querySelectorAll("[data-live]");
    if (!sections.length) return;
    fetch(window.location.href, { headers: { "X-Requested-With": "gen_durable-live" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        sections.forEach(function (old) {
          var next = old.id && fresh.getElementById(old.id);
          if (!next || busy(old)) return;
          var focused = document.activeElement && old.contains(document.activeElement)
            ? document.activeElement.getAttribute("data-href") : null;
          old.replaceWith(next);
          if (focused) {
            var again = next.querySelector('[data-href="' + focused + '"]');
            if (again) again.focus();
          }
        });
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next poll tries again */ });
  }
  if (seconds > 0) window.setInterval(refresh, seconds * 1000);

  // Keyboard navigation of a list: j/k or arrows move, Enter opens, / filters, n/p pages.
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("table.list tbody tr[data-href]")); }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var list = rows();
    if (e.key === "/") {
      var first = document.getElementById("filter-class");
      if (first) { e.preventDefault(); first.focus(); }
      return;
    }
    if (e.key === "n" || e.key === "p") {
      var link = document.getElementById(e.key === "n" ? "page-older" : "page-newer");
      if (link) { e.preventDefault(); window.location.href = link.href; }
      return;
    }
    if (!list.length) return;
    var at = list.indexOf(document.activeElement);
    if (e.key === "j" || e.key === "ArrowDown") {
      e.preventDefault(); list[Math.min(at + 1, list.length - 1)].focus();
    } else if (e.key === "k" || e.key === "ArrowUp") {
      e.preventDefault(); list[Math.max(at - 1, 0)].focus();
    } else if (e.key === "Enter" && at >= 0) {
      e.preventDefault(); window.location.href = list[at].getAttribute("data-href");
    }
  });
  document.addEventListener("click", function (e) {
    var row = e.target.closest && e.target.closest("table.list tbody tr[data-href]");
    if (row && !e.target.closest("a, input, button, label, select, textarea")) {
      window.location.href = row.getAttribute("data-href");
    }
  });

  // A signal's payload is checked as JSON before it is sent (the server checks again).
  document.addEventListener("submit", function (e) {
    var area = e.target.querySelector("textarea[data-json]");
    if (!area) return;
    var shown = e.target.querySelector(".json-error");
    try {
      if (area.value.trim()) JSON.parse(area.value);  // a syntax check only: the text is sent
      area.classList.remove("invalid");
      if (shown) shown.textContent = "";
    } catch (err) {
      e.preventDefault();
      area.classList.add("invalid");
      if (shown) shown.textContent = "Not valid JSON: " + err.message;
    }
  });

  // Saved filters: a named list of listing URLs kept in this browser.
  var saved = document.getElementById("saved-filters");
  if (saved) {
    var SAVED = "gd-saved-filters";
    var list = document.getElementById("saved-list");
    var load = function () { try { return JSON.parse(localStorage.getItem(SAVED) || "[]"); } catch (err) { return []; } };
    var draw = function () {
      list.textContent = "";
      load().forEach(function (item, i) {
        var li = document.createElement("li");
        var a = document.createElement("a");
        a.href = item.url; a.textContent = item.name;
        var rm = document.createElement("button");
        rm.type = "button"; rm.textContent = "×"; rm.setAttribute("aria-label", "Forget " + item.name);
        rm.addEventListener("click", function () {
          var all = load(); all.splice(i, 1); localStorage.setItem(SAVED, JSON.stringify(all)); draw();
        });
        li.appendChild(a); li.appendChild(document.createTextNode(" ")); li.appendChild(rm);
        list.appendChild(li);
      });
    };
    saved.hidden = false;
    document.getElementById("save-filter").addEventListener("click", function () {
      var name = window.location.search.replace(/^\?/, "") || "all instances";
      var all = load();
      try { name = decodeURIComponent(name.replace(/\+/g, " ")); } catch (err) { /* keep it encoded */ }
      all.push({ name: name, url: window.location.pathname + window.location.search });
      localStorage.setItem(SAVED, JSON.stringify(all));
      draw();
    });
    draw();
  }
})();

// A bulk action's page runs its next batch by itself (one batch per request) while
// "keep going" is ticked; unticked, or without JavaScript, each click runs one batch.
(function () {
  "use strict";
  var form = document.querySelector("form[data-autostep]");
  var auto = document.getElementById("bulk-auto");
  if (!form || !auto) return;
  auto.checked = sessionStorage.getItem("gd-bulk-auto") !== "off";
  auto.addEventListener("change", function () {
    sessionStorage.setItem("gd-bulk-auto", auto.checked ? "on" : "off");
    if (auto.checked) form.requestSubmit();
  });
  if (auto.checked) window.setTimeout(function () { if (auto.checked) form.requestSubmit(); }, 200);
})();
