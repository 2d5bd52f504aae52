// lanseed client: defines window.lanseed for a page served by `lanseed device`.
// The page's bundle id comes from its own document response (Server-Timing),
// so notifyAppReady() always confirms the bundle the page was served from.
(function () {
  "use strict";
  if (window.lanseed) return;
  var served = "__LANSEED_BUNDLE__";
  function pageBundle() {
    try {
      var nav = performance.getEntriesByType("navigation")[0];
      var timing = (nav && nav.serverTiming) || [];
      for (var i = 0; i < timing.length; i++) {
        if (timing[i].name === "lanseed") return timing[i].description;
      }
    } catch (e) {}
    return served;
  }
  var bundle = pageBundle();
  var handlers = {};
  var names = ["download", "updateAvailable", "downloadComplete", "downloadFailed",
               "set", "updateFailed", "appReloaded", "appReady"];
  function emit(name, data) {
    (handlers[name] || []).forEach(function (cb) {
      try { cb(data); } catch (e) { console.error(e); }
    });
  }
  if (window.EventSource) {
    var events = new EventSource("/__lanseed/events");
    // A switch while this page was loading, or while the connection was
    // down, sent it no event: every (re)connection begins with the
    // current bundle.
    events.addEventListener("current", function (ev) {
      var c = {};
      try { c = JSON.parse(ev.data); } catch (e) {}
      if (c.bundle && c.bundle !== bundle) location.reload();
    });
    names.forEach(function (name) {
      events.addEventListener(name, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data); } catch (e) {}
        emit(name, data);
        // A new bundle is current (applied at once, or a rollback): show it.
        if (name === "appReloaded" && data.bundle && data.bundle !== bundle) {
          location.reload();
        }
      });
    });
  }
  window.lanseed = {
    bundleId: bundle,
    notifyAppReady: function () {
      return fetch("/__lanseed/ready", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ bundle: bundle })
      }).then(function (r) { return r.json(); });
    },
    current: function () {
      return fetch("/__lanseed/current", { cache: "no-store" }).then(function (r) { return r.json(); });
    },
    on: function (name, cb) {
      (handlers[name] = handlers[name] || []).push(cb);
    }
  };
})();
