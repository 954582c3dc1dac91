// waqueue console: progressive enhancement only. Every page works without this script; it adds
// the Clear Queue dialog, the phone-number gate on its confirm button, live card updates over
// server-sent events, ban countdowns and QR refreshes. Hand-written, no dependencies.
(function () {
  'use strict';
  var body = document.body;

  function digits(s) { return String(s || '').replace(/\D+/g, ''); }

  // --- ban countdowns -----------------------------------------------------------------------
  function left(ms) {
    if (ms <= 0) { return 'Ban ends now: waiting for WhatsApp to reconnect'; }
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var parts = h ? [h + ' h', m + ' min'] : m ? [m + ' min', s + ' s'] : [s + ' s'];
    return 'Ban ends in ' + parts.join(' ');
  }
  function tick() {
    var els = document.querySelectorAll('[data-countdown]');
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute('data-countdown'));
      if (!isNaN(t)) { els[i].textContent = left(t - Date.now()); }
    }
  }
  tick();
  setInterval(tick, 1000);

  // Times the server writes in UTC ("16:46 UTC") are shown in the browser's time zone.
  var clockFmt = window.Intl ? new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false, timeZoneName: 'short' }) : null;
  function localClocks(root) {
    if (!clockFmt) { return; }
    var els = (root || document).querySelectorAll('time[data-clock]');
    for (var i = 0; i < els.length; i++) {
      var t = Date.parse(els[i].getAttribute('datetime'));
      if (!isNaN(t)) { els[i].textContent = clockFmt.format(new Date(t)); }
    }
  }
  localClocks();

  // --- the Clear Queue form: confirm only when the phone number matches ----------------------
  function wireClear(form) {
    if (!form || form.dataset.wired) { return; }
    form.dataset.wired = '1';
    var want = digits(form.getAttribute('data-phone'));
    var input = form.querySelector('[name="confirm"]');
    var btn = form.querySelector('#clear-confirm-btn');
    function count() {
      var r = form.querySelector('input[name="scope"]:checked');
      var n = r ? Number(r.getAttribute('data-count')) : NaN;
      return isNaN(n) ? '' : n;
    }
    var mismatch = form.querySelector('#confirm-mismatch');
    function update() {
      var typed = digits(input.value);
      var ok = want !== '' && typed === want;
      btn.disabled = !ok;
      if (mismatch) {
        mismatch.textContent = !ok && typed.length >= want.length ? 'This is not the number of this connection.' : '';
      }
      var n = count();
      btn.textContent = n === '' ? 'Clear messages' : 'Clear ' + n.toLocaleString('en') + ' message' + (n === 1 ? '' : 's');
    }
    input.addEventListener('input', update);
    form.addEventListener('change', update);
    form.addEventListener('submit', function (e) {
      if (btn.disabled) { e.preventDefault(); input.focus(); return; }
      btn.disabled = true;
      btn.textContent = 'Clearing…';
    });
    update();
  }
  wireClear(document.getElementById('clear-form'));

  var dialog = document.getElementById('clear-dialog');
  document.addEventListener('click', function (e) {
    var a = e.target.closest ? e.target.closest('a.js-clear') : null;
    if (a && dialog && typeof dialog.showModal === 'function') {
      e.preventDefault();
      var url = a.getAttribute('href');
      fetch(url + (url.indexOf('?') < 0 ? '?' : '&') + 'fragment=1', { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
        .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
        .then(function (html) {
          var box = document.getElementById('clear-dialog-body');
          box.innerHTML = html;
          var form = box.querySelector('form');
          wireClear(form);
          localClocks(box);
          dialog.showModal();
          var first = box.querySelector('[name="reason"]');
          if (first) { first.focus(); }
        })
        .catch(function () { window.location.href = url; });
      return;
    }
    var cancel = e.target.closest ? e.target.closest('.js-cancel') : null;
    if (cancel && dialog && dialog.open && dialog.contains(cancel)) {
      e.preventDefault();
      dialog.close();
    }
  });

  function badges(card) {
    var l = card.querySelector('[data-role="link"]'), q = card.querySelector('[data-role="queue"]');
    return (l ? l.textContent : '') + ', ' + (q ? q.textContent : '');
  }

  // The connections page's summary line follows the cards.
  function summarize() {
    var a = document.getElementById('sum-active'), n = document.getElementById('sum-attention');
    if (!a || !n) { return; }
    a.textContent = String(document.querySelectorAll('.card.tone-ok').length);
    n.textContent = String(document.querySelectorAll('.card.tone-bad, .card.tone-warn').length);
  }

  // --- live cards over server-sent events ----------------------------------------------------
  var pill = document.getElementById('live-pill');
  var status = document.getElementById('live-status');
  var updates = 0;
  function setLive(on, text) {
    if (!pill) { return; }
    pill.hidden = false;
    pill.classList.toggle('off', !on);
    pill.lastChild.textContent = text;
  }
  if (body.getAttribute('data-live') && window.EventSource) {
    var es = new EventSource('/console/events');
    es.addEventListener('ready', function () {
      body.setAttribute('data-sse', 'ready');
      setLive(true, 'Live');
    });
    es.addEventListener('card', function (ev) {
      var d = JSON.parse(ev.data);
      var el = document.getElementById('card-' + d.id);
      if (el) {
        var t = document.createElement('template');
        t.innerHTML = d.html.trim();
        var fresh = t.content.firstElementChild;
        var changed = el.innerHTML !== fresh.innerHTML;
        var before = badges(el), after = badges(fresh);
        var hadFocus = el.contains(document.activeElement) ? document.activeElement.getAttribute('href') : null;
        el.replaceWith(fresh);
        if (hadFocus) {
          var again = fresh.querySelector('[href="' + hadFocus + '"]');
          if (again) { again.focus(); }
        }
        if (changed && body.getAttribute('data-sse') === 'ready') {
          updates++;
          var latency = Date.now() - d.sent;
          body.setAttribute('data-sse-updates', String(updates));
          fresh.setAttribute('data-pushed-latency-ms', String(latency));
          if (window.console) { console.info('waqueue: card ' + d.id + ' pushed, ' + latency + ' ms after the server sent it'); }
          // Counts change with every message sent; only a change of status is highlighted and
          // announced to screen readers.
          if (before !== after) {
            fresh.classList.add('just-updated');
            if (status) { status.textContent = d.id + ': ' + after; }
          }
        }
        tick();
        localClocks(fresh);
        summarize();
      }
      // The connection page: its queue table and its hold/resume panel follow the card.
      if (document.getElementById('queue-section') && document.getElementById('card-' + d.id) &&
          location.pathname === '/console/connections/' + d.id) {
        scheduleRefresh();
      }
      // A clear in progress: show the report as soon as the card is no longer clearing it.
      var wait = document.querySelector('[data-clear-wait]');
      if (wait && wait.getAttribute('data-clear-wait') === d.id && d.clear_id !== wait.getAttribute('data-clear-id')) {
        var last = Number(sessionStorage.getItem('waqueue-reload') || 0);
        if (Date.now() - last > 1500) {
          sessionStorage.setItem('waqueue-reload', String(Date.now()));
          window.location.reload();
        }
      }
      // Pairing: the card turns Active once the phone scanned the code.
      if (document.getElementById('qr') && d.link === 'active' && !document.getElementById('paired')) {
        window.location.reload();
      }
    });
    es.addEventListener('signedout', function () {
      es.close();
      window.location.href = '/console/signin';
    });
    es.onerror = function () { setLive(false, 'Reconnecting…'); };
  }

  // --- the connection page: refresh its fragments when its card changes (at most once a second)
  var refreshTimer = null;
  function replaceFrom(url, id, onlyIf) {
    fetch(url, { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var t = document.createElement('template');
        t.innerHTML = html.trim();
        var fresh = t.content.firstElementChild, cur = document.getElementById(id);
        if (fresh && fresh.id === id && cur && (!onlyIf || onlyIf(cur, fresh))) { cur.replaceWith(fresh); }
      })
      .catch(function () {});
  }
  function scheduleRefresh() {
    if (refreshTimer) { return; }
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      var q = document.getElementById('queue-section');
      if (q) { replaceFrom(q.getAttribute('data-refresh'), 'queue-section'); }
      var base = location.pathname + '?fragment=sending';
      // The hold/resume panel only when the queue's status changed and nobody is typing in it.
      replaceFrom(base, 'sending', function (cur, fresh) {
        return cur.getAttribute('data-status') !== fresh.getAttribute('data-status') && !cur.contains(document.activeElement);
      });
    }, 1000);
  }

  // --- pairing: keep the QR code current as WhatsApp rotates it ---------------------------
  var qr = document.getElementById('qr');
  if (qr && qr.getAttribute('data-qr-refresh') && !document.getElementById('paired')) {
    setInterval(function () {
      fetch(qr.getAttribute('data-qr-refresh'), { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var t = document.createElement('template');
          t.innerHTML = html.trim();
          var fresh = t.content.firstElementChild;
          var cur = document.getElementById('qr');
          if (fresh && fresh.id === 'qr' && cur && cur.innerHTML !== fresh.innerHTML) { cur.replaceWith(fresh); }
        })
        .catch(function () {});
    }, 5000);
  }
}());
