// deploy/demo/src/sync.js - one model kept in a flushout@1.1.1 Proxy and synchronized
// with the master through the gateway (processor/GATEWAY.md).
//
// Edits go to the proxy at once; a flush is the proxy's beginFlush, a POST of the batch,
// endFlush with the reply's sync. The rules that keep the master's history exact:
// - One flush at a time, and a flush is sent again *unchanged, under the same seq*
//   until the gateway answers it: after a lost reply the processor answers the retry
//   as a duplicate (with the sync the lost reply had) instead of applying it twice.
//   Edits made meanwhile wait in the proxy for the next flush.
// - A flush with no commands is how a proxy pulls: the master answers with the diff
//   from the proxy's version. It is sent when the gateway's change events say the
//   master is ahead.
import { Proxy } from 'flushout';

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 4000;

export class ModelSync {
  // options: base (URL prefix of the gateway, '' for the page's own origin), model,
  // user, token (a JWT, when the gateway checks them), flushDelayMs, onUpdate().
  constructor(options) {
    this.base = options.base || '';
    this.model = options.model;
    this.user = options.user;
    this.token = options.token || '';
    this.flushDelayMs = options.flushDelayMs ?? 300;
    this.onUpdate = options.onUpdate || (() => {});
    this.client = `${this.user}-${Math.random().toString(36).slice(2, 8)}`;
    this.seq = 0;
    this.proxy = null;
    this.inFlight = null; // {batch, seq, attempts}: sent until answered
    this.flushing = false; // the flush loop runs
    this.masterCount = 0; // the master's command count as last heard
    this.eventsHeard = 0; // change events so far: told apart from those before a request
    this.syncedCount = 0; // the master version the proxy's committed state is at
    this.lastRequestFailed = false;
    this.eventsOpen = false;
    this.subscribed = false; // the gateway reads the model's changes for us
    this.timer = null;
    this.lastError = '';
    this.log = []; // what happened, for the page's tests and the curious
  }

  modelPath(rest = '') {
    return `${this.base}/v1/models/${encodeURIComponent(this.model)}${rest}`;
  }

  headers(json) {
    const h = {};
    if (json) h['content-type'] = 'application/json';
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  // GET as JSON: {status, body}; throws when the gateway cannot be reached.
  async get(rest) {
    const res = await fetch(this.modelPath(rest), { headers: this.headers(false), cache: 'no-store' });
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    return { status: res.status, body };
  }

  // The latest snapshot, retried until the gateway answers.
  async fetchSnapshot() {
    for (let wait = RETRY_FIRST_MS; ; wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      try {
        const { status, body } = await this.get('');
        if (status === 200) {
          this.setFailed(false);
          return body;
        }
        this.lastError = `snapshot: ${status} ${body && body.error ? body.error.code : ''}`;
      } catch (e) {
        this.lastError = `snapshot: ${e.message}`;
      }
      this.setFailed(true);
      await sleep(wait);
    }
  }

  async start() {
    const snapshot = await this.fetchSnapshot();
    // Sequential IDs: proxies of one list propose the same IDs for their creates, and
    // the master renames the later ones (mappedPaths), as the blog post shows.
    this.proxy = new Proxy(snapshot, { sequentialIds: true });
    this.masterCount = this.syncedCount = snapshot.commandCount;
    this.openEvents();
    window.addEventListener('online', () => this.flushSoon(0));
    this.onUpdate();
  }

  // Server-Sent Events: the gateway says when the master changed; pull when it is ahead
  // of us. EventSource reconnects by itself. A change made while the stream was down,
  // or before the gateway read the model's changes partition, goes untold, so we pull
  // when the stream opens and again at `subscribed`, which the gateway sends once it
  // reads that partition (every change after it is told).
  openEvents() {
    const query = this.token ? `?access_token=${encodeURIComponent(this.token)}` : '';
    const events = new EventSource(this.modelPath(`/events${query}`));
    events.onopen = () => {
      this.eventsOpen = true;
      this.flushSoon(0);
      this.onUpdate();
    };
    events.addEventListener('subscribed', () => {
      this.subscribed = true;
      this.flushSoon(0);
    });
    events.onerror = () => {
      this.eventsOpen = false;
      this.subscribed = false;
      this.onUpdate();
    };
    events.addEventListener('changed', (ev) => {
      const change = JSON.parse(ev.data);
      this.eventsHeard++;
      if (change.commandCount > this.masterCount) this.masterCount = change.commandCount;
      if (this.masterCount > this.syncedCount) this.flushSoon(50);
      this.onUpdate();
    });
    this.events = events;
  }

  // Applies a command to the proxy (visible at once) and schedules a flush.
  apply(command) {
    const result = this.proxy.apply(command);
    if (result.isSuccess) this.flushSoon(this.flushDelayMs);
    this.onUpdate();
    return result;
  }

  flushSoon(ms) {
    if (!this.proxy) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, ms);
  }

  // Commands in the proxy that the master has not confirmed: the flush in flight and
  // those after it. (flushout keeps the latter in its uncommittedCompletions field; its
  // public API only says whether there are any.)
  unflushedCount() {
    if (!this.proxy) return 0;
    const waiting = this.proxy.uncommittedCompletions ? this.proxy.uncommittedCompletions.length : 0;
    return waiting + (this.inFlight ? this.inFlight.batch.completions.length : 0);
  }

  connectionState() {
    if (!this.proxy || this.lastRequestFailed || !this.eventsOpen) return this.proxy ? 'offline' : 'connecting';
    return this.inFlight ? 'syncing' : 'online';
  }

  setFailed(failed) {
    if (this.lastRequestFailed !== failed) {
      this.lastRequestFailed = failed;
      this.onUpdate();
    }
  }

  // Flushes until nothing is left to send and the proxy is at the master's version.
  // Resolves when done (the Flush button and the tests await it).
  async flush() {
    if (!this.proxy) return;
    if (this.flushing) return this.flushDone; // the running loop takes the new edits too
    this.flushing = true;
    let done;
    this.flushDone = new Promise((r) => (done = r));
    try {
      for (let wait = RETRY_FIRST_MS; ; ) {
        if (!this.inFlight) {
          if (!this.proxy.hasUnflushedCommands() && this.syncedCount >= this.masterCount) break;
          this.inFlight = { batch: this.proxy.beginFlush(), seq: ++this.seq, attempts: 0 };
          this.onUpdate();
        }
        const answered = await this.sendInFlight();
        if (answered) {
          wait = RETRY_FIRST_MS;
          continue;
        }
        await sleep(wait); // unreachable or busy: the same flush again, later
        wait = Math.min(wait * 2, RETRY_MAX_MS);
      }
    } finally {
      this.flushing = false;
      this.onUpdate();
      done();
    }
  }

  // Sends the flush in flight once. Returns true when it is settled (applied, a
  // duplicate, or refused for good), false when it must be sent again.
  async sendInFlight() {
    const { batch, seq } = this.inFlight;
    this.inFlight.attempts++;
    const eventsBefore = this.eventsHeard;
    const body = { client: this.client, seq, from: batch.from, completions: batch.completions, context: { user: this.user } };
    let res;
    let reply = null;
    try {
      res = await fetch(this.modelPath('/flush'), { method: 'POST', headers: this.headers(true), body: JSON.stringify(body) });
      reply = await res.json().catch(() => null);
    } catch (e) {
      this.note({ kind: 'unreachable', seq, attempt: this.inFlight.attempts, error: e.message });
      this.lastError = 'the gateway cannot be reached';
      this.setFailed(true);
      return false;
    }
    if (res.status >= 500 || res.status === 429 || !reply) {
      // 503 timeout (the flush may be applied: the retry is then a duplicate) or
      // unavailable, 500 store_failed, 429 rate limited: the same flush again later
      this.note({ kind: 'retry', seq, status: res.status, code: reply && reply.error ? reply.error.code : '' });
      this.lastError = `gateway: ${res.status} ${reply && reply.error ? reply.error.code : ''}`;
      this.setFailed(true);
      return false;
    }
    this.setFailed(false);
    if (res.status !== 200 || reply.type !== 'flushResult') {
      // Refused for good (4xx: too large, stale_seq, ...): drop it, start over from the master.
      this.note({ kind: 'refused', seq, status: res.status, reply });
      this.lastError = `flush refused: ${reply.error ? `${reply.error.code}: ${reply.error.message}` : res.status}`;
      await this.resetTo(await this.fetchSnapshot());
      return true;
    }
    this.note({ kind: 'flushResult', seq, sent: batch.completions.length, duplicate: !!reply.duplicate,
      applied: reply.applied.completions.length, mappedPaths: reply.sync && reply.sync.mappedPaths, errors: reply.errors });
    const ended = this.proxy.endFlush(reply.sync);
    if (ended.error) {
      this.lastError = `sync: ${ended.error}`;
      await this.resetTo(await this.fetchSnapshot());
      return true;
    }
    this.syncedCount = versionAfter(reply);
    // The reply is the master as it is now, unless a change event came meanwhile (the
    // master may have moved on). Taking it as is, lower counts included, keeps a page
    // from pulling forever after a dev broker restarted from nothing.
    if (this.eventsHeard === eventsBefore || this.syncedCount > this.masterCount) this.masterCount = this.syncedCount;
    this.lastError = reply.errors && reply.errors.length
      ? `the master refused ${reply.errors.length === 1 ? 'a command' : `${reply.errors.length} commands`}: ${reply.errors[0].errorMessage}`
      : '';
    this.inFlight = null;
    return true;
  }

  // Ends the flush in flight, which is dropped, on a full snapshot: the proxy takes the
  // master's document and replays the edits made after the flush began on it.
  async resetTo(snapshot) {
    this.proxy.endFlush({ isPartial: false, latest: snapshot });
    this.syncedCount = snapshot.commandCount;
    if (this.syncedCount > this.masterCount) this.masterCount = this.syncedCount;
    this.inFlight = null;
  }

  note(entry) {
    this.log.push({ at: Date.now(), ...entry });
    if (this.log.length > 500) this.log.shift();
  }
}

// The master's version the proxy is at once it took the reply's sync: the end of the
// diff or the snapshot's count, or, with no sync, right after the flush's own commands.
function versionAfter(reply) {
  const sync = reply.sync;
  if (sync && sync.isPartial) return sync.diff.from + sync.diff.completions.length;
  if (sync) return sync.latest.commandCount;
  return reply.applied.from + reply.applied.completions.length;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
