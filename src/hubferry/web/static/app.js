// hubferry dashboard: forms that talk to the JSON API, dataset upload, repo-name preview, log follow.
// Loaded from 'self' only (the pages' CSP forbids inline scripts and eval).
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function apiHeaders(json) {
    var headers = { "X-CSRF-Token": csrf(), "Accept": "application/json" };
    if (json) headers["Content-Type"] = "application/json";
    return headers;
  }

  function errorText(body, status) {
    var e = body && body.error;
    if (!e) return "The request failed (HTTP " + status + ").";
    return e.message + (e.hint ? " — " + e.hint : "");
  }

  function showError(form, text) {
    var box = form.querySelector(".form-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  // <form data-api-method="PUT" data-api-url="/api/v1/..." data-api-then="reload|show-token">:
  // its non-empty fields are sent as JSON with the session's CSRF token.
  function onApiSubmit(event) {
    var form = event.target.closest("form[data-api-url]");
    if (!form) return;
    event.preventDefault();
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var method = form.getAttribute("data-api-method") || "POST";
    var body = {};
    var any = false;
    new FormData(form).forEach(function (value, key) {
      if (typeof value === "string" && value.trim() !== "") { body[key] = value.trim(); any = true; }
    });
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    showError(form, "");
    var sendBody = any || (method !== "DELETE" && method !== "POST");
    fetch(form.getAttribute("data-api-url"), {
      method: method, credentials: "same-origin", headers: apiHeaders(sendBody),
      body: sendBody ? JSON.stringify(body) : undefined
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      var parsed = type.indexOf("json") >= 0 ? response.json() : Promise.resolve(null);
      return parsed.then(function (data) { return { ok: response.ok, status: response.status, data: data }; });
    }).then(function (result) {
      if (button) button.disabled = false;
      if (!result.ok) { showError(form, errorText(result.data, result.status)); return; }
      var then = form.getAttribute("data-api-then");
      if (then === "show-token" && result.data && result.data.token) {
        var box = form.querySelector(".new-token");
        box.querySelector(".token-value").textContent = result.data.token;
        box.hidden = false;
        form.reset();
      } else {
        window.location.reload();
      }
    }).catch(function () {
      if (button) button.disabled = false;
      showError(form, "The server could not be reached. Try again.");
    });
  }

  // A plain <form method="post" data-confirm="..."> (posted by the browser, CSRF token as a field): ask first.
  function onConfirmSubmit(event) {
    var form = event.target.closest("form[data-confirm]:not([data-api-url])");
    if (!form) return;
    if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
  }

  // The dataset drop zone: upload to /api/v1/datasets, check it, show the report, keep its id.
  function setupDropzone(zone) {
    var input = zone.querySelector('input[type=file]');
    var hidden = zone.querySelector('input[name=dataset_upload_id]');
    var status = zone.querySelector(".upload-status");
    if (!input || input.disabled) return;
    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("error", !!isError);
    }
    function upload(file) {
      var data = new FormData();
      data.append("file", file, file.name);
      say("Uploading " + file.name + "…");
      zone.classList.add("busy");
      fetch("/api/v1/datasets", { method: "POST", credentials: "same-origin", headers: apiHeaders(false), body: data })
        .then(function (r) { return r.json().then(function (d) { return { ok: r.ok, status: r.status, data: d }; }); })
        .then(function (res) {
          if (!res.ok) throw new Error(errorText(res.data, res.status));
          say("Checking " + file.name + "…");
          var trigger = document.getElementById("f-trigger_word");
          var options = trigger && trigger.value.trim() ? { trigger_word: trigger.value.trim() } : {};
          return fetch("/api/v1/datasets/" + res.data.id + "/check", {
            method: "POST", credentials: "same-origin", headers: apiHeaders(true), body: JSON.stringify(options)
          }).then(function (r) { return r.json().then(function (d) { return { ok: r.ok, status: r.status, data: d }; }); });
        })
        .then(function (res) {
          zone.classList.remove("busy");
          if (!res.ok) throw new Error(errorText(res.data, res.status));
          hidden.value = res.data.id;
          showReport(res.data);
        })
        .catch(function (err) { zone.classList.remove("busy"); hidden.value = ""; say(err.message, true); });
    }
    function showReport(dataset) {
      var report = dataset.report || {};
      var counts = report.counts || {};
      status.textContent = "";
      var line = document.createElement("p");
      line.className = "upload-summary";
      line.textContent = dataset.filename + ": " + (counts.accepted || 0) + " images, " +
        (counts.rejected || 0) + " rejected" + (report.usable === false ? " — not usable" : "");
      status.appendChild(line);
      var thumbs = document.createElement("ul");
      thumbs.className = "thumbs";
      (report.images || []).slice(0, 24).forEach(function (image) {
        var li = document.createElement("li");
        var img = document.createElement("img");
        img.src = image.thumbnail; img.alt = image.name; img.width = 72; img.height = 72;
        li.appendChild(img);
        thumbs.appendChild(li);
      });
      status.appendChild(thumbs);
      if ((report.rejections || []).length) {
        var list = document.createElement("ul");
        list.className = "rejections";
        report.rejections.slice(0, 50).forEach(function (r) {
          var li = document.createElement("li");
          li.textContent = r.source + ": " + r.reason;
          list.appendChild(li);
        });
        status.appendChild(list);
      }
    }
    input.addEventListener("change", function () { if (input.files.length) upload(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
    });
  }

  // The repo a job would publish to, from the API's naming preview (the auto-naming rule).
  function setupPreview(form) {
    var name = form.querySelector("#f-name");
    var repo = form.querySelector("#f-repo_id");
    var endpoint = form.querySelector("#f-endpoint");
    var out = document.getElementById("repo-preview");
    if (!name || !out) return;
    var timer = null;
    var seq = 0;
    function update() {
      if (repo && repo.value.trim()) { out.textContent = repo.value.trim(); return; }
      var text = name.value.trim();
      if (!text) { out.textContent = "…"; return; }
      var url = "/api/v1/naming/preview?name=" + encodeURIComponent(text);
      if (endpoint && endpoint.value.trim()) url += "&endpoint=" + encodeURIComponent(endpoint.value.trim());
      var mine = ++seq;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (d) { return { ok: r.ok, status: r.status, data: d }; }); })
        .then(function (res) {
          if (mine !== seq) return;
          if (res.ok) {
            out.textContent = res.data.repo_id + (res.data.token_source === "none" ? " (no Hub token yet)" : "");
          } else if (res.status === 401) {
            out.textContent = "your Hub user name / " + text + " (sign in to see the exact name)";
          } else {
            out.textContent = errorText(res.data, res.status);
          }
        }).catch(function () { /* the preview is a convenience */ });
    }
    function later() { clearTimeout(timer); timer = setTimeout(update, 300); }
    [name, repo, endpoint].forEach(function (el) { if (el) el.addEventListener("input", later); });
    update();
  }

  // A log that follows: stays scrolled to the end unless the reader scrolled up.
  function setupLogFollow() {
    document.body.addEventListener("htmx:beforeSwap", function (e) {
      var el = e.detail.target;
      if (el && el.hasAttribute("data-follow")) {
        el.dataset.atEnd = (el.scrollHeight - el.scrollTop - el.clientHeight < 24) ? "1" : "0";
      }
    });
    document.body.addEventListener("htmx:afterSwap", function (e) {
      var el = e.detail.target;
      if (el && el.hasAttribute("data-follow") && el.dataset.atEnd !== "0") el.scrollTop = el.scrollHeight;
    });
    document.querySelectorAll("[data-follow]").forEach(function (el) { el.scrollTop = el.scrollHeight; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("submit", onApiSubmit);
    document.addEventListener("submit", onConfirmSubmit);
    document.querySelectorAll("[data-dropzone]").forEach(setupDropzone);
    var form = document.getElementById("new-job");
    if (form) setupPreview(form);
    setupLogFollow();
  });
})();
