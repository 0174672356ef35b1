// CXR triage: small progressive enhancements, no framework, no CDN.
(function () {
  "use strict";

  // Poll a server-rendered fragment until the work it shows has finished.
  // <div id="x" data-poll-url="/fragment/" data-poll-ms="2000"> ... </div>
  function poll(el) {
    var ms = parseInt(el.getAttribute("data-poll-ms"), 10);
    var url = el.getAttribute("data-poll-url");
    if (!ms || !url) return;
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          if (el.querySelector("[data-pending='1']")) {
            poll(el);
          } else {
            el.removeAttribute("data-poll-ms");
            el.dispatchEvent(new CustomEvent("cxr:finished", { bubbles: true }));
          }
        })
        .catch(function () {
          // Network blip or server restart: try again a little later.
          el.setAttribute("data-poll-ms", String(Math.min(ms * 2, 30000)));
          poll(el);
        });
    }, ms);
  }

  // Reload a whole region of the current page (worklist) while rows are pending.
  function refreshRegion(el) {
    var ms = parseInt(el.getAttribute("data-refresh"), 10);
    if (!ms) return;
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(el.id);
          if (!fresh) return;
          el.innerHTML = fresh.innerHTML;
          var next = fresh.getAttribute("data-refresh");
          if (next) { el.setAttribute("data-refresh", next); refreshRegion(el); }
          else el.removeAttribute("data-refresh");
        })
        .catch(function () { refreshRegion(el); });
    }, ms);
  }

  document.addEventListener("input", function (ev) {
    var t = ev.target;
    var id = t.getAttribute && t.getAttribute("data-heatmap-opacity");
    if (!id) return;
    var img = document.getElementById(id);
    if (img) img.style.opacity = String(t.value / 100);
    t.setAttribute("aria-valuetext", t.value + "%");
    var out = document.getElementById(t.id + "-value");
    if (out) out.textContent = t.value + "%";
  });

  document.addEventListener("change", function (ev) {
    var t = ev.target;
    var id = t.getAttribute && t.getAttribute("data-heatmap-toggle");
    if (!id) return;
    var img = document.getElementById(id);
    if (img) img.hidden = !t.checked;
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url][data-poll-ms]").forEach(poll);
    document.querySelectorAll("[data-refresh]").forEach(refreshRegion);
  });
})();
