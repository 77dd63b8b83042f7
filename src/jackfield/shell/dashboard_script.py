"""The dashboard's script, served at `GET /dashboard.js` (the page's CSP allows only scripts
from its own origin: no inline script, no eval).

Every second (while the tab is visible) it fetches `dashboard.json?since=<token>` and swaps in
the parts the server says changed (core/dashboard.py renders them: there is no templating
here), moves and removes parts to follow the layout, and keeps open `<details>` open. A 204
means nothing changed. Errors back off up to 30 s and say so in the header. At load it stamps
`<html data-loaded>`: a reload would stamp a new one (the browser tests rely on it).
"""

from __future__ import annotations

SCRIPT = r"""'use strict';
(function () {
  var root = document.documentElement;
  root.dataset.loaded = Date.now() + '-' + Math.random().toString(36).slice(2);
  root.dataset.updates = '0';
  var main = document.getElementById('dash');
  var since = (main && main.dataset.since) || '';
  var failures = 0;
  var live = document.getElementById('live');

  function say(text, css) {
    if (live) { live.textContent = text; live.className = css; }
  }

  function make(html) {
    var t = document.createElement('template');
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function keepOpen(old, fresh) {
    if (!old) return;
    old.querySelectorAll('details[open][id]').forEach(function (d) {
      var again = fresh.querySelector('#' + CSS.escape(d.id));
      if (again) again.open = true;
    });
  }

  // True when every part of the layout could be placed (else the next poll asks for all).
  function apply(doc) {
    var whole = true;
    Object.keys(doc.layout).forEach(function (box) {
      var parent = document.getElementById(box);
      if (!parent) { whole = false; return; }
      var prev = null;
      doc.layout[box].forEach(function (id) {
        var el = document.getElementById(id);
        if (Object.prototype.hasOwnProperty.call(doc.html, id)) {
          var fresh = make(doc.html[id]);
          if (!fresh) { whole = false; return; }
          keepOpen(el, fresh);
          if (el) el.replaceWith(fresh);
          el = fresh;
        }
        if (!el) { whole = false; return; }
        var want = prev ? prev.nextElementSibling : parent.firstElementChild;
        if (el !== want) parent.insertBefore(el, want);
        prev = el;
      });
      var extra;
      while ((extra = prev ? prev.nextElementSibling : parent.firstElementChild)) extra.remove();
    });
    document.title = doc.title;
    return whole;
  }

  function next() {
    var delay = failures ? Math.min(30000, 1000 * Math.pow(2, failures)) : 1000;
    setTimeout(poll, delay);
  }

  function poll() {
    if (document.hidden) { next(); return; }
    var url = 'dashboard.json' + (since ? '?since=' + encodeURIComponent(since) : '');
    fetch(url, {cache: 'no-store', credentials: 'same-origin'})
      .then(function (r) {
        if (r.status === 204) return null;
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (doc) {
        if (doc) {
          since = apply(doc) ? doc.since : '';
          root.dataset.updates = String(Number(root.dataset.updates) + 1);
        }
        failures = 0;
        say('live · ' + new Date().toISOString().slice(11, 19) + ' UTC', 'muted');
      })
      .catch(function (e) {
        failures += 1;
        say('not updating (' + e.message + '), retrying', 'err');
      })
      .then(next);
  }

  poll();
})();
"""
