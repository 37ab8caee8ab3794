// Live rows from /events/stream, instant filtering, and a live counter. The tables are
// already on the page: without this script it is simply static.
(function () {
  'use strict';
  var kinds = ['invalid_grant', 'token_error', 'blocked', 'recovery_failed'];
  var docs = {};
  try { docs = JSON.parse(document.getElementById('docs').textContent); } catch (e) {}
  var form = document.getElementById('filters');
  var table = document.getElementById('failure-table');
  var tbody = table && table.tBodies[0];
  var live = document.getElementById('live');
  var counter = document.getElementById('new-count');
  var added = 0;

  function val(name) {
    var el = form && form.elements[name];
    return el ? el.value.trim() : '';
  }
  // The log shortens consumer keys; a whole one typed in the filter must still match.
  function short(id) {
    return id.length <= 16 ? id : id.slice(0, 8) + '\u2026' + id.slice(-4);
  }
  function keeps(d) {
    var c = val('cause'), cl = val('client_id'), ev = val('event');
    if (c && d.cause !== c && (' ' + d.causes + ' ').indexOf(' ' + c + ' ') < 0) return false;
    if (cl && d.client !== cl && d.client !== short(cl)) return false;
    if (val('org_id') && d.org !== val('org_id')) return false;
    if (val('user_id') && d.user !== val('user_id')) return false;
    if (ev && d.eventId !== ev) return false;
    return true;
  }
  function refilter() {
    if (!tbody) return;
    var shown = 0;
    for (var i = 0; i < tbody.rows.length; i++) {
      var row = tbody.rows[i];
      row.hidden = !keeps(row.dataset);
      if (!row.hidden) shown++;
    }
    var none = document.getElementById('no-failures');
    if (none) none.hidden = shown > 0;
  }
  if (form) form.addEventListener('input', refilter);

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function ranked(causes) {
    return (causes || '').split(',').map(function (part) {
      var f = part.trim().split(';'), out = { id: f[0], q: '', basis: '' };
      f.slice(1).forEach(function (kv) {
        if (kv.indexOf('q=') === 0) out.q = kv.slice(2);
        if (kv.indexOf('basis=') === 0) out.basis = kv.slice(6);
      });
      return out;
    }).filter(function (c) { return c.id; });
  }
  function row(e) {
    var causes = ranked(e.causes), tr = document.createElement('tr');
    var d = tr.dataset;
    tr.id = 'row-' + (e.event_id || '');
    d.eventId = e.event_id || ''; d.cause = e.cause || '';
    d.causes = causes.map(function (c) { return c.id; }).join(' ');
    d.client = e.client_id || ''; d.org = e.org_id || ''; d.user = e.user_id || '';
    tr.className = (e.event || '') + ' fresh';
    cell(tr, (e.ts || '').replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
    var a = document.createElement('a');
    a.href = '/events/' + encodeURIComponent(d.eventId); a.textContent = d.eventId;
    cell(tr).appendChild(a);
    cell(tr, e.host || ''); cell(tr, d.client);
    var who = cell(tr, d.org); who.appendChild(document.createElement('br'));
    who.appendChild(document.createTextNode(d.user));
    var cause = cell(tr), code = document.createElement('code');
    code.textContent = d.cause; cause.appendChild(code);
    var kind = document.createElement('small'); kind.textContent = e.event || '';
    cause.appendChild(document.createElement('br')); cause.appendChild(kind);
    var b = document.createElement('span');
    b.className = 'basis ' + (e.basis || '');
    b.textContent = e.basis === 'prior' ? 'prior (a guess)' : (e.basis || '');
    cell(tr).appendChild(b);
    cell(tr, causes.length ? causes[0].q : '');
    cell(tr, e.evidence || e.reason || '', 'evidence');
    cell(tr, e.fix || '', 'fix');
    var links = cell(tr, undefined, 'docs');
    (docs[d.cause] || []).forEach(function (url) {
      var l = document.createElement('a');
      l.href = url; l.rel = 'noreferrer'; l.textContent = url; links.appendChild(l);
    });
    return tr;
  }

  if (!window.EventSource || !tbody) return;
  live.textContent = 'connecting…';
  var source = new EventSource('/events/stream');
  source.onopen = function () { live.textContent = 'live'; live.className = 'live on'; };
  source.onerror = function () { live.textContent = 'reconnecting…'; live.className = 'live'; };
  source.onmessage = function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (x) { return; }
    if (kinds.indexOf(e.event) < 0) return;
    if (e.event_id && document.getElementById('row-' + e.event_id)) return;
    var tr = row(e);
    tr.hidden = !keeps(tr.dataset);
    tbody.insertBefore(tr, tbody.firstChild);
    added++;
    if (counter) counter.textContent = added + ' new since the page loaded (reload to chart them).';
    var none = document.getElementById('no-failures');
    if (none && !tr.hidden) none.hidden = true;
  };
}());
