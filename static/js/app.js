// CXR triage: progressive enhancements, no framework, no CDN. Every page works without it,
// except live updates, zoom/pan and the multi-file uploader.
(function () {
  "use strict";

  function csrfToken() {
    var el = document.querySelector("input[name=csrfmiddlewaretoken]");
    return el ? el.value : "";
  }

  // ---- viewer state, kept across refreshes of the results panel ---------------------------
  var viewers = {};  // image id -> {scale, x, y, brightness, contrast, opacity, on, camClass}

  function state(id) {
    if (!viewers[id]) {
      viewers[id] = { scale: 1, x: 0, y: 0, brightness: 100, contrast: 100, opacity: 60,
                      on: true, camClass: null };
    }
    return viewers[id];
  }

  function applyTransform(id) {
    var s = state(id);
    var stage = document.getElementById("stage-" + id);
    if (stage) stage.style.transform = "translate(" + s.x + "px," + s.y + "px) scale(" + s.scale + ")";
    var xray = document.getElementById("xray-" + id);
    if (xray) xray.style.filter = "brightness(" + s.brightness + "%) contrast(" + s.contrast + "%)";
  }

  // Sizes drawn by the server come as data-style-* attributes, applied here through
  // element.style: the Content-Security-Policy refuses style="" attributes, not this.
  function applyDataStyles(root) {
    var rules = { "data-style-ar": function (el, v) { el.style.setProperty("--ar", v); },
                  "data-style-width": function (el, v) { el.style.width = v + "%"; },
                  "data-style-left": function (el, v) { el.style.left = v + "%"; } };
    Object.keys(rules).forEach(function (name) {
      (root || document).querySelectorAll("[" + name + "]").forEach(function (el) {
        rules[name](el, el.getAttribute(name));
      });
    });
  }

  function restore(root) {
    (root || document).querySelectorAll("[data-image-id]").forEach(function (section) {
      var id = section.getAttribute("data-image-id");
      if (!viewers[id]) return;
      var s = state(id);
      applyTransform(id);
      var b = document.getElementById("bright-" + id), c = document.getElementById("contrast-" + id);
      if (b) b.value = s.brightness;
      if (c) c.value = s.contrast;
      var heat = document.getElementById("heatmap-" + id);
      var op = document.getElementById("opacity-" + id);
      if (heat) { heat.style.opacity = String(s.opacity / 100); heat.hidden = !s.on; }
      if (op) { op.value = s.opacity; var out = document.getElementById(op.id + "-value"); if (out) out.textContent = s.opacity + "%"; }
      var toggle = section.querySelector("[data-heatmap-toggle]");
      if (toggle) toggle.checked = s.on;
      var select = section.querySelector("[data-heatmap-class]");
      if (select && s.camClass) {
        select.value = s.camClass;
        var opt = select.selectedOptions[0];
        if (opt && opt.dataset.src && heat) heat.src = opt.dataset.src;
      }
      if (select) camNote(select);
    });
  }

  // A class heatmap that came back empty (nothing raises that class's score) draws nothing: say
  // so under the controls instead of leaving the reader to wonder.
  function camNote(select) {
    var opt = select.selectedOptions[0];
    var id = "cam-empty-" + select.id;
    var note = document.getElementById(id);
    var text = opt && opt.dataset.empty;
    if (!text) { if (note) note.hidden = true; return; }
    if (!note) {
      note = document.createElement("p");
      note.id = id;
      note.className = "notice cam-empty";
      note.setAttribute("role", "status");
      select.parentNode.insertAdjacentElement("afterend", note);
    }
    note.textContent = text;
    note.hidden = false;
  }

  function zoom(id, factor, cx, cy) {
    var s = state(id);
    var next = Math.min(8, Math.max(1, s.scale * factor));
    var viewport = document.getElementById("viewport-" + id);
    if (cx === undefined && viewport) { cx = viewport.clientWidth / 2; cy = viewport.clientHeight / 2; }
    // keep the point under the cursor where it is
    s.x = cx - (cx - s.x) * (next / s.scale);
    s.y = cy - (cy - s.y) * (next / s.scale);
    s.scale = next;
    if (next === 1) { s.x = 0; s.y = 0; }
    applyTransform(id);
  }

  function pan(id, dx, dy) {
    var s = state(id);
    if (s.scale === 1) return;
    s.x += dx; s.y += dy;
    applyTransform(id);
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest("[data-zoom],[data-window-reset]") : null;
    if (!t) return;
    var id = t.getAttribute("data-target");
    if (t.hasAttribute("data-window-reset")) {
      var s = state(id); s.brightness = 100; s.contrast = 100; applyTransform(id); restore();
      return;
    }
    var how = t.getAttribute("data-zoom");
    if (how === "in") zoom(id, 1.25);
    else if (how === "out") zoom(id, 0.8);
    else { var st = state(id); st.scale = 1; st.x = 0; st.y = 0; applyTransform(id); }
  });

  document.addEventListener("wheel", function (ev) {
    var vp = ev.target.closest ? ev.target.closest("[data-viewport]") : null;
    if (!vp) return;
    ev.preventDefault();
    var r = vp.getBoundingClientRect();
    zoom(vp.getAttribute("data-viewport"), ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });

  var drag = null;
  document.addEventListener("pointerdown", function (ev) {
    var vp = ev.target.closest ? ev.target.closest("[data-viewport]") : null;
    if (!vp || ev.button !== 0) return;
    drag = { id: vp.getAttribute("data-viewport"), x: ev.clientX, y: ev.clientY, el: vp };
    vp.classList.add("panning");
  });
  document.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    pan(drag.id, ev.clientX - drag.x, ev.clientY - drag.y);
    drag.x = ev.clientX; drag.y = ev.clientY;
  });
  document.addEventListener("pointerup", function () {
    if (drag) drag.el.classList.remove("panning");
    drag = null;
  });
  document.addEventListener("keydown", function (ev) {
    var vp = document.activeElement;
    if (!vp || !vp.hasAttribute || !vp.hasAttribute("data-viewport")) return;
    var id = vp.getAttribute("data-viewport"), step = 40;
    var keys = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (keys[ev.key]) { pan(id, keys[ev.key][0], keys[ev.key][1]); ev.preventDefault(); }
    else if (ev.key === "+" || ev.key === "=") { zoom(id, 1.25); ev.preventDefault(); }
    else if (ev.key === "-") { zoom(id, 0.8); ev.preventDefault(); }
    else if (ev.key === "0") { var s = state(id); s.scale = 1; s.x = 0; s.y = 0; applyTransform(id); ev.preventDefault(); }
  });

  document.addEventListener("input", function (ev) {
    var t = ev.target;
    if (!t.getAttribute) return;
    var heatId = t.getAttribute("data-heatmap-opacity");
    if (heatId) {
      var img = document.getElementById(heatId);
      if (img) img.style.opacity = String(t.value / 100);
      t.setAttribute("aria-valuetext", t.value + "%");
      var out = document.getElementById(t.id + "-value");
      if (out) out.textContent = t.value + "%";
      state(heatId.replace("heatmap-", "")).opacity = parseInt(t.value, 10);
      return;
    }
    var win = t.getAttribute("data-window");
    if (win) {
      var id = t.getAttribute("data-target");
      state(id)[win] = parseInt(t.value, 10);
      applyTransform(id);
    }
  });

  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (!t.getAttribute) return;
    var toggleId = t.getAttribute("data-heatmap-toggle");
    if (toggleId) {
      var img = document.getElementById(toggleId);
      if (img) img.hidden = !t.checked;
      state(toggleId.replace("heatmap-", "")).on = t.checked;
      return;
    }
    var classFor = t.getAttribute("data-heatmap-class");
    if (classFor) {
      var id = classFor.replace("heatmap-", "");
      var opt = t.selectedOptions[0];
      state(id).camClass = t.value;
      var heat = document.getElementById(classFor);
      camNote(t);
      if (opt.dataset.src) { if (heat) heat.src = opt.dataset.src; return; }
      var body = new FormData();
      body.append("class_label", t.value);
      fetch(t.getAttribute("data-request-url"), {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
      }).then(function () {
        opt.textContent = t.value + " (computing…)";
        var panel = document.getElementById("study-results");
        if (panel && !panel.getAttribute("data-poll-ms")) { panel.setAttribute("data-poll-ms", "1500"); poll(panel); }
      });
    }
  });

  // ---- live updates ---------------------------------------------------------------------------
  // Poll a server-rendered fragment until the work it shows has finished.
  function poll(el) {
    var ms = parseInt(el.getAttribute("data-poll-ms"), 10);
    var url = el.getAttribute("data-poll-url");
    if (!ms || !url) return;
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
        .then(function (html) {
          el.innerHTML = html;
          applyDataStyles(el);
          restore(el);
          if (el.querySelector("[data-pending]:not([data-pending=''])")) poll(el);
          else { el.removeAttribute("data-poll-ms"); settled(el); }
        })
        .catch(function () {
          el.setAttribute("data-poll-ms", String(Math.min(ms * 2, 30000)));
          poll(el);
        });
    }, ms);
  }

  // The study's results have all arrived: a reading form that was drawn while the model was still
  // working (it could only read "without a model result") is replaced by the page's fresh one,
  // unless the radiologist has started filling it in; then a note says to reload.
  function settled(el) {
    var reading = document.getElementById("reading");
    if (el.id !== "study-results" || !reading || !reading.hasAttribute("data-awaits-result")) return;
    var form = reading.querySelector("form");
    var touched = form && Array.prototype.some.call(form.querySelectorAll("textarea, select"),
      function (f) { return f.value !== ""; });
    if (touched) {
      if (!reading.querySelector(".result-arrived")) {
        var note = document.createElement("p");
        note.className = "notice result-arrived";
        note.setAttribute("role", "status");
        note.textContent = "The model's result has arrived. Reload the page to read with it (what you typed here is not kept).";
        reading.insertBefore(note, form);
      }
      return;
    }
    fetch(reading.getAttribute("data-refresh-url"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("reading");
        if (fresh) reading.replaceWith(fresh);
      })
      .catch(function () { /* the form still works: the server checks it against the result */ });
  }

  // Reload a region of the current page (a training page's list) while its work goes on.
  function refreshRegion(el) {
    var ms = parseInt(el.getAttribute("data-refresh"), 10);
    if (!ms) return;
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(el.id);
          if (!fresh) return;
          el.innerHTML = fresh.innerHTML;
          applyDataStyles(el);
          var next = fresh.getAttribute("data-refresh");
          if (next) { el.setAttribute("data-refresh", next); refreshRegion(el); }
          else el.removeAttribute("data-refresh");
        })
        .catch(function () { refreshRegion(el); });
    }, ms);
  }

  // ---- the live worklist ---------------------------------------------------------------------
  // While the tab is visible, every few seconds: ask the change token whether anything the
  // worklist shows may have changed (worklist/changes/?since=TOKEN with the page's filters, two
  // small queries on the server), and only then fetch the table (worklist/rows/, the same filters
  // and page) and swap it in. The reader keeps their place: the filters are outside the table,
  // the first row on screen stays where it was, a focused link keeps its focus. Studies that
  // arrive are marked, and an "N new" button jumps to the first of them and clears the marks.
  function setupLiveWorklist(el) {
    var ms = parseInt(el.getAttribute("data-live-ms"), 10) || 3000;
    var token = el.getAttribute("data-live-token") || "";
    var query = window.location.search.replace(/^\?/, "");
    var marker = document.querySelector("[data-live-new]");
    var button = marker && marker.querySelector("[data-live-new-button]");
    var known = {};   // the study ids this page has shown
    var arrived = 0;  // studies uploaded since the page opened or the reader cleared the marks
    var lastHtml = null, timer = null, busy = false;
    rows(el).forEach(function (tr) { known[tr.getAttribute("data-study-id")] = true; });

    function rows(root) { return Array.prototype.slice.call(root.querySelectorAll("tr[data-study-id]")); }
    function url(base, extra) {
      var q = [query, extra].filter(Boolean).join("&");
      return base + (q ? "?" + q : "");
    }
    function fetchOk(u, accept) {
      return fetch(u, { credentials: "same-origin", headers: { Accept: accept } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r; });
    }
    function schedule(delay) { window.clearTimeout(timer); timer = window.setTimeout(check, delay); }

    function check() {
      if (busy || document.visibilityState !== "visible") return;  // visibilitychange resumes
      busy = true;
      fetchOk(url(el.getAttribute("data-live-changes-url"), "since=" + encodeURIComponent(token)),
              "application/json")
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (!data.changed) return;
          return fetchOk(url(el.getAttribute("data-live-rows-url"), ""), "text/html")
            .then(function (r) { return r.text(); })
            .then(function (html) {
              if (html !== lastHtml) swap(html);
              lastHtml = html;
              token = data.token;
              arrived += data["new"] || 0;
              showMarker();
            });
        })
        .then(function () { busy = false; schedule(ms); },
              function () { busy = false; schedule(Math.min(ms * 4, 30000)); });
    }

    function focusKey(node) {
      var tr = node.closest("tr[data-study-id]");
      return { row: tr ? tr.getAttribute("data-study-id") : null, href: node.getAttribute("href"),
               text: node.textContent };
    }
    function findFocus(key) {
      return Array.prototype.find.call(el.querySelectorAll("a, button, [tabindex]"), function (n) {
        var tr = n.closest("tr[data-study-id]");
        return (tr ? tr.getAttribute("data-study-id") : null) === key.row &&
          n.getAttribute("href") === key.href && (key.row || n.textContent === key.text);
      });
    }

    function swap(html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      if (!doc.querySelector("table.worklist")) throw new Error("not the worklist (signed out?)");
      // The reader's place: the first row still on screen, when they have scrolled into the table
      // (at its top, new rows simply show above the others).
      var anchor = null, anchorTop = 0;
      if (el.getBoundingClientRect().top < 0) {
        anchor = rows(el).find(function (tr) { return tr.getBoundingClientRect().bottom > 0; });
        if (anchor) { anchorTop = anchor.getBoundingClientRect().top; anchor = anchor.getAttribute("data-study-id"); }
      }
      var active = document.activeElement;
      var focus = active && active !== el && el.contains(active) ? focusKey(active) : null;
      var marked = {};
      rows(el).forEach(function (tr) { if (tr.classList.contains("row-new")) marked[tr.getAttribute("data-study-id")] = true; });

      el.replaceChildren.apply(el, Array.prototype.map.call(doc.body.childNodes,
        function (n) { return document.importNode(n, true); }));
      rows(el).forEach(function (tr) {
        var id = tr.getAttribute("data-study-id");
        if (!known[id] || marked[id]) markNew(tr);
        known[id] = true;
      });
      applyDataStyles(el);
      if (focus) { var again = findFocus(focus); if (again) again.focus({ preventScroll: true }); }
      if (anchor) {
        var row = el.querySelector('tr[data-study-id="' + anchor + '"]');
        if (row) window.scrollBy(0, row.getBoundingClientRect().top - anchorTop);
      }
    }

    function markNew(tr) {
      tr.classList.add("row-new");
      var cell = tr.querySelector("td");
      if (cell && !cell.querySelector(".new-badge")) {
        var badge = document.createElement("span");
        badge.className = "new-badge";
        badge.textContent = "new";
        cell.appendChild(badge);
      }
    }
    function clearMarks() {
      rows(el).forEach(function (tr) {
        tr.classList.remove("row-new");
        tr.querySelectorAll(".new-badge").forEach(function (b) { b.remove(); });
      });
    }
    function showMarker() {
      if (!marker || !button) return;
      button.textContent = arrived + " new";
      marker.hidden = arrived <= 0;
    }

    if (button) {
      button.addEventListener("click", function () {
        var first = el.querySelector("tr.row-new");
        arrived = 0;
        showMarker();
        if (!first && /(^|&)page=/.test(query)) {  // they arrived on the first page
          var rest = query.split("&").filter(function (p) { return p && p.indexOf("page=") !== 0; });
          window.location.href = window.location.pathname + (rest.length ? "?" + rest.join("&") : "");
          return;
        }
        clearMarks();
        if (first) {
          first.scrollIntoView({ block: "center" });
          var link = first.querySelector("a");
          if (link) link.focus({ preventScroll: true });
        }
      });
    }
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") schedule(0);
    });
    schedule(ms);
  }

  // ---- several uploads at once ----------------------------------------------------------------
  function setupUploader(form) {
    var input = form.querySelector("input[type=file]");
    var list = form.querySelector("[data-file-list]");
    var zone = form.querySelector("[data-dropzone]");
    var note = form.querySelector("[data-dicom-note]");
    var files = [];
    // Files sent together are one study: every file after the first carries the accession number
    // the first one got (the server uses it when a file has none of its own).
    var batch = { accession: "" };

    function render() {
      list.innerHTML = "";
      files.forEach(function (f, i) {
        var li = document.createElement("li");
        li.innerHTML = '<span class="fname"></span><progress max="100" value="0" aria-label="Upload progress"></progress><span class="fstate">ready</span>';
        li.querySelector(".fname").textContent = f.name + " (" + Math.max(1, Math.round(f.size / 1024)) + " KB)";
        li.id = "upload-file-" + i;
        list.appendChild(li);
      });
    }

    function add(newFiles) {
      Array.prototype.forEach.call(newFiles, function (f) { files.push(f); });
      render();
      peekDicom();
    }

    function isDicom(file) {
      return file.slice(128, 132).arrayBuffer().then(function (buf) {
        return new TextDecoder().decode(buf) === "DICM";
      });
    }

    function peekDicom() {
      var candidates = files.slice(0, 10);
      (function next(i) {
        if (i >= candidates.length) return;
        isDicom(candidates[i]).then(function (yes) {
          if (!yes) return next(i + 1);
          var body = new FormData();
          body.append("file", candidates[i].slice(0, 1024 * 1024), candidates[i].name);
          fetch(form.getAttribute("data-peek-url"), { method: "POST", body: body, credentials: "same-origin",
            headers: { "X-CSRFToken": csrfToken() } })
            .then(function (r) { return r.ok ? r.json() : null; })
            .then(function (tags) {
              if (!tags) return;
              var map = { patient_id: "patient_id", patient_name: "patient_name", patient_sex: "patient_sex",
                          patient_birth_date: "patient_birth_date", accession_number: "accession_number",
                          view: "view_position" };
              var filled = [];
              Object.keys(map).forEach(function (field) {
                var el = form.elements[field], value = tags[map[field]];
                if (el && value && !el.value) { el.value = value; filled.push(el.labels[0] ? el.labels[0].textContent : field); }
              });
              if (note && filled.length) { note.hidden = false; note.textContent = "Filled from the DICOM tags of " + candidates[i].name + ": " + filled.join(", ") + "."; }
            });
        });
      })(0);
    }

    input.addEventListener("change", function () { files = []; add(input.files); });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (ev) { ev.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function (ev) { ev.preventDefault(); zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (ev) { add(ev.dataTransfer.files); });

    // The summary under the list, once every file has an answer; a file whose patient is to be
    // checked has none yet. One file uploaded alone goes straight to its study.
    function summarise() {
      var lis = list.querySelectorAll("li");
      var ok = list.querySelectorAll(".fstate.ok").length;
      var waiting = list.querySelectorAll(".identity-mismatch").length;
      if (lis.length === 1 && ok === 1) {
        window.location.href = list.querySelector(".fstate.ok a").href;
        return;
      }
      if (!note) return;
      note.hidden = false;
      note.textContent = ok + " of " + lis.length + " file(s) uploaded" + (waiting ?
        "; " + waiting + (waiting === 1 ? " waits" : " wait") + " for you to check the patient." :
        (ok ? ". They appear in the worklist as they are analysed." : "."));
    }

    function sexLabel(code) {
      var select = form.elements.patient_sex;
      var option = code && select && Array.prototype.find.call(select.options, function (o) { return o.value === code; });
      return option ? option.textContent : (code || "");
    }

    // A 409 identity_mismatch: both sets of details, as the page without JavaScript shows them
    // (as text: they are patient data), a button that sends the same file and fields again with
    // confirm_identity=true, and one that leaves it unsent.
    function showMismatch(li, st, data, file, i, fields) {
      st.textContent = "Not uploaded yet: check the patient.";
      var box = document.createElement("div");
      box.className = "notice identity-mismatch";
      box.setAttribute("role", "alert");
      box.innerHTML = '<p><strong></strong> Check that this image is of that patient before you go on.</p>' +
        '<table class="table"><thead><tr><th scope="col">Detail</th><th scope="col">On record</th>' +
        '<th scope="col">This upload</th></tr></thead><tbody></tbody></table><p class="actions"></p>';
      box.querySelector("strong").textContent = "Patient " + data.patient_id + " is on record with other details.";
      var tbody = box.querySelector("tbody");
      [["name", "Name"], ["sex", "Sex"], ["birth_date", "Birth date"]].forEach(function (f) {
        var tr = document.createElement("tr"), differs = data.mismatched.indexOf(f[0]) >= 0;
        if (differs) tr.className = "differs";
        [f[1] + (differs ? " (differs)" : ""), data.stored[f[0]], data.submitted[f[0]]].forEach(function (v, col) {
          var cell = document.createElement(col ? "td" : "th");
          if (!col) cell.scope = "row";
          cell.textContent = (f[0] === "sex" && col ? sexLabel(v) : v) || "—";
          tr.appendChild(cell);
        });
        tbody.appendChild(tr);
      });
      var actions = box.querySelector(".actions");
      var confirm = document.createElement("button");
      confirm.type = "button"; confirm.className = "button primary";
      confirm.textContent = "This is the same patient: upload";
      confirm.addEventListener("click", function () {
        box.remove();
        uploadOne(file, i, fields, true).then(summarise);
      });
      var cancel = document.createElement("button");
      cancel.type = "button"; cancel.className = "button";
      cancel.textContent = "Not the same patient: do not upload";
      cancel.addEventListener("click", function () {
        box.remove();
        st.textContent = "Not uploaded: the details do not match patient " + data.patient_id + ".";
        summarise();
      });
      actions.appendChild(confirm); actions.appendChild(cancel);
      var help = document.createElement("p");
      help.className = "help";
      help.textContent = "The image joins the patient on record; the recorded details stay as they are. The confirmation is recorded in the audit trail.";
      box.appendChild(help);
      li.appendChild(box);
    }

    // fields: the form's values when the file was first sent, so that a confirmation applies to
    // the details shown, even if the form was edited since.
    function uploadOne(file, i, fields, confirmIdentity) {
      return new Promise(function (resolve) {
        var li = document.getElementById("upload-file-" + i);
        var bar = li.querySelector("progress"), st = li.querySelector(".fstate");
        var body = new FormData();
        body.append("image", file, file.name);
        Object.keys(fields).forEach(function (name) { body.append(name, fields[name]); });
        if (confirmIdentity) body.append("confirm_identity", "true");
        if (batch.accession) body.append("batch_accession", batch.accession);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.getAttribute("data-api-url"));
        xhr.setRequestHeader("X-CSRFToken", csrfToken());
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.onprogress = function (e) { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
        xhr.onload = function () {
          var data = {};
          try { data = JSON.parse(xhr.responseText); } catch (e) { data = { error: "HTTP " + xhr.status }; }
          if (xhr.status === 201) {
            bar.value = 100; st.className = "fstate ok"; st.removeAttribute("role");
            st.innerHTML = 'uploaded: <a></a>';
            var a = st.querySelector("a"); a.href = data.url; a.textContent = data.accession_number;
            if (!batch.accession) batch.accession = data.accession_number;
            resolve(true);
          } else if (xhr.status === 409 && data.code === "identity_mismatch") {
            st.className = "fstate err";
            showMismatch(li, st, data, file, i, fields);
            resolve(false);
          } else {
            st.className = "fstate err"; st.setAttribute("role", "alert");
            st.textContent = data.error || ("Upload failed (HTTP " + xhr.status + ").");
            resolve(false);
          }
        };
        xhr.onerror = function () { st.className = "fstate err"; st.textContent = "Network error: the file was not uploaded."; resolve(false); };
        st.className = "fstate"; st.textContent = "uploading…";
        xhr.send(body);
      });
    }

    form.addEventListener("submit", function (ev) {
      if (!files.length) return;  // let the server say that a file is required
      ev.preventDefault();
      var button = form.querySelector("[data-upload-button]");
      button.disabled = true;
      var fields = {};
      ["patient_id", "accession_number", "view", "priority", "patient_name", "patient_sex", "patient_birth_date"].forEach(function (name) {
        var el = form.elements[name];
        if (el && el.value) fields[name] = el.value;
      });
      // The box the page without JavaScript shows after a mismatch, ticked: confirmed for all.
      var confirmBox = form.elements.confirm_identity, confirmAll = !!(confirmBox && confirmBox.checked);
      render();  // a new submit starts the list afresh (an earlier confirm step is dropped)
      batch = { accession: "" };
      (function next(i) {
        if (i >= files.length) {
          button.disabled = false;
          summarise();
          return;
        }
        uploadOne(files[i], i, fields, confirmAll).then(function () { next(i + 1); });
      })(0);
    });
  }

  // ---- keyboard shortcuts on the study page ----------------------------------------------------
  // j / k: next / previous study in the worklist's order (asked of the server, which reads it from
  // the worklist selector); o: heatmaps on/off; a: agree; v: override. Never while typing.
  function typing(el) {
    if (!el || !el.tagName) return false;
    var tag = el.tagName;
    return el.isContentEditable || tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && !/^(checkbox|radio|range|button|submit|reset)$/i.test(el.type));
  }

  var WORKLIST_FILTERS = "cxr.worklist.filters";

  function rememberWorklistFilters(el) {
    try { window.sessionStorage.setItem(WORKLIST_FILTERS, el.getAttribute("data-worklist-filters") || ""); } catch (e) { /* storage off: j/k follow the whole worklist */ }
  }

  function setupStudyKeys(root) {
    var url = root.getAttribute("data-neighbours-url");
    var help = document.getElementById("study-keys-status");

    function say(text) { if (help) help.textContent = text; }

    function go(direction) {
      // The worklist's filters, as the worklist page last showed them in this tab.
      var filters = "";
      try { filters = window.sessionStorage.getItem(WORKLIST_FILTERS) || ""; } catch (e) { filters = ""; }
      fetch(url + (filters ? "?" + filters : ""), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (d) {
          var list = d.filtered ? "the filtered worklist" : "the worklist";
          if (d[direction]) window.location.href = d[direction];
          else say(direction === "next" ? "This is the last study in " + list + "." : "This is the first study in " + list + ".");
        })
        .catch(function () { say("The worklist could not be reached; try again."); });
    }

    function decide(value) {
      var radio = document.querySelector("#reading input[name=decision][value=" + value + "]");
      if (!radio) {
        // An unreliable result offers no "agree" (templates/diagnosis/_reading.html): the final
        // label is chosen, and v goes straight to it.
        var withheld = document.querySelector("[data-agree-withheld]");
        if (withheld && value === "agree") say("Nothing to agree with: the model's result is unreliable. Choose the final label.");
        var select = withheld && value === "override" ? document.querySelector("#reading select[name=final_label]") : null;
        if (select) select.focus();
        return;
      }
      radio.click();
      var form = radio.form;
      var target = value === "override" ? form.querySelector("select[name=final_label]")
                                        : form.querySelector("button[type=submit]");
      if (target) target.focus();
    }

    document.addEventListener("keydown", function (ev) {
      if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
      var key = ev.key;
      if (key === "j" || key === "k") go(key === "j" ? "next" : "previous");
      else if (key === "o") document.querySelectorAll("[data-heatmap-toggle]").forEach(function (t) { t.click(); });
      else if (key === "a") decide("agree");
      else if (key === "v") decide("override");
      else return;
      ev.preventDefault();
    });
  }

  window.cxrPoll = poll;
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-worklist-filters]").forEach(rememberWorklistFilters);
    document.querySelectorAll("[data-neighbours-url]").forEach(setupStudyKeys);
    applyDataStyles();
    document.querySelectorAll("[data-poll-url][data-poll-ms]").forEach(poll);
    document.querySelectorAll("[data-refresh]").forEach(refreshRegion);
    document.querySelectorAll("[data-live-changes-url]").forEach(setupLiveWorklist);
    document.querySelectorAll("[data-multi-upload]").forEach(setupUploader);
  });
})();
