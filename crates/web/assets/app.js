// tapir's review pages: times in the viewer's zone, the search forms' time fields, and the
// recording page's player, waveform and transcript. No framework, no inline script: the
// pages pass what this needs in data-* attributes. Text from recordings and transcripts is
// only ever set with textContent.

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

document.documentElement.classList.add('js');

// ---- times --------------------------------------------------------------------------
const stamp = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

function localTimes(root = document) {
  for (const t of $$('time[datetime]', root)) {
    const d = new Date(t.dateTime);
    if (!isNaN(d)) {
      t.title = t.textContent;
      t.textContent = stamp.format(d);
    }
  }
}

const pad = (n) => String(n).padStart(2, '0');

function toLocalInput(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// datetime-local fields show the viewer's local time and are sent as UTC (RFC 3339);
// empty fields are not sent at all.
function timeFields() {
  for (const form of $$('form.filters')) {
    for (const input of $$('input[type=datetime-local][data-utc]', form)) {
      const d = new Date(input.dataset.utc);
      if (!isNaN(d)) input.value = toLocalInput(d);
    }
    form.addEventListener('submit', () => {
      for (const input of $$('input[name], select[name]', form)) {
        if (input.value.trim() === '') { input.disabled = true; continue; }
        if (input.type === 'datetime-local') {
          const d = new Date(input.value);
          if (isNaN(d)) continue;
          const hidden = document.createElement('input');
          hidden.type = 'hidden';
          hidden.name = input.name;
          hidden.value = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
          hidden.dataset.utcCopy = '1';
          input.dataset.name = input.name;
          input.removeAttribute('name');
          form.appendChild(hidden);
        }
      }
    });
    // Back to this page from the results (the page cache): the form as it was before.
    window.addEventListener('pageshow', () => {
      for (const h of $$('input[data-utc-copy]', form)) h.remove();
      for (const input of $$('input, select', form)) {
        input.disabled = false;
        if (input.dataset.name) { input.name = input.dataset.name; delete input.dataset.name; }
      }
    });
  }
}

// ---- the player ---------------------------------------------------------------------
function clock(s) {
  if (!isFinite(s) || s < 0) s = 0;
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

const typing = (el) =>
  el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));

const REGION_COLORS = {
  segment: 'rgba(120,120,120,0.35)',
  'segment-start': 'rgba(60,60,60,0.9)',
  statement: 'rgba(80,160,80,0.35)',
  silence: 'rgba(200,60,60,0.25)',
  pause: 'rgba(230,180,60,0.30)',
};

function player() {
  const root = $('#player');
  if (!root) return;
  const audio = $('#audio');
  audio.removeAttribute('controls');
  const fallbackDuration = Number(root.dataset.duration) || 0;
  const duration = () => (isFinite(audio.duration) && audio.duration > 0 ? audio.duration : fallbackDuration);
  const play = $('#play');
  const position = $('#position');

  const seek = (t) => { audio.currentTime = Math.min(Math.max(0, t), duration() || t); };
  const toggle = () => (audio.paused ? audio.play().catch(() => {}) : audio.pause());
  const back = () => seek(audio.currentTime - 10);
  const forward = () => seek(audio.currentTime + 30);

  play.addEventListener('click', toggle);
  $('#back').addEventListener('click', back);
  $('#fwd').addEventListener('click', forward);
  audio.addEventListener('play', () => { play.textContent = 'Pause'; });
  audio.addEventListener('pause', () => { play.textContent = 'Play'; });
  const showPosition = () => { position.textContent = `${clock(audio.currentTime)} / ${clock(duration())}`; };
  audio.addEventListener('timeupdate', showPosition);
  audio.addEventListener('loadedmetadata', showPosition);
  $('#volume').addEventListener('input', (e) => { audio.volume = Number(e.target.value); });
  $('#speed').addEventListener('change', (e) => { audio.playbackRate = Number(e.target.value); });

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (e.key === ' ' || e.code === 'Space') { e.preventDefault(); toggle(); }
    else if (e.key === 'ArrowLeft') { e.preventDefault(); back(); }
    else if (e.key === 'ArrowRight') { e.preventDefault(); forward(); }
  });

  // ?t=95 seeks there once the audio's length is known.
  const t = Number(new URLSearchParams(location.search).get('t'));
  if (isFinite(t) && t > 0) {
    const go = () => seek(t);
    if (audio.readyState >= 1) go(); else audio.addEventListener('loadedmetadata', go, { once: true });
  }

  $('#copy-link').addEventListener('click', () => {
    const url = new URL(location.href);
    url.searchParams.set('t', String(Math.floor(audio.currentTime)));
    const out = $('#link');
    out.hidden = false;
    out.value = url.toString();
    out.select();
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(out.value).catch(() => {});
  });

  for (const a of $$('a.seek[data-seek]')) {
    a.addEventListener('click', (e) => { e.preventDefault(); seek(Number(a.dataset.seek)); });
  }

  waveform(root, audio);
  transcript(audio);
}

async function waveform(root, audio) {
  const state = $('#waveform-state');
  let data;
  try {
    const r = await fetch(root.dataset.peaks, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 409) { state.textContent = 'The waveform appears once the recording is stored.'; return; }
    if (!r.ok) { state.textContent = 'No waveform for this recording.'; return; }
    data = await r.json();
  } catch (e) {
    state.textContent = 'The waveform could not be loaded.';
    return;
  }
  const [{ default: WaveSurfer }, { default: RegionsPlugin }, { default: TimelinePlugin }] = await Promise.all([
    import(root.dataset.wavesurfer), import(root.dataset.regions), import(root.dataset.timeline),
  ]);
  const regions = RegionsPlugin.create();
  // Precomputed peaks and duration: wavesurfer draws them and follows the <audio> element;
  // it never fetches or decodes the file itself.
  const ws = WaveSurfer.create({
    container: '#waveform',
    media: audio,
    peaks: data.peaks,
    duration: data.duration,
    splitChannels: [
      { waveColor: '#2b7bb9', progressColor: '#174a73', height: 80 },
      { waveColor: '#d9822b', progressColor: '#8a4f14', height: 80 },
    ],
    height: 80,
    cursorColor: '#1b1f24',
    cursorWidth: 2,
    dragToSeek: true,
    interact: true,
    plugins: [regions, TimelinePlugin.create({ container: '#timeline' })],
  });
  ws.once('decode', () => {
    let marks = [];
    try { marks = JSON.parse(root.dataset.markers || '[]'); } catch (e) { marks = []; }
    for (const m of marks) {
      const label = document.createElement('span');
      label.className = `marker marker-${m.kind}`;
      label.textContent = m.kind === 'segment-start' ? '' : m.label;
      label.title = m.label;
      const opts = { start: m.start, content: label, color: REGION_COLORS[m.kind] || 'rgba(0,0,0,0.2)', drag: false, resize: false };
      if (m.end > m.start) opts.end = m.end;
      regions.addRegion(opts);
    }
    root.dataset.waveform = 'ready';
    // Milliseconds from the navigation to a drawn waveform (for the benchmark).
    root.dataset.readyMs = String(Math.round(performance.now()));
  });
  // A click on a marker seeks to its start, like a click on the waveform.
  regions.on('region-clicked', (region, e) => { e.stopPropagation(); audio.currentTime = region.start; });
  window.tapirWaveform = ws;
}

// ---- the transcript -----------------------------------------------------------------
const SPEAKERS = { customer: 'Customer', agent: 'Agent' };

async function transcript(audio) {
  const pane = $('#transcript');
  if (!pane) return;
  const state = $('#transcript-state');
  let body;
  for (let attempt = 0; ; attempt++) {
    let r;
    try {
      r = await fetch(pane.dataset.src, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch (e) { return; }
    if (r.status === 404 || !r.ok) return;
    try { body = await r.json(); } catch (e) { return; }
    if (body.state === 'done' || body.state === 'failed' || attempt >= 40) break;
    pane.hidden = false;
    state.textContent = body.state === 'running' ? 'Transcription running…' : 'Transcription queued…';
    await new Promise((res) => setTimeout(res, 15000));
  }
  pane.hidden = false;
  if (body.state !== 'done') {
    state.textContent = body.state === 'failed' ? 'Transcription failed.' : 'Transcription not finished.';
    return;
  }
  const parts = [];
  if (body.engine) parts.push(body.engine);
  if (body.language) parts.push(body.language);
  state.textContent = parts.join(' · ');
  if (body.label) {
    const s = document.createElement('span');
    s.className = `sentiment-${body.label}`;
    s.textContent = ` · sentiment ${body.label}` + (typeof body.sentiment === 'number' ? ` (${body.sentiment.toFixed(2)})` : '');
    state.appendChild(s);
  }
  const wpm = body.words_per_minute || {};
  for (const who of ['customer', 'agent']) {
    const cell = $(`#wpm-${who}`);
    if (cell && typeof wpm[who] === 'number') cell.textContent = String(Math.round(wpm[who]));
  }

  const list = $('#phrases');
  const items = [];
  for (const p of Array.isArray(body.phrases) ? body.phrases : []) {
    const li = document.createElement('li');
    const label = ['positive', 'negative', 'neutral'].includes(p.label) ? p.label : 'neutral';
    const speaker = p.speaker === 'agent' ? 'agent' : 'customer';
    li.className = `phrase label-${label}`;
    li.dataset.startMs = String(Number(p.start_ms) || 0);
    li.dataset.endMs = String(Number(p.end_ms) || 0);
    const who = document.createElement('span');
    who.className = `speaker speaker-${speaker}`;
    who.textContent = SPEAKERS[speaker];
    const at = document.createElement('span');
    at.className = 'at';
    at.textContent = clock((Number(p.start_ms) || 0) / 1000);
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = String(p.text ?? '');
    li.append(who, at, text);
    li.addEventListener('click', () => { audio.currentTime = (Number(p.start_ms) || 0) / 1000; });
    list.appendChild(li);
    items.push({ li, text, raw: String(p.text ?? ''), start: Number(p.start_ms) || 0, end: Number(p.end_ms) || 0 });
  }
  items.sort((a, b) => a.start - b.start);

  // The phrase being played is highlighted and kept in view.
  let current = null;
  audio.addEventListener('timeupdate', () => {
    const ms = audio.currentTime * 1000;
    let lo = 0, hi = items.length - 1, found = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (items[mid].start <= ms) { found = items[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    if (found && ms > found.end + 1000) found = null;
    if (found === current) return;
    if (current) current.li.classList.remove('current');
    current = found;
    if (current) {
      current.li.classList.add('current');
      current.li.scrollIntoView({ block: 'nearest' });
    }
  });

  // The keyword box keeps the phrases that hold it and marks where.
  const count = $('#keyword-count');
  $('#keyword').addEventListener('input', (e) => {
    const q = e.target.value.trim().toLowerCase();
    let hits = 0;
    for (const it of items) {
      it.text.textContent = '';
      const lower = it.raw.toLowerCase();
      if (!q) { it.text.textContent = it.raw; it.li.hidden = false; continue; }
      let at = 0, i = lower.indexOf(q);
      it.li.hidden = i < 0;
      if (i < 0) { it.text.textContent = it.raw; continue; }
      hits++;
      while (i >= 0) {
        it.text.append(document.createTextNode(it.raw.slice(at, i)));
        const m = document.createElement('mark');
        m.textContent = it.raw.slice(i, i + q.length);
        it.text.append(m);
        at = i + q.length;
        i = lower.indexOf(q, at);
      }
      it.text.append(document.createTextNode(it.raw.slice(at)));
    }
    count.textContent = q ? `${hits} of ${items.length} phrases` : '';
  });
}

// Forms that destroy something ask first (data-confirm holds the question).
function confirmations() {
  for (const form of $$('form[data-confirm]')) {
    form.addEventListener('submit', (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
}

localTimes();
timeFields();
player();
confirmations();
