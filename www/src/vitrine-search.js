// <vitrine-search bundle="/bundle/catalog.vitrine" images="/"> — vitrine's
// storefront search box. The engine runs in a Web Worker (worker.js); this
// element only sends queries and draws answers, so typing never blocks.
//
// Attributes:
//   bundle   URL of a single-file bundle, of a bundle folder (ending in '/'), or of a publish
//            folder's current.json (vitrine publish): the version it points at, new ones at each load.
//   images   base URL that products' relative image paths resolve against (default: the page).
//   results  how many products a list shows (default 12).
// Events (on the element, bubbling): vitrine-progress {loaded, total} while the bundle loads,
//   vitrine-ready {categories, heads, productCount, bytes, ms, phases, memoryBytes},
//   vitrine-error {message}, vitrine-results {op, query, results, ms}.
// Methods (promises): search(text, {k, category}), refine(productId, text, k),
//   completeLook(productIds, category, k), classify(text), similar(productId, k).
//
// Catalog text is untrusted: it only ever reaches the page as textContent or
// attribute values of elements made with createElement (never innerHTML).

// The engine's limit on a query (core/src/engine.rs MAX_QUERY_BYTES), checked here
// so that a longer text never reaches the worker or the WebAssembly memory.
const MAX_QUERY_BYTES = 1024;
const DEBOUNCE_MS = 120;
const INTENT_MIN = 0.12;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

class VitrineSearch extends HTMLElement {
  static observedAttributes = ['bundle'];

  constructor() {
    super();
    this.worker = null;
    this.pending = new Map();
    this.nextId = 1;
    this.seq = 0;
    this.categoryFilter = null;
    this.categories = [];
    // The bundle's optional heads ("tgir", "ocir"): each card offers only these.
    this.heads = [];
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.buildDom();
  }

  buildDom() {
    const root = this.attachShadow({ mode: 'open' });
    const css = el('link', { rel: 'stylesheet', href: new URL('./vitrine-search.css', import.meta.url).href });
    this.input = el('input', {
      type: 'search',
      part: 'input',
      placeholder: 'Search the catalog: “black leather boots”',
      'aria-label': 'Search products',
      autocomplete: 'off',
      maxlength: String(MAX_QUERY_BYTES),
      disabled: '',
      oninput: () => this.scheduleSearch(),
    });
    this.progress = el('progress', { class: 'progress', max: '1', value: '0' });
    this.status = el('p', { class: 'status', role: 'status', text: 'Loading the catalog…' });
    this.error = el('p', { class: 'error', role: 'alert', hidden: '' });
    this.chips = el('div', { class: 'chips', 'aria-label': 'Categories this search asks for' });
    this.panel = el('div', { class: 'panel', hidden: '' });
    this.heading = el('h2', { class: 'heading', hidden: '' });
    this.list = el('ol', { class: 'results' });
    root.append(css, el('div', { class: 'box' }, this.input, this.progress), this.status, this.error, this.chips, this.panel, this.heading, this.list);
  }

  connectedCallback() {
    if (!this.worker && this.getAttribute('bundle')) this.start();
  }

  attributeChangedCallback() {
    if (this.isConnected && !this.worker) this.start();
  }

  disconnectedCallback() {
    this.worker?.terminate();
    this.worker = null;
  }

  start() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'vitrine-engine' });
    this.worker.addEventListener('message', (e) => this.onMessage(e.data));
    this.worker.addEventListener('error', (e) => this.fail(`the search engine stopped: ${e.message || 'worker error'}`));
    this.worker.postMessage({ type: 'load', bundle: new URL(this.getAttribute('bundle'), document.baseURI).href });
  }

  onMessage(msg) {
    switch (msg.type) {
      case 'progress': {
        if (msg.total > 0) {
          this.progress.max = msg.total;
          this.progress.value = msg.loaded;
        } else {
          this.progress.removeAttribute('value');
        }
        const mb = (n) => (n / 1e6).toFixed(1);
        this.status.textContent = msg.total > 0 ? `Loading the catalog… ${mb(msg.loaded)} of ${mb(msg.total)} MB` : `Loading the catalog… ${mb(msg.loaded)} MB`;
        this.dispatchEvent(new CustomEvent('vitrine-progress', { bubbles: true, detail: { loaded: msg.loaded, total: msg.total } }));
        break;
      }
      case 'ready':
        this.categories = msg.categories;
        this.heads = msg.heads;
        this.progress.hidden = true;
        this.status.textContent = `${msg.productCount} products, ready.`;
        this.input.disabled = false;
        this.resolveReady(msg);
        this.dispatchEvent(new CustomEvent('vitrine-ready', { bubbles: true, detail: msg }));
        if (this.input.value.trim()) this.scheduleSearch();
        break;
      case 'error':
        this.fail(msg.message);
        break;
      case 'result': {
        const waiting = this.pending.get(msg.id);
        if (!waiting) break;
        this.pending.delete(msg.id);
        if (msg.ok) waiting.resolve({ results: msg.value, ms: msg.ms });
        else waiting.reject(new Error(msg.message));
        break;
      }
      case 'csp':
        console.error(`vitrine worker: Content-Security-Policy violation (${msg.directive}) blocking ${msg.blocked}`);
        this.dispatchEvent(new CustomEvent('vitrine-csp-violation', { bubbles: true, detail: msg }));
        break;
    }
  }

  fail(message) {
    this.progress.hidden = true;
    this.status.textContent = '';
    this.error.textContent = `The catalog could not be loaded: ${message}`;
    this.error.hidden = false;
    this.rejectReady(new Error(message));
    this.dispatchEvent(new CustomEvent('vitrine-error', { bubbles: true, detail: { message } }));
  }

  query(op, ...args) {
    return this.ready.then(
      () =>
        new Promise((resolve, reject) => {
          const id = this.nextId++;
          this.pending.set(id, { resolve, reject });
          this.worker.postMessage({ type: 'query', id, op, args });
        }),
    );
  }

  // A query text over the engine's limit is refused here, before it is copied anywhere.
  checked(text) {
    const bytes = new TextEncoder().encode(String(text)).length;
    if (bytes > MAX_QUERY_BYTES) throw new Error(`invalid query: the query is ${bytes} bytes, over the limit of ${MAX_QUERY_BYTES} bytes`);
    return text;
  }

  // The public API: each resolves to {results, ms} (ms: time inside the worker).
  async search(text, { k = this.k, category = null } = {}) {
    return this.query('search', this.checked(text), k, category);
  }
  async refine(productId, text, k = this.k) {
    return this.query('refine', productId, this.checked(text), k);
  }
  completeLook(productIds, category, k = this.k) {
    return this.query('completeLook', productIds, category, k);
  }
  async classify(text) {
    return this.query('classify', this.checked(text));
  }
  similar(productId, k = this.k) {
    return this.query('similar', productId, k);
  }

  get k() {
    return Number(this.getAttribute('results')) || 12;
  }

  scheduleSearch() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.runSearch(), DEBOUNCE_MS);
  }

  async runSearch() {
    const text = this.input.value.trim();
    const seq = ++this.seq;
    this.panel.hidden = true;
    if (!text) {
      this.chips.replaceChildren();
      this.list.replaceChildren();
      this.heading.hidden = true;
      return;
    }
    try {
      const [found, intent] = await Promise.all([this.search(text, { category: this.categoryFilter }), this.classify(text)]);
      if (seq !== this.seq) return; // a newer query was typed meanwhile
      this.showIntent(intent.results);
      const where = this.categoryFilter ? ` in ${this.categoryFilter}` : '';
      this.show('search', text, `Results for “${text}”${where}`, found);
    } catch (e) {
      if (seq === this.seq) this.showQueryError(e);
    }
  }

  showIntent(intent) {
    const chips = intent
      .filter((c) => c.probability >= INTENT_MIN || c.category === this.categoryFilter)
      .slice(0, 4)
      .map((c) =>
        el('button', {
          type: 'button',
          class: c.category === this.categoryFilter ? 'chip active' : 'chip',
          'aria-pressed': String(c.category === this.categoryFilter),
          dataset: { category: c.category },
          text: `${c.category} ${Math.round(c.probability * 100)}%`,
          onclick: () => {
            this.categoryFilter = this.categoryFilter === c.category ? null : c.category;
            this.runSearch();
          },
        }),
      );
    this.chips.replaceChildren(...chips);
  }

  show(op, query, title, { results, ms }) {
    this.error.hidden = true;
    this.heading.hidden = false;
    this.heading.textContent = title;
    this.list.replaceChildren(...results.map((p) => this.card(p)));
    this.dispatchEvent(new CustomEvent('vitrine-results', { bubbles: true, detail: { op, query, results, ms } }));
  }

  // The error replaces the results: what stays on screen answers a query that is not the one shown.
  showQueryError(e) {
    this.error.textContent = e.message;
    this.error.hidden = false;
    this.heading.hidden = true;
    this.list.replaceChildren();
    this.chips.replaceChildren();
  }

  imageUrl(image) {
    if (!image) return null;
    try {
      const url = new URL(image, new URL(this.getAttribute('images') || './', document.baseURI));
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch {
      return null;
    }
  }

  card(p) {
    const src = this.imageUrl(p.image);
    const photo = src ? el('img', { class: 'photo', src, alt: p.title, loading: 'lazy', decoding: 'async' }) : el('div', { class: 'photo none' });
    return el(
      'li',
      { class: 'product', dataset: { productId: p.id, category: p.category } },
      photo,
      el('div', { class: 'title', text: p.title }),
      el('div', { class: 'meta', text: `${p.subcategory || p.category} · ${p.score.toFixed(2)}` }),
      el(
        'div',
        { class: 'actions' },
        ...[
          this.heads.includes('tgir') && el('button', { type: 'button', class: 'refine', text: 'Like this, but…', onclick: () => this.openRefine(p) }),
          this.heads.includes('ocir') && el('button', { type: 'button', class: 'look', text: 'Complete the look', onclick: () => this.openLook(p) }),
        ].filter(Boolean),
      ),
    );
  }

  openRefine(p) {
    const input = el('input', { type: 'text', class: 'refine-text', placeholder: 'in red, with stripes…', 'aria-label': 'How it should differ' });
    const submit = async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      const seq = ++this.seq;
      try {
        const answer = await this.refine(p.id, text);
        if (seq === this.seq) this.show('refine', text, `Like “${p.title}”, but ${text}`, answer);
      } catch (err) {
        if (seq === this.seq) this.showQueryError(err);
      }
    };
    const form = el('form', { class: 'refine-form', onsubmit: submit }, el('span', { text: `Like “${p.title}”, but…` }), input, el('button', { type: 'submit', text: 'Go' }));
    this.panel.replaceChildren(form);
    this.panel.hidden = false;
    input.focus();
  }

  openLook(p) {
    const buttons = this.categories
      .filter((c) => c !== p.category)
      .map((category) =>
        el('button', {
          type: 'button',
          class: 'look-category',
          dataset: { category },
          text: category,
          onclick: async () => {
            const seq = ++this.seq;
            try {
              const answer = await this.completeLook([p.id], category);
              if (seq === this.seq) this.show('completeLook', category, `${category} to wear with “${p.title}”`, answer);
            } catch (err) {
              if (seq === this.seq) this.showQueryError(err);
            }
          },
        }),
      );
    this.panel.replaceChildren(el('span', { text: `Complete the look of “${p.title}” with:` }), ...buttons);
    this.panel.hidden = false;
  }
}

if (!customElements.get('vitrine-search')) customElements.define('vitrine-search', VitrineSearch);

// The demo page's service worker (offline search); a storefront may register its own.
if ('serviceWorker' in navigator && document.querySelector('meta[name="vitrine-sw"]')) {
  const sw = document.querySelector('meta[name="vitrine-sw"]').getAttribute('content');
  navigator.serviceWorker.register(sw, { scope: './' }).catch((e) => console.warn(`vitrine: no offline mode (${e.message})`));
}

export { VitrineSearch };
