// cps-trust console: progressive enhancement only. Every page works without this script
// (progress pages then reload themselves every second).
(function () {
  'use strict';

  // Print buttons (the PIN mailer).
  document.querySelectorAll('[data-print]').forEach(function (b) {
    b.hidden = false;
    b.addEventListener('click', function () { window.print(); });
  });

  // Live progress of a running job: poll its JSON status and update the page in place; reload
  // once the job has ended so that the server renders the outcome.
  var live = document.querySelector('[data-job-status]');
  if (!live || live.getAttribute('data-job-state') !== 'running') return;
  var url = live.getAttribute('data-job-status');
  var stateText = { started: 'in progress', done: 'done', skipped: 'skipped', failed: 'failed' };
  var phaseText = { validating: 'Checking lines', comparing: 'Comparing with the registry', writing: 'Writing professionals' };

  function updateSteps(events) {
    var last = {};
    events.forEach(function (e) { last[e.step] = e; });
    live.querySelectorAll('li[data-step]').forEach(function (li) {
      var e = last[li.getAttribute('data-step')];
      if (!e) return;
      var state = stateText[e.state] ? e.state : 'waiting';
      li.className = 'step step-' + state;
      li.querySelector('.step-state').textContent = stateText[state] || 'waiting';
      li.querySelector('.step-detail').textContent = e.detail || '';
    });
  }

  function updateProgress(p) {
    if (!p) return;
    var bar = document.getElementById('import-bar');
    var phase = live.querySelector('.phase');
    var count = live.querySelector('.count');
    if (bar) { bar.max = Math.max(p.total, 1); bar.value = p.done; bar.textContent = Math.floor(100 * p.done / Math.max(p.total, 1)) + '%'; }
    if (phase) phase.textContent = phaseText[p.phase] || 'Working';
    if (count) count.textContent = p.done + ' of ' + p.total;
  }

  var failures = 0;
  function poll() {
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (job) {
        failures = 0;
        updateSteps(job.events || []);
        updateProgress(job.progress);
        if (job.status !== 'running') { window.location.reload(); return; }
        setTimeout(poll, 300);
      })
      .catch(function () {
        failures += 1;
        if (failures > 5) { window.location.reload(); return; }
        setTimeout(poll, 1000);
      });
  }
  setTimeout(poll, 200);
})();
