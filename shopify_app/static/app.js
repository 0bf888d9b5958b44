// Segments & Bundles: progressive enhancement only. Without App Bridge (no `window.shopify`) every page and form
// works as plain HTML; with it, forms get a fresh session token, the import progress updates itself and CSV
// downloads go through an authenticated fetch.
(function () {
  "use strict";
  function bridge() { return window.shopify && typeof window.shopify.idToken === "function" ? window.shopify : null; }

  // Forms: session tokens live one minute, so put a fresh one in the hidden field just before submitting.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute("data-token-form") || !bridge() || form.dataset.tokenFresh) return;
    ev.preventDefault();
    var submitter = ev.submitter;
    bridge().idToken().then(function (token) {
      form.querySelector("[data-session-token]").value = token;
      form.dataset.tokenFresh = "1";
      if (form.requestSubmit) form.requestSubmit(submitter || undefined); else form.submit();
    });
  });

  // CSV: fetch with the session token (App Bridge also adds it to same-origin fetches) and save the file.
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest && ev.target.closest("a[data-download]");
    if (!a || !bridge()) return;
    ev.preventDefault();
    bridge().idToken().then(function (token) {
      return fetch(a.href, { headers: { Authorization: "Bearer " + token } });
    }).then(function (resp) {
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.blob();
    }).then(function (blob) {
      var url = URL.createObjectURL(blob), tmp = document.createElement("a");
      tmp.href = url; tmp.download = a.dataset.download; document.body.appendChild(tmp); tmp.click();
      setTimeout(function () { URL.revokeObjectURL(url); tmp.remove(); }, 1000);
    }).catch(function () { window.location.href = a.href; });
  });

  // Import progress: poll the JSON summary every 5 s; reload the page (with a fresh token) when it ends.
  var box = document.querySelector("[data-testid=import-progress][data-active='1']");
  if (box && bridge()) {
    var poll = function () {
      bridge().idToken().then(function (token) {
        return fetch(box.dataset.summaryUrl, { headers: { Authorization: "Bearer " + token } })
          .then(function (r) { return r.json(); })
          .then(function (data) {
            var p = data.import_progress;
            if (!p || !p.active) {
              var u = new URL(window.location.href);
              u.searchParams.set("id_token", token);
              window.location.replace(u.toString());
              return;
            }
            var bar = box.querySelector("[role=progressbar]");
            if (p.total) {
              bar.setAttribute("aria-valuemax", p.total);
              bar.setAttribute("aria-valuenow", p.done);
              bar.setAttribute("aria-valuetext", p.done.toLocaleString() + " of " + p.total.toLocaleString() + " orders");
              box.querySelector(".progress-fill").style.width = (p.percent || 0).toFixed(1) + "%";
            }
            var set = function (f, v) { var el = box.querySelector("[data-field=" + f + "]"); if (el) el.textContent = v; };
            set("done", p.done.toLocaleString());
            if (p.percent != null) set("percent", Math.round(p.percent));
            if (p.eta_seconds != null) set("eta", p.eta_seconds < 60 ? p.eta_seconds + " s" : Math.round(p.eta_seconds / 60) + " min");
            setTimeout(poll, 5000);
          });
      }).catch(function () { setTimeout(poll, 15000); });
    };
    setTimeout(poll, 5000);
  }
})();
