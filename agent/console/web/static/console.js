// rtmanager console: live updates. The page names what it shows
// (body data-live, data-game); this script listens to /live (Server-Sent
// Events) and, when something relevant happens, fetches the page's live
// region again (X-Console-Fragment) and swaps it in. It also refreshes on
// a timer, faster while the stream is down: the polling fallback.
// Everything it inserts is HTML the server rendered and escaped.
(function () {
  'use strict';
  var body = document.body;
  var kind = body.getAttribute('data-live');
  if (!kind) { return; }
  var game = body.getAttribute('data-game') || '';
  var region = document.getElementById('live-region');
  var state = document.getElementById('live-state');
  var connected = false;
  var timer = null;
  var inflight = false;
  var again = false;
  // A game's page follows its events closely; the fleet page (a scan of
  // every record) at most every few seconds.
  var debounce = { game: 250, job: 250, games: 1000, jobs: 1000, activity: 2000, fleet: 3000 }[kind] || 1000;

  function typing() {
    var a = document.activeElement;
    return a && region.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }

  function refresh() {
    if (inflight) { again = true; return; }
    if (typing()) { schedule(2000); return; }
    inflight = true;
    fetch(location.href, { headers: { 'X-Console-Fragment': '1' }, credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        var open = {};
        region.querySelectorAll('details[open]').forEach(function (d) { open[d.getAttribute('data-key')] = true; });
        region.innerHTML = html;
        region.querySelectorAll('details[data-key]').forEach(function (d) {
          if (open[d.getAttribute('data-key')]) { d.open = true; }
        });
        body.setAttribute('data-refreshed', String(Number(body.getAttribute('data-refreshed') || '0') + 1));
      })
      .catch(function () { /* the next change or tick tries again */ })
      .then(function () {
        inflight = false;
        if (again) { again = false; schedule(debounce); }
      });
  }

  function schedule(ms) {
    if (timer !== null) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, ms);
  }

  function setConnected(on) {
    connected = on;
    if (state) { state.className = on ? 'live on' : 'live'; }
    body.setAttribute('data-live-connected', on ? 'yes' : 'no');
  }

  if (window.EventSource) {
    var es = new EventSource('/live' + (game ? '?game=' + encodeURIComponent(game) : ''));
    es.onopen = function () { setConnected(true); };
    es.onerror = function () { setConnected(false); };
    var onChange = function () { schedule(debounce); };
    es.addEventListener('event', onChange);
    es.addEventListener('job', onChange);
  }

  // The safety net: claims and heartbeats write no event, and a proxy may
  // cut the stream.
  setInterval(function () {
    if (document.visibilityState === 'hidden') { return; }
    if (!connected || Date.now() - lastTick > 15000) { lastTick = Date.now(); refresh(); }
  }, 5000);
  var lastTick = Date.now();
}());
