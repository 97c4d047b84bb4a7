// Ferry's dashboard. Plain browser JavaScript, no framework, no build step: the page talks to
// the dashboard's own API (/api/ferry/...) and, through the gateway, to every service.
// Results arrive over one server-sent-events stream; nothing here reloads the page.
'use strict';

const $ = (selector, root = document) => root.querySelector(selector);
const MAX_ROWS = 300;

// ---- helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  if (!response.ok) {
    const message = json && json.error ? json.error.message : `${response.status} ${text}`;
    throw new Error(message);
  }
  return json;
}

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

// The last eight characters: ids are UUID v7, whose first characters are a timestamp that every id
// made within the same minute shares.
function short(id) {
  return id ? String(id).slice(-8) : '';
}

// ---- results: a request registers a watcher; matching events complete it --------------------

const watchers = [];
// The latest events, so that a watcher registered after its event arrived (the stream can beat
// the HTTP answer that tells the page what to watch for) still sees it.
const recent = [];
const RECENT = 500;

/// Adds a result line to `list` and keeps it updated by every event `matches` accepts.
function watch(list, label, matches, describe) {
  const item = el('li', { class: 'pending' }, el('span', { class: 'label' }, label), el('span', { class: 'outcome' }, 'sent, waiting for its event…'));
  list.prepend(item);
  const watcher = { matches, describe, item };
  watchers.push(watcher);
  for (const event of recent) offer(watcher, event);
  return item;
}

function fail(list, label, error) {
  list.prepend(el('li', { class: 'failed' }, el('span', { class: 'label' }, label), el('span', { class: 'outcome' }, error.message)));
}

function offerToWatchers(event) {
  recent.push(event);
  if (recent.length > RECENT) recent.shift();
  for (const w of watchers) offer(w, event);
}

function offer(w, event) {
  if (!w.matches(event)) return;
  const text = w.describe(event);
  if (text === null) return;
  w.item.classList.remove('pending');
  w.item.classList.add('done');
  const line = el('div', { class: 'event-line' }, `${time(event.producedAt)} ${event.type ?? '?'} on ${event.topic}: `, text, ' ');
  if (event.correlationId) {
    line.append(el('a', { href: '#', class: 'trace-link', onclick: (e) => { e.preventDefault(); showTrace(event.correlationId); } }, 'trace'));
  }
  $('.outcome', w.item).textContent = '';
  w.item.append(line);
}

const byCorrelation = (id) => (e) => e.correlationId === id;
const byKey = (key) => (e) => e.key === key && e.topic && !e.topic.endsWith('.dlq');
const mentions = (id) => (e) => e.key === id || JSON.stringify(e.payload).includes(id);

function money(value) {
  return typeof value === 'number' ? value.toFixed(2) : String(value);
}

// ---- panels ----------------------------------------------------------------------------------

function form(id, handler) {
  const f = document.getElementById(id);
  f.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(f));
    if (event.submitter && event.submitter.name) data[event.submitter.name] = event.submitter.value;
    await handler(data);
  });
}

form('invoice-form', async (d) => {
  const list = $('#billing-results');
  const label = `Invoice for ${d.customer}`;
  try {
    const { requestId } = await call('POST', '/api/ferry/invoices', {
      customer: d.customer,
      items: [{ description: d.description, quantity: Number(d.quantity), unitPrice: Number(d.unitPrice) }],
    });
    watch(list, label, byCorrelation(requestId), (e) => {
      if (e.type === 'InvoiceGenerated') return `invoice #${e.payload.number}, total ${money(e.payload.total)} (tax ${money(e.payload.tax)})`;
      if (e.type === 'InvoiceRejected') return `rejected: ${e.payload.reason}`;
      return null;
    }).dataset.request = requestId;
  } catch (error) { fail(list, label, error); }
});

form('score-form', async (d) => {
  const list = $('#billing-results');
  const label = `Score of ${d.customer}`;
  try {
    const { requestId } = await call('POST', '/api/ferry/scores', { customer: d.customer });
    watch(list, label, byCorrelation(requestId), (e) =>
      e.type === 'ScoreCalculated' ? `score ${e.payload.score} from ${e.payload.invoices} invoice(s)` : null);
  } catch (error) { fail(list, label, error); }
});

form('course-form', async (d) => {
  const list = $('#courses-results');
  const code = d.code || `C-${Math.random().toString(36).slice(2, 7).toUpperCase()}`;
  const label = `Course ${d.name} (${code})`;
  try {
    const course = await call('POST', '/api/v1/courses', { name: d.name, code, active: true });
    watch(list, `${label} → ${short(course.id)}`, byKey(course.id), (e) =>
      e.payload && e.payload.method ? `${e.payload.method} ${e.payload.name}` : null);
    $('#course-form [name=code]').value = '';
  } catch (error) { fail(list, label, error); }
});

form('customer-form', async (d) => {
  const list = $('#orders-results');
  const label = `Customer ${d.name}`;
  try {
    const customer = await call('POST', '/api/Customer/NewCustomer', { name: d.name, creditLimit: Number(d.creditLimit) });
    $('#order-form [name=customerId]').value = customer.id;
    watch(list, `${label} → ${customer.id}`, byKey(customer.id), (e) => `${e.type}`);
  } catch (error) { fail(list, label, error); }
});

form('order-form', async (d) => {
  const list = $('#orders-results');
  const label = `Order of ${money(Number(d.amount))} for ${d.customerId}`;
  try {
    const order = await call('POST', '/api/Orders/NewOrder', { customerId: d.customerId, amount: Number(d.amount) });
    watch(list, `${label} → ${short(order.id)}`, mentions(order.id), (e) =>
      e.type === 'OrderValidated' ? `valid: ${e.payload.isValid}${e.payload.reason ? ' (' + e.payload.reason + ')' : ''}` : `${e.type}`);
  } catch (error) { fail(list, label, error); }
});

form('user-form', async (d) => {
  const list = $('#users-results');
  const email = d.email || `user${Date.now()}@example.com`;
  const label = `Sign-up of ${email}`;
  try {
    const { taskId } = await call('POST', '/svc/users-producer/user', { name: d.name, email, password: d.password });
    const item = watch(list, label, mentions(taskId), (e) => `${e.type} (task ${short(taskId)}), waiting for the decision…`);
    $('#user-form [name=email]').value = '';
    // The request is an event; its outcome is the users consumer's decision, which may be a
    // rejection (a taken email, an invalid name): show that, not the green request event.
    outcome(item, taskId);
  } catch (error) { fail(list, label, error); }
});

/// Polls the users consumer for what became of sign-up `taskId` and marks `item` with it.
async function outcome(item, taskId) {
  for (let attempt = 0; attempt < 120; attempt++) {
    await new Promise((r) => setTimeout(r, 500));
    let task;
    try {
      task = await call('GET', `/svc/users-consumer/tasks/${encodeURIComponent(taskId)}`);
    } catch { continue; /* not decided yet (404), or the service is restarting */ }
    item.classList.remove('pending', 'done', 'failed');
    const rejected = task.outcome !== 'created';
    item.classList.add(rejected ? 'failed' : 'done');
    item.append(el('div', { class: 'event-line' }, rejected
      ? `rejected: ${task.reason ?? 'no reason given'}`
      : `created user ${short(task.userId)}`));
    return;
  }
}

form('post-form', async (d) => {
  const list = $('#posts-results');
  const label = `Post by ${d.author}`;
  try {
    const post = await call('POST', '/api/v1/NewPost', { author: d.author, message: d.message });
    $('#post-action-form [name=postId]').value = post.id;
    watch(list, `${label} → ${short(post.id)}`, byKey(post.id), (e) => `${e.type}`);
  } catch (error) { fail(list, label, error); }
});

form('post-action-form', async (d) => {
  const list = $('#posts-results');
  try {
    if (d.action === 'comment') {
      await call('PUT', `/api/v1/AddComment/${d.postId}`, { comment: d.comment, username: d.username });
    } else {
      await call('PUT', `/api/v1/LikePost/${d.postId}`);
    }
  } catch (error) { fail(list, `${d.action} on ${short(d.postId)}`, error); }
});

// Past invoices and scores, from the workers' own lists (through the gateway).
$('#past-billing').addEventListener('click', async () => {
  try {
    const [invoices, scores] = await Promise.all([
      call('GET', '/api/invoices?limit=20'),
      call('GET', '/api/scores?limit=20'),
    ]);
    $('#past-invoices tbody').replaceChildren(...invoices.invoices.map((i) => el('tr', {},
      el('td', {}, `#${i.number}`), el('td', {}, i.customer), el('td', {}, money(i.total)), el('td', {}, i.issuedAt))));
    $('#past-scores tbody').replaceChildren(...scores.scores.map((r) => el('tr', {},
      el('td', {}, r.score), el('td', {}, r.customer), el('td', {}, r.invoices), el('td', {}, money(r.totalBilled)))));
    $('#past-invoices').hidden = false;
    $('#past-scores').hidden = false;
  } catch (error) {
    fail($('#billing-results'), 'Past results', error);
  }
});

// ---- tabs ------------------------------------------------------------------------------------

for (const tab of document.querySelectorAll('[data-tab]')) {
  tab.addEventListener('click', () => {
    document.querySelectorAll('[data-tab]').forEach((t) => t.classList.toggle('active', t === tab));
    document.querySelectorAll('.panel').forEach((p) => p.classList.toggle('active', p.id === `tab-${tab.dataset.tab}`));
  });
}

// ---- live events -----------------------------------------------------------------------------

let paused = false;
let seen = 0;
const tbody = $('#events tbody');
const filterInput = $('#event-filter');

function visible(event) {
  const f = filterInput.value.trim().toLowerCase();
  if (!f) return true;
  return [event.topic, event.type, event.key, event.correlationId].some((v) => v && v.toLowerCase().includes(f));
}

function row(event) {
  const tr = el('tr', { class: event.dlqError ? 'dead-letter' : '' },
    el('td', {}, time(event.producedAt)),
    el('td', {}, `${event.topic}[${event.partition}]@${event.offset}`),
    el('td', {}, event.type ?? '(no envelope)'),
    el('td', { title: event.key ?? '' }, event.key ?? ''),
    el('td', {}, event.correlationId
      ? el('a', { href: '#', title: event.correlationId, onclick: (e) => { e.preventDefault(); showTrace(event.correlationId); } }, short(event.correlationId))
      : ''));
  tr.title = event.dlqError ? `dead letter: ${event.dlqError}` : JSON.stringify(event.payload).slice(0, 500);
  tr.dataset.search = [event.topic, event.type, event.key, event.correlationId].join(' ').toLowerCase();
  return tr;
}

function onEvents(batch) {
  seen += batch.length;
  $('#event-count').textContent = `${seen} seen`;
  for (const event of batch) offerToWatchers(event);
  if (paused) return;
  const rows = batch.filter(visible).map(row).reverse();
  tbody.prepend(...rows);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
}

filterInput.addEventListener('input', () => {
  const f = filterInput.value.trim().toLowerCase();
  for (const tr of tbody.rows) tr.hidden = f !== '' && !tr.dataset.search.includes(f);
});

$('#pause').addEventListener('click', (e) => {
  paused = !paused;
  e.target.textContent = paused ? 'Resume' : 'Pause';
});

function connect() {
  const state = $('#stream-state');
  const source = new EventSource('/api/ferry/events/stream');
  source.addEventListener('open', () => { state.textContent = 'live'; state.className = 'pill up'; });
  source.addEventListener('events', (m) => onEvents(JSON.parse(m.data)));
  source.addEventListener('missed', (m) => {
    $('#event-count').textContent = `${seen} seen (${m.data} batch(es) skipped while behind)`;
  });
  source.addEventListener('error', () => { state.textContent = 'reconnecting…'; state.className = 'pill down'; });
}

// ---- trace view ------------------------------------------------------------------------------

async function showTrace(correlationId) {
  const section = $('#trace');
  section.hidden = false;
  $('#trace-id').textContent = correlationId;
  const list = $('#trace-events');
  list.replaceChildren(el('li', {}, 'loading…'));
  try {
    const events = await call('GET', `/api/ferry/traces/${encodeURIComponent(correlationId)}`);
    list.replaceChildren(...events.map((e) => el('li', {},
      el('strong', {}, e.type ?? '?'), ` on ${e.topic}[${e.partition}]@${e.offset} at ${time(e.producedAt)}`,
      e.causationId ? ` (caused by ${short(e.causationId)})` : '',
      el('pre', {}, JSON.stringify(e.payload, null, 2)))));
  } catch (error) {
    list.replaceChildren(el('li', {}, error.message));
  }
  section.scrollIntoView({ behavior: 'smooth' });
}

$('#close-trace').addEventListener('click', () => { $('#trace').hidden = true; });

// ---- cluster and health, refreshed every few seconds -----------------------------------------

async function refreshServices() {
  try {
    const services = await call('GET', '/api/ferry/services');
    // Each pill links to the service's API docs; beside it, its AsyncAPI document.
    $('#services').replaceChildren(...services.flatMap((s) => [el('a', {
      class: `pill ${s.ready ? 'up' : s.up ? 'starting' : 'down'}`,
      title: `${s.url} — ${s.up ? 'up' : 'down'}, ${s.ready ? 'ready' : 'not ready'}; click for its API docs`,
      href: `/svc/${encodeURIComponent(s.name)}/docs`,
      'data-service': s.name,
    }, s.name), el('a', {
      class: 'spec',
      href: `/svc/${encodeURIComponent(s.name)}/asyncapi.json`,
      title: `AsyncAPI 3.0 document of ${s.name}: the topics it sends to and receives from, with message schemas`,
    }, 'AsyncAPI')]));
  } catch { /* the next refresh tries again */ }
}

function brokerState(ok, why) {
  const pill = $('#broker-state');
  pill.textContent = ok ? 'broker' : 'broker unreachable';
  pill.className = `pill ${ok ? 'up' : 'down'}`;
  pill.title = ok ? 'the Kafka broker answers' : why;
}

async function refreshCluster() {
  let topics;
  try {
    topics = await call('GET', '/api/ferry/topics');
    brokerState(true);
  } catch (error) {
    // Say so, rather than show empty tables as if there were no topics or groups.
    brokerState(false, error.message);
    const row = (n) => el('tr', {}, el('td', { colspan: n, class: 'lagging' }, `broker unreachable: ${error.message}`));
    $('#topics tbody').replaceChildren(row(3));
    $('#groups tbody').replaceChildren(row(5));
    $('#dlq tbody').replaceChildren(row(3));
    return;
  }
  try {
    $('#topics tbody').replaceChildren(...topics.map((t) => el('tr', {},
      el('td', {}, t.name),
      el('td', {}, t.partitions.map((p) => `${p.id}: ${p.start}…${p.end}`).join(', ')),
      el('td', {}, t.partitions.reduce((n, p) => n + p.end - p.start, 0)))));
    const groups = await call('GET', '/api/ferry/groups');
    $('#groups tbody').replaceChildren(...groups.map((g) => el('tr', {},
      el('td', {}, g.name), el('td', {}, g.state),
      el('td', { title: groupDetail(g) }, g.groupEpoch == null ? g.protocol : `${g.protocol} (epoch ${g.groupEpoch})`),
      el('td', { title: g.members.map(memberDetail).join('\n') || 'no members' }, g.members.length),
      el('td', { class: g.lag > 0 ? 'lagging' : '' }, g.lag))));
    const letters = await call('GET', '/api/ferry/dlq');
    $('#dlq tbody').replaceChildren(...letters.map((d) => el('tr', {},
      el('td', {}, d.topic), el('td', { class: d.pending > 0 ? 'lagging' : '', title: `${d.messages} held in all` }, d.pending),
      el('td', {}, el('button', { type: 'button', onclick: (e) => redrive(d.topic, e.target) }, `Re-drive to ${d.originalTopic}`)))));
  } catch { /* the broker may be starting; the next refresh tries again */ }
}

// `t[0,1] u[2]`: a member's partitions, per topic.
const partitions = (assignment) => assignment.map(([topic, ps]) => `${topic}[${ps.join(',')}]`).join(' ') || 'none';

// A consumer-protocol group's (KIP-848) epochs and assignor; a classic group's assignor.
function groupDetail(g) {
  if (g.groupEpoch == null) return `classic group, assignor ${g.assignor || 'none'}`;
  const catching = g.assignmentEpoch < g.groupEpoch ? ' (the assignor is catching up)' : '';
  return `consumer group (KIP-848), group epoch ${g.groupEpoch}, assignment epoch ${g.assignmentEpoch}${catching}, assignor ${g.assignor || 'none'}`;
}

// One member: id, client and host, epoch, partitions, and its target while it reconciles.
function memberDetail(m) {
  let line = `${m.instanceId ?? m.id} (${m.clientId}@${m.host})`;
  if (m.memberEpoch != null) line += ` epoch ${m.memberEpoch}`;
  line += `: ${partitions(m.assignment)}`;
  if (m.targetAssignment && partitions(m.targetAssignment) !== partitions(m.assignment)) {
    line += ` → target ${partitions(m.targetAssignment)}`;
  }
  return line;
}

async function redrive(topic, button) {
  button.disabled = true;
  try {
    const report = await call('POST', `/api/ferry/dlq/${encodeURIComponent(topic)}/redrive`);
    button.textContent = `re-drove ${report.redriven}`;
  } catch (error) {
    button.textContent = error.message;
  }
  // The pending count falls once the letters are back on their topic.
  setTimeout(() => { button.disabled = false; refreshCluster(); }, 2000);
}

async function refreshParked() {
  try {
    const rows = await call('GET', '/api/ferry/parked');
    $('#parked tbody').replaceChildren(...rows.map((r) => el('tr', {},
      el('td', {}, r.service), el('td', {}, r.topic), el('td', {}, r.typeName),
      el('td', {}, r.key.length > 40 ? `${r.key.slice(0, 40)}…` : r.key),
      el('td', {}, r.payloadBytes), el('td', {}, r.reason),
      el('td', {}, new Date(r.parkedAt).toLocaleString()))));
  } catch { /* the next refresh tries again */ }
}

connect();
refreshServices();
refreshCluster();
refreshParked();
setInterval(refreshParked, 5000);
setInterval(refreshServices, 3000);
setInterval(refreshCluster, 3000);
