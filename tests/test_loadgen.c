/*
** test_loadgen.c: the scheduler of hattn loadgen (tools/loadgen_sched.h)
** driven on a fake clock: admission in arrival order against slots and
** page reservations, refusal of requests larger than the pool, decodes and
** chunks under the token budget, every page of the block tables accounted
** for (an independent count of the columns each request must hold, no page
** held twice, all freed at the end), dirty rows, bad configurations and
** the bound of loadgen_reserve_pages.
**
** The driver checks every invariant of the header's contract after each
** begin and each end; the tests choose the runs.  Every run draws fresh
** random inputs: the seed comes from the clock unless HATTN_TEST_SEED is
** set, and is printed on the first line and in every failure, so that a
** failure can be replayed.
*/
#include <check.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen_sched.h"

static uint64_t g_seed;

/* Fail with a message and the seed, without Check's per-assertion
** bookkeeping (slow in the driver's inner loops). */
static void fail_at(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_at(int line, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ck_abort_msg("line %d: %s (seed %" PRIu64 ": set HATTN_TEST_SEED=%" PRIu64 " to repeat)", line, msg, g_seed,
               g_seed);
}

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) fail_at(__LINE__, __VA_ARGS__);                             \
  } while (0)

/* ---------------------------------------------------------------- *
** Random numbers: splitmix64, one stream per test.
** ---------------------------------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t rng_range(rng *r, int64_t lo, int64_t hi) {
  return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static int rng_chance(rng *r, int percent) { return (int)(rng_next(r) % 100) < percent; }

static rng rng_for(uint64_t salt) {
  rng r;
  r.s = g_seed ^ (salt * UINT64_C(0x2545f4914f6cdd1d));
  rng_next(&r);
  return r;
}

/* ---------------------------------------------------------------- *
** The model: which columns a request holds.
** ---------------------------------------------------------------- */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The columns a layer keeping K holds at length N0 with its new keys up to
** N1 (N1 == N0 between steps): c < *HI with c < *SE or c >= *LO.  Between
** steps that is the header's kept set, [0, min(ceil(G/P), ceil(n/P))) and
** [floor(max(0, n - W) / P), ceil(n/P)); during a step the columns of the
** new keys, [ceil(N0/P), ceil(N1/P)), join it. */
static void model_cols(loadgen_keep k, int64_t p, int64_t n0, int64_t n1, int64_t *se, int64_t *lo, int64_t *hi) {
  *hi = cdiv(n1, p);
  if (k.window < 0) {
    *se = 0, *lo = 0;
    return;
  }
  *se = cdiv(k.sink, p);
  if (*se > cdiv(n0, p)) *se = cdiv(n0, p);
  *lo = (n0 > k.window ? n0 - k.window : 0) / p;
}

static int64_t model_count(loadgen_keep k, int64_t p, int64_t n0, int64_t n1) {
  int64_t se, lo, hi;
  model_cols(k, p, n0, n1, &se, &lo, &hi);
  if (lo >= hi) return se < hi ? se : hi;
  return hi - lo + (se < lo ? se : lo);
}

/* ---------------------------------------------------------------- *
** The driver: runs a scheduler on a fake clock and checks the contract
** after every begin and every end.
** ---------------------------------------------------------------- */

typedef struct sim {
  loadgen_config cfg;
  loadgen_keep keep[8];
  loadgen_request *req;
  int n;
  loadgen_sched *s;
  int64_t *res_layer;          /* [n][nlayers]: loadgen_reserve_pages */
  int64_t *reserve;            /* [n]: their sum */
  /* what the test saw of each request */
  int64_t *prompt_done, *generated, *len, *decodes, *chunked;
  int64_t *step_k;             /* k_len of its entry in the step running, or -1 */
  int *slot;                   /* from its entries, -1 before */
  int *was_admitted;
  int64_t *max_held;           /* [n][nlayers]: the most columns held at once */
  int32_t *stamp;              /* [pool_pages] */
  int gen;
  loadgen_entry *entries;      /* the step's entries, copied before the end */
  /* dirty rows */
  int check_dirty;
  int32_t *before;             /* every table before begin */
  int64_t dirty_gains;         /* rows that gained a page, seen */
  /* what happened */
  int64_t steps, max_running, max_queued, max_step_tokens;
  int64_t min_chunk, nchunks;
} sim;

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n > 0 ? n : 1, size);
  ck_assert_ptr_nonnull(p);
  return p;
}

/* Start a run of CFG (its keep copied) over the N requests REQ. */
static void sim_init(sim *m, const loadgen_config *cfg, loadgen_request *req, int n) {
  char err[256] = "";
  int i, l, rc;
  memset(m, 0, sizeof *m);
  CHECK(cfg->nlayers >= 1 && cfg->nlayers <= 8, "test: %d layers", cfg->nlayers);
  m->cfg = *cfg;
  memcpy(m->keep, cfg->keep, (size_t)cfg->nlayers * sizeof *m->keep);
  m->cfg.keep = m->keep;
  m->req = req, m->n = n;
  rc = loadgen_sched_create(&m->cfg, req, n, &m->s, err, sizeof err);
  CHECK(rc == 0 && m->s != NULL, "loadgen_sched_create: %d: %s", rc, err);
  m->res_layer = xcalloc((size_t)n * (size_t)cfg->nlayers, sizeof *m->res_layer);
  m->reserve = xcalloc((size_t)n, sizeof *m->reserve);
  m->prompt_done = xcalloc((size_t)n, sizeof *m->prompt_done);
  m->generated = xcalloc((size_t)n, sizeof *m->generated);
  m->len = xcalloc((size_t)n, sizeof *m->len);
  m->decodes = xcalloc((size_t)n, sizeof *m->decodes);
  m->chunked = xcalloc((size_t)n, sizeof *m->chunked);
  m->step_k = xcalloc((size_t)n, sizeof *m->step_k);
  m->slot = xcalloc((size_t)n, sizeof *m->slot);
  m->was_admitted = xcalloc((size_t)n, sizeof *m->was_admitted);
  m->max_held = xcalloc((size_t)n * (size_t)cfg->nlayers, sizeof *m->max_held);
  m->stamp = xcalloc((size_t)cfg->pool_pages, sizeof *m->stamp);
  m->entries = xcalloc((size_t)cfg->max_batch * 2, sizeof *m->entries);
  m->before = xcalloc((size_t)cfg->nlayers * (size_t)cfg->max_batch * (size_t)loadgen_sched_table_cols(m->s),
                      sizeof *m->before);
  m->min_chunk = INT64_MAX;
  for (i = 0; i < n; i++) {
    m->step_k[i] = -1, m->slot[i] = -1;
    for (l = 0; l < cfg->nlayers; l++) {
      m->res_layer[(size_t)i * (size_t)cfg->nlayers + (size_t)l] =
          loadgen_reserve_pages(m->keep[l], req[i].prompt + req[i].output, cfg->chunk, cfg->page_size);
      m->reserve[i] += m->res_layer[(size_t)i * (size_t)cfg->nlayers + (size_t)l];
    }
    CHECK(!req[i].refused == !(m->reserve[i] > cfg->pool_pages),
          "request %d: refused %d with reservation %lld of a pool of %lld", i, req[i].refused,
          (long long)m->reserve[i], (long long)cfg->pool_pages);
    CHECK(req[i].admitted < 0 && req[i].first_token < 0 && req[i].finished < 0,
          "request %d: times set before the run", i);
  }
}

static void sim_free(sim *m) {
  loadgen_sched_destroy(m->s);
  free(m->res_layer);
  free(m->reserve);
  free(m->prompt_done);
  free(m->generated);
  free(m->len);
  free(m->decodes);
  free(m->chunked);
  free(m->step_k);
  free(m->slot);
  free(m->was_admitted);
  free(m->max_held);
  free(m->stamp);
  free(m->entries);
  free(m->before);
}

static int is_running(const sim *m, int r) { return m->req[r].admitted >= 0 && m->req[r].finished < 0; }

/* Pages: the independent count against loadgen_sched_usage, every held
** column's page in the pool and held once, each request's layer within
** its reservation. */
static void check_pages(sim *m, const loadgen_usage *u, const char *when) {
  int64_t p = m->cfg.page_size, cols = loadgen_sched_table_cols(m->s), total = 0;
  int r, l, nl = m->cfg.nlayers;
  int used_slot[64];
  CHECK(m->cfg.max_batch <= 64, "test: too many slots");
  memset(used_slot, 0, sizeof used_slot);
  m->gen++;
  for (r = 0; r < m->n; r++) {
    int64_t n0 = m->len[r], n1 = m->step_k[r] >= 0 ? m->step_k[r] : n0;
    if (!is_running(m, r)) continue;
    if (m->slot[r] >= 0) {
      CHECK(!used_slot[m->slot[r]], "%s: slot %d held by two running requests", when, m->slot[r]);
      used_slot[m->slot[r]] = 1;
    }
    if (n1 == 0) continue;
    CHECK(m->slot[r] >= 0, "%s: request %d holds keys but never had a slot", when, r);
    CHECK(cdiv(n1, p) <= cols, "%s: request %d at length %lld past the %lld columns", when, r, (long long)n1,
          (long long)cols);
    for (l = 0; l < nl; l++) {
      const int32_t *row = loadgen_sched_table(m->s, l) + (size_t)m->slot[r] * (size_t)cols;
      int64_t se, lo, hi, c, count = model_count(m->keep[l], p, n0, n1);
      size_t k = (size_t)r * (size_t)nl + (size_t)l;
      model_cols(m->keep[l], p, n0, n1, &se, &lo, &hi);
      for (c = 0; c < hi; c++) {
        int32_t page = row[c];
        if (c >= se && c < lo) continue;
        CHECK(page >= 0 && page < m->cfg.pool_pages, "%s: request %d layer %d column %lld: page %d of a pool of %lld",
              when, r, l, (long long)c, (int)page, (long long)m->cfg.pool_pages);
        CHECK(m->stamp[page] != m->gen, "%s: page %d held twice (again by request %d layer %d column %lld)", when,
              (int)page, r, l, (long long)c);
        m->stamp[page] = m->gen;
      }
      CHECK(count <= m->res_layer[k],
            "%s: request %d layer %d (sink %lld window %lld) holds %lld pages, reserved %lld", when, r, l,
            (long long)m->keep[l].sink, (long long)m->keep[l].window, (long long)count, (long long)m->res_layer[k]);
      if (count > m->max_held[k]) m->max_held[k] = count;
      total += count;
    }
  }
  CHECK(u->pages_used <= m->cfg.pool_pages, "%s: %lld pages used of a pool of %lld", when, (long long)u->pages_used,
        (long long)m->cfg.pool_pages);
  CHECK(u->pages_used <= u->pages_reserved, "%s: %lld pages used, %lld reserved", when, (long long)u->pages_used,
        (long long)u->pages_reserved);
  CHECK(u->pages_used == total, "%s: %lld pages used, the running requests' tables must hold %lld", when,
        (long long)u->pages_used, (long long)total);
}

/* The queue and the running set against loadgen_sched_usage, after a begin
** at NOW. */
static void check_admission(sim *m, double now, const loadgen_usage *u) {
  int r, running = 0, queued = 0, head = -1, blocked = 0;
  int64_t reserved = 0;
  for (r = 0; r < m->n; r++) {
    loadgen_request *q = &m->req[r];
    if (q->refused) {
      CHECK(q->admitted < 0, "refused request %d admitted", r);
      continue;
    }
    if (q->admitted >= 0) {
      CHECK(!blocked, "request %d admitted before request %d (first come, first served)", r, head);
      if (!m->was_admitted[r]) {
        CHECK(q->admitted == now, "request %d admitted at %.9g in the step beginning at %.9g", r, q->admitted, now);
        CHECK(q->arrival <= now, "request %d admitted at %.9g before its arrival %.9g", r, now, q->arrival);
        m->was_admitted[r] = 1;
      }
      if (q->finished < 0) running++, reserved += m->reserve[r];
    } else {
      if (!blocked) head = r;
      blocked = 1;
      if (q->arrival <= now) queued++;
    }
  }
  CHECK(u->running == running && u->running <= m->cfg.max_batch, "%d running (%d by the requests, %d slots)",
        u->running, running, m->cfg.max_batch);
  CHECK(u->queued == queued, "%d queued, %d arrived and not admitted at %.9g", u->queued, queued, now);
  CHECK(u->pages_reserved == reserved, "%lld pages reserved, the running requests' reservations are %lld",
        (long long)u->pages_reserved, (long long)reserved);
  /* The head waits only when it does not fit. */
  if (queued > 0)
    CHECK(running == m->cfg.max_batch || reserved + m->reserve[head] > m->cfg.pool_pages,
          "request %d waits with %d of %d slots running and %lld + %lld of %lld pages reserved", head, running,
          m->cfg.max_batch, (long long)reserved, (long long)m->reserve[head], (long long)m->cfg.pool_pages);
  if (running > m->max_running) m->max_running = running;
  if (queued > m->max_queued) m->max_queued = queued;
}

/* One batch entry of a step: its request runs, in a steady slot, and its
** keys follow from what it had. */
static void check_entry(sim *m, const loadgen_entry *e, int decode, int prev_req) {
  int r = e->req;
  CHECK(r >= 0 && r < m->n, "entry of request %d of %d", r, m->n);
  CHECK(!m->req[r].refused, "refused request %d in a step", r);
  CHECK(is_running(m, r), "request %d in a step without running (admitted %.9g finished %.9g)", r,
        m->req[r].admitted, m->req[r].finished);
  CHECK(r > prev_req, "%s entries out of admission order: request %d after %d", decode ? "decode" : "prefill", r,
        prev_req);
  CHECK(m->step_k[r] < 0, "request %d twice in one step", r);
  CHECK(e->slot >= 0 && e->slot < m->cfg.max_batch, "request %d in slot %d of %d", r, e->slot, m->cfg.max_batch);
  CHECK(m->slot[r] < 0 || m->slot[r] == e->slot, "request %d moved from slot %d to %d", r, m->slot[r], e->slot);
  m->slot[r] = e->slot;
  if (decode) {
    CHECK(e->q_len == 1, "decode of request %d with %lld queries", r, (long long)e->q_len);
    CHECK(m->prompt_done[r] == m->req[r].prompt, "request %d decodes with %lld of its %lld prompt tokens", r,
          (long long)m->prompt_done[r], (long long)m->req[r].prompt);
  } else {
    int64_t left = m->req[r].prompt - m->prompt_done[r];
    CHECK(e->q_len >= 1 && e->q_len <= m->cfg.chunk && e->q_len <= left,
          "chunk of %lld of request %d (chunk %lld, %lld of the prompt left)", (long long)e->q_len, r,
          (long long)m->cfg.chunk, (long long)left);
    if (e->q_len < m->min_chunk) m->min_chunk = e->q_len;
    m->nchunks++;
  }
  CHECK(e->k_len == m->len[r] + e->q_len, "request %d of length %lld runs %lld queries to k_len %lld", r,
        (long long)m->len[r], (long long)e->q_len, (long long)e->k_len);
  m->step_k[r] = e->k_len;
}

/* The token budget: decodes first, every request past its prompt; then
** chunks in admission order, each of min(chunk, what is left) unless the
** budget ran out. */
static void check_budget(sim *m, const loadgen_step *st) {
  int r, i, ready = 0, starved = 0, last_short = 0;
  int64_t tokens = st->ndecode;
  for (i = 0; i < st->nprefill; i++) tokens += st->prefill[i].q_len;
  CHECK(st->tokens == tokens && tokens <= m->cfg.max_tokens, "step of %lld tokens: %d decodes and chunks of %lld, "
        "budget %lld", (long long)st->tokens, st->ndecode, (long long)tokens, (long long)m->cfg.max_tokens);
  if (tokens > m->max_step_tokens) m->max_step_tokens = tokens;
  for (r = 0; r < m->n; r++) {
    if (!is_running(m, r)) continue;
    if (m->prompt_done[r] == m->req[r].prompt) {
      ready++;
      CHECK(m->step_k[r] >= 0, "request %d past its prompt gets no decode", r);
    } else if (m->step_k[r] < 0) {
      starved = 1;
      CHECK(tokens == m->cfg.max_tokens, "request %d in its prompt gets no chunk with %lld of %lld tokens used", r,
            (long long)tokens, (long long)m->cfg.max_tokens);
    } else {
      int64_t q = m->step_k[r] - m->len[r], left = m->req[r].prompt - m->prompt_done[r];
      CHECK(!starved && !last_short, "request %d gets a chunk after an earlier one got less than it could", r);
      if (q < (left < m->cfg.chunk ? left : m->cfg.chunk)) {
        last_short = 1;
        CHECK(tokens == m->cfg.max_tokens, "request %d gets %lld of its %lld tokens left (chunk %lld) with %lld of "
              "%lld tokens used", r, (long long)q, (long long)left, (long long)m->cfg.chunk, (long long)tokens,
              (long long)m->cfg.max_tokens);
      }
    }
  }
  CHECK(ready == st->ndecode, "%d decodes, %d requests past their prompt", st->ndecode, ready);
}

/* Rows that gained a page or changed since the copy before begin lie in
** the dirty range; taking it again gives none. */
static void check_dirty(sim *m, const loadgen_step *st) {
  int64_t cols = loadgen_sched_table_cols(m->s), p = m->cfg.page_size, c;
  int l, slot, i, lo, hi;
  int gained[64];
  memset(gained, 0, sizeof gained);
  for (i = 0; i < st->ndecode + st->nprefill; i++) {
    const loadgen_entry *e = i < st->ndecode ? &st->decode[i] : &st->prefill[i - st->ndecode];
    if (cdiv(e->k_len - e->q_len, p) < cdiv(e->k_len, p)) gained[e->slot] = 1;
  }
  for (l = 0; l < m->cfg.nlayers; l++) {
    const int32_t *t = loadgen_sched_table(m->s, l);
    const int32_t *b = m->before + (size_t)l * (size_t)m->cfg.max_batch * (size_t)cols;
    loadgen_sched_take_dirty(m->s, l, &lo, &hi);
    CHECK(lo > hi || (lo >= 0 && hi < m->cfg.max_batch), "layer %d: dirty rows %d .. %d of %d", l, lo, hi,
          m->cfg.max_batch);
    for (slot = 0; slot < m->cfg.max_batch; slot++) {
      int changed = 0;
      for (c = 0; c < cols; c++) {
        size_t at = (size_t)slot * (size_t)cols + (size_t)c;
        changed |= t[at] != b[at];
      }
      if (gained[slot]) m->dirty_gains++;
      CHECK(!(gained[slot] || changed) || (lo <= slot && slot <= hi),
            "layer %d: row %d %s, dirty rows %d .. %d", l, slot, gained[slot] ? "gained a page" : "changed", lo, hi);
    }
    loadgen_sched_take_dirty(m->s, l, &lo, &hi);
    CHECK(lo > hi, "layer %d: dirty rows %d .. %d taken twice", l, lo, hi);
  }
}

static void after_begin(sim *m, double now, const loadgen_step *st, double next) {
  loadgen_usage u;
  int i, r, nent = st->ndecode + st->nprefill;
  loadgen_sched_usage(m->s, &u);
  check_admission(m, now, &u);
  CHECK(st->ndecode >= 0 && st->nprefill >= 0 && nent <= m->cfg.max_batch, "%d decodes and %d chunks, %d slots",
        st->ndecode, st->nprefill, m->cfg.max_batch);
  for (i = 0; i < st->ndecode; i++) check_entry(m, &st->decode[i], 1, i > 0 ? st->decode[i - 1].req : -1);
  for (i = 0; i < st->nprefill; i++) check_entry(m, &st->prefill[i], 0, i > 0 ? st->prefill[i - 1].req : -1);
  check_budget(m, st);
  check_pages(m, &u, "after begin");
  if (m->check_dirty) check_dirty(m, st);
  if (nent == 0) {
    double want = -1;
    CHECK(u.running == 0 && u.queued == 0, "no step with %d running and %d queued at %.9g", u.running, u.queued,
          now);
    for (r = 0; r < m->n; r++)
      if (!m->req[r].refused && m->req[r].arrival > now) {
        want = m->req[r].arrival;
        break;
      }
    CHECK(next == want, "next %.9g at %.9g, the next arrival %.9g", next, now, want);
  }
}

/* Record the step's tokens, as the scheduler must have. */
static void after_end(sim *m, double now, const loadgen_entry *ent, int ndecode, int nent) {
  loadgen_usage u;
  int i, r, running = 0, done = 0;
  for (i = 0; i < nent; i++) {
    const loadgen_entry *e = &ent[i];
    loadgen_request *q = &m->req[e->req];
    r = e->req;
    m->len[r] = e->k_len;
    m->step_k[r] = -1;
    if (i < ndecode) {
      m->generated[r]++, m->decodes[r]++;
    } else {
      m->prompt_done[r] += e->q_len, m->chunked[r] += e->q_len;
      if (m->prompt_done[r] == q->prompt) {
        m->generated[r] = 1;
        CHECK(q->first_token == now, "request %d ended its prompt at %.9g, first_token %.9g", r, now,
              q->first_token);
      } else {
        CHECK(q->first_token < 0, "request %d has first_token %.9g in its prompt", r, q->first_token);
      }
    }
    if (m->generated[r] == q->output)
      CHECK(q->finished == now, "request %d yielded its last token at %.9g, finished %.9g", r, now, q->finished);
    else
      CHECK(q->finished < 0, "request %d finished at %.9g with %lld of %lld tokens", r, q->finished,
            (long long)m->generated[r], (long long)q->output);
  }
  for (r = 0; r < m->n; r++) running += is_running(m, r), done += m->req[r].finished >= 0;
  loadgen_sched_usage(m->s, &u);
  CHECK(u.running == running && u.done == done, "after end: %d running, %d done; by the requests %d and %d",
        u.running, u.done, running, done);
  check_pages(m, &u, "after end");
  if (m->check_dirty) {
    int l, lo, hi;
    for (l = 0; l < m->cfg.nlayers; l++) {
      loadgen_sched_take_dirty(m->s, l, &lo, &hi);
      CHECK(lo > hi, "layer %d: rows %d .. %d written by an end (freed columns keep their page)", l, lo, hi);
    }
  }
}

/* Run to the end: each step lasts 0.01 s + 1e-5 s a token. */
static void sim_run(sim *m) {
  double now = 0, next;
  int64_t limit = m->n + 10;
  int r, nref = 0;
  loadgen_usage u;
  for (r = 0; r < m->n; r++) limit += m->req[r].prompt + m->req[r].output;
  for (;;) {
    loadgen_step st;
    int nent;
    CHECK(m->steps < limit, "no end after %lld steps", (long long)m->steps);
    m->steps++;
    if (m->check_dirty) {
      int l;
      size_t row = (size_t)m->cfg.max_batch * (size_t)loadgen_sched_table_cols(m->s);
      for (l = 0; l < m->cfg.nlayers; l++)
        memcpy(m->before + (size_t)l * row, loadgen_sched_table(m->s, l), row * sizeof *m->before);
    }
    loadgen_sched_begin(m->s, now, &st, &next);
    after_begin(m, now, &st, next);
    nent = st.ndecode + st.nprefill;
    if (nent == 0) {
      if (next < 0) break;
      CHECK(next > now, "next arrival %.9g at %.9g", next, now);
      now = next;
      continue;
    }
    memcpy(m->entries, st.decode, (size_t)st.ndecode * sizeof *m->entries);
    memcpy(m->entries + st.ndecode, st.prefill, (size_t)st.nprefill * sizeof *m->entries);
    now += 0.01 + 1e-5 * (double)st.tokens;
    loadgen_sched_end(m->s, now);
    after_end(m, now, m->entries, st.ndecode, nent);
  }
  for (r = 0; r < m->n; r++) {
    const loadgen_request *q = &m->req[r];
    if (q->refused) {
      nref++;
      CHECK(q->admitted < 0 && q->first_token < 0 && q->finished < 0, "refused request %d ran", r);
      continue;
    }
    CHECK(q->finished >= 0, "request %d never finished (admitted %.9g)", r, q->admitted);
    CHECK(q->arrival <= q->admitted && q->admitted <= q->first_token && q->first_token <= q->finished,
          "request %d: arrival %.9g admitted %.9g first token %.9g finished %.9g", r, q->arrival, q->admitted,
          q->first_token, q->finished);
    CHECK(m->decodes[r] == q->output - 1 && m->chunked[r] == q->prompt,
          "request %d (prompt %lld, output %lld) got %lld decodes and %lld prompt tokens", r, (long long)q->prompt,
          (long long)q->output, (long long)m->decodes[r], (long long)m->chunked[r]);
  }
  loadgen_sched_usage(m->s, &u);
  CHECK(u.pages_used == 0 && u.pages_reserved == 0, "at the end: %lld pages used, %lld reserved",
        (long long)u.pages_used, (long long)u.pages_reserved);
  CHECK(u.running == 0 && u.queued == 0 && u.done == m->n - nref && u.refused == nref,
        "at the end: %d running, %d queued, %d done, %d refused of %d (%d refused)", u.running, u.queued, u.done,
        u.refused, m->n, nref);
}

/* ---------------------------------------------------------------- *
** Random runs.
** ---------------------------------------------------------------- */

/* Layers of every kind: every key; a window; sink and window. */
static void random_keeps(rng *r, loadgen_keep *keep, int nl) {
  int l;
  for (l = 0; l < nl; l++) {
    switch (rng_range(r, 0, 2)) {
    case 0:
      keep[l].sink = rng_range(r, 0, 4), keep[l].window = -1;
      break;
    case 1:
      keep[l].sink = 0, keep[l].window = rng_range(r, 0, 40);
      break;
    default:
      keep[l].sink = rng_range(r, 1, 20), keep[l].window = rng_range(r, 1, 40);
      break;
    }
  }
}

static void random_requests(rng *r, loadgen_request *req, int n, int64_t max_prompt, int64_t max_output,
                            int dense) {
  double t = (double)rng_range(r, 0, 100) * 1e-3;
  int i;
  for (i = 0; i < n; i++) {
    memset(&req[i], 0, sizeof req[i]);
    if (!dense || rng_chance(r, 30)) t += (double)rng_range(r, 0, 60) * 1e-3;
    req[i].arrival = t;
    req[i].prompt = rng_range(r, 1, max_prompt);
    req[i].output = rng_range(r, 1, max_output);
  }
}

static int64_t reserve_of(const loadgen_config *cfg, const loadgen_request *q) {
  int64_t sum = 0;
  int l;
  for (l = 0; l < cfg->nlayers; l++)
    sum += loadgen_reserve_pages(cfg->keep[l], q->prompt + q->output, cfg->chunk, cfg->page_size);
  return sum;
}

/* A random configuration over random requests, its pool between a quarter
** and three times the largest reservation (percent REFUSE of the time; the
** largest to three times it otherwise). */
static void random_run(rng *r, loadgen_keep *keep, loadgen_config *cfg, loadgen_request *req, int n, int refuse) {
  int64_t most = 1;
  int i;
  memset(cfg, 0, sizeof *cfg);
  cfg->nlayers = (int)rng_range(r, 1, 4);
  random_keeps(r, keep, cfg->nlayers);
  cfg->keep = keep;
  cfg->page_size = rng_range(r, 1, 8);
  cfg->chunk = rng_range(r, 1, 24);
  cfg->max_batch = (int)rng_range(r, 1, 6);
  cfg->max_tokens = cfg->max_batch + rng_range(r, 0, 40);
  random_requests(r, req, n, rng_range(r, 1, 60), rng_range(r, 1, 40), rng_chance(r, 50));
  for (i = 0; i < n; i++)
    if (reserve_of(cfg, &req[i]) > most) most = reserve_of(cfg, &req[i]);
  cfg->pool_pages = rng_chance(r, refuse) ? rng_range(r, (most + 3) / 4, most) : rng_range(r, most, 3 * most);
}

/* ---------------------------------------------------------------- *
** Tests.
** ---------------------------------------------------------------- */

/* Three arrivals at once of one length, a pool of two reservations: the
** third gets its slot at the end of the step in which the first of the
** two finished, that is when the next step begins. */
START_TEST(admission_waits_for_pages) {
  rng r = rng_for(1);
  int round, i;
  for (round = 0; round < 100; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[3];
    int64_t total = rng_range(&r, 2, 80), res;
    double t0 = (double)rng_range(&r, 0, 1000) * 1e-3, first;
    sim m;
    memset(&cfg, 0, sizeof cfg);
    cfg.nlayers = (int)rng_range(&r, 1, 4);
    random_keeps(&r, keep, cfg.nlayers);
    cfg.keep = keep;
    cfg.page_size = rng_range(&r, 1, 8);
    cfg.chunk = rng_range(&r, 1, 16);
    cfg.max_batch = (int)rng_range(&r, 3, 5);
    cfg.max_tokens = cfg.max_batch + rng_range(&r, 0, 20);
    memset(req, 0, sizeof req);
    for (i = 0; i < 3; i++) {
      req[i].arrival = t0;
      req[i].prompt = rng_range(&r, 1, total - 1);
      req[i].output = total - req[i].prompt;
    }
    res = reserve_of(&cfg, &req[0]);
    cfg.pool_pages = 2 * res;
    sim_init(&m, &cfg, req, 3);
    sim_run(&m);
    first = req[0].finished < req[1].finished ? req[0].finished : req[1].finished;
    CHECK(req[0].admitted == t0 && req[1].admitted == t0, "arrivals at %.9g admitted at %.9g and %.9g", t0,
          req[0].admitted, req[1].admitted);
    CHECK(req[2].admitted == first, "the third admitted at %.9g, the first of the two finished at %.9g",
          req[2].admitted, first);
    CHECK(m.max_running == 2 && m.max_queued == 1, "at most %lld running and %lld queued",
          (long long)m.max_running, (long long)m.max_queued);
    sim_free(&m);
  }
}
END_TEST

/* First come, first served: a small request behind a head that does not
** fit waits too, although it would fit. */
START_TEST(head_of_queue_blocks) {
  rng r = rng_for(2);
  int round, i;
  for (round = 0; round < 100; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[3];
    int64_t ra, rb, rc;
    double t0 = (double)rng_range(&r, 0, 1000) * 1e-3;
    sim m;
    memset(&cfg, 0, sizeof cfg);
    cfg.nlayers = (int)rng_range(&r, 1, 4);
    random_keeps(&r, keep, cfg.nlayers);
    keep[0].window = -1;
    cfg.keep = keep;
    cfg.page_size = rng_range(&r, 2, 8);
    cfg.chunk = rng_range(&r, 1, 16);
    cfg.max_batch = (int)rng_range(&r, 3, 5);
    cfg.max_tokens = cfg.max_batch + rng_range(&r, 0, 20);
    memset(req, 0, sizeof req);
    for (i = 0; i < 3; i++) {
      int64_t total = i == 1 ? (cfg.nlayers + 1) * cfg.page_size + rng_range(&r, 0, 60)
                             : rng_range(&r, 2, cfg.page_size);
      req[i].arrival = t0;
      req[i].prompt = rng_range(&r, 1, total - 1);
      req[i].output = total - req[i].prompt;
    }
    ra = reserve_of(&cfg, &req[0]), rb = reserve_of(&cfg, &req[1]), rc = reserve_of(&cfg, &req[2]);
    cfg.pool_pages = rb;
    CHECK(ra + rc <= rb, "test: reservations %lld + %lld above %lld", (long long)ra, (long long)rc, (long long)rb);
    sim_init(&m, &cfg, req, 3);
    sim_run(&m);
    CHECK(req[0].admitted == t0 && req[1].admitted == req[0].finished && req[2].admitted == req[1].finished,
          "admitted at %.9g, %.9g, %.9g; finished at %.9g, %.9g (arrivals %.9g)", req[0].admitted, req[1].admitted,
          req[2].admitted, req[0].finished, req[1].finished, t0);
    sim_free(&m);
  }
}
END_TEST

/* Two slots and a large pool: never more than two running, the rest
** queued. */
START_TEST(slots_bound_running) {
  rng r = rng_for(3);
  int round;
  for (round = 0; round < 40; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[16];
    int n = (int)rng_range(&r, 3, 16), i;
    int64_t most = 1;
    sim m;
    random_run(&r, keep, &cfg, req, n, 0);
    cfg.max_batch = 2;
    cfg.max_tokens = 2 + rng_range(&r, 0, 30);
    for (i = 0; i < n; i++) req[i].arrival = i < 3 ? 0.0 : req[i].arrival;
    for (i = 0; i < n; i++)
      if (reserve_of(&cfg, &req[i]) > most) most = reserve_of(&cfg, &req[i]);
    cfg.pool_pages = most * n;
    sim_init(&m, &cfg, req, n);
    sim_run(&m);
    CHECK(m.max_running == 2 && m.max_queued >= 1, "%d requests, at most %lld running and %lld queued", n,
          (long long)m.max_running, (long long)m.max_queued);
    sim_free(&m);
  }
}
END_TEST

/* The smallest case of pages kept by a window: one layer of the last four
** keys, pages of one key, a prompt of ten and two tokens out.  After the
** prompt the layer keeps keys 6 .. 9; the decode adds key 10 and the
** request is done: every page must be back. */
START_TEST(window_pages_freed_at_finish) {
  loadgen_keep keep = {0, 4};
  loadgen_config cfg;
  loadgen_request req;
  loadgen_sched *s = NULL;
  loadgen_step st;
  loadgen_usage u;
  char err[256] = "";
  double next;
  memset(&cfg, 0, sizeof cfg);
  cfg.max_batch = 1, cfg.max_tokens = 16, cfg.chunk = 16, cfg.page_size = 1, cfg.pool_pages = 64;
  cfg.nlayers = 1, cfg.keep = &keep;
  memset(&req, 0, sizeof req);
  req.prompt = 10, req.output = 2;
  ck_assert_msg(loadgen_sched_create(&cfg, &req, 1, &s, err, sizeof err) == 0, "%s", err);
  loadgen_sched_begin(s, 0, &st, &next);
  ck_assert_int_eq(st.nprefill, 1);
  ck_assert_int_eq(st.prefill[0].q_len, 10);
  loadgen_sched_usage(s, &u);
  ck_assert_int_eq(u.pages_used, 10);
  loadgen_sched_end(s, 1);
  loadgen_sched_usage(s, &u);
  ck_assert_int_eq(u.pages_used, 4);
  loadgen_sched_begin(s, 1, &st, &next);
  ck_assert_int_eq(st.ndecode, 1);
  ck_assert_int_eq(st.decode[0].k_len, 11);
  loadgen_sched_usage(s, &u);
  ck_assert_int_eq(u.pages_used, 5);
  loadgen_sched_end(s, 2);
  ck_assert_msg(req.finished == 2, "finished at %g", req.finished);
  loadgen_sched_usage(s, &u);
  ck_assert_msg(u.pages_used == 0 && u.pages_reserved == 0,
                "after the last request finished: %lld pages used (%lld reserved); the window's column 6, "
                "held before the last step, was not freed", (long long)u.pages_used, (long long)u.pages_reserved);
  loadgen_sched_destroy(s);
}
END_TEST

/* Pages under random mixes of layers, page sizes, lengths and arrivals:
** the driver counts them after every begin and end. */
START_TEST(page_accounting) {
  rng r = rng_for(4);
  int round;
  for (round = 0; round < 300; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[30];
    int n = (int)rng_range(&r, 1, 30);
    sim m;
    random_run(&r, keep, &cfg, req, n, 20);
    sim_init(&m, &cfg, req, n);
    sim_run(&m);
    sim_free(&m);
  }
}
END_TEST

/* A pool just big enough for the largest request, many requests and small
** budgets: all complete, each with OUTPUT - 1 decodes and its whole prompt
** in chunks no larger than CHUNK. */
START_TEST(completion_under_pressure) {
  rng r = rng_for(5);
  int round, sawshort = 0;
  for (round = 0; round < 60; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[40];
    int n = (int)rng_range(&r, 20, 40), i;
    int64_t most = 1;
    sim m;
    random_run(&r, keep, &cfg, req, n, 0);
    cfg.max_tokens = cfg.max_batch + rng_range(&r, 0, 6);
    for (i = 0; i < n; i++)
      if (reserve_of(&cfg, &req[i]) > most) most = reserve_of(&cfg, &req[i]);
    cfg.pool_pages = most;
    sim_init(&m, &cfg, req, n);
    sim_run(&m);
    for (i = 0; i < n; i++) CHECK(!req[i].refused, "request %d refused by a pool of its size", i);
    CHECK(m.max_step_tokens <= cfg.max_tokens, "a step of %lld tokens", (long long)m.max_step_tokens);
    sawshort |= m.nchunks > 0 && m.min_chunk < cfg.chunk;
    sim_free(&m);
  }
  CHECK(sawshort, "test: no chunk shorter than the chunk size in 60 runs");
}
END_TEST

/* Requests larger than the pool are refused and never run, wherever they
** stand; the rest run, one of them exactly the size of the pool. */
START_TEST(refusal) {
  rng r = rng_for(6);
  int round;
  for (round = 0; round < 60; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[20];
    int n = (int)rng_range(&r, 2, 20), i, nref = 0, exact = 0, big[20];
    int64_t most = 0;
    sim m;
    random_run(&r, keep, &cfg, req, n, 0);
    keep[0].window = -1;
    for (i = 0; i < n; i++)
      if (reserve_of(&cfg, &req[i]) > most) most = reserve_of(&cfg, &req[i]), exact = i;
    cfg.pool_pages = most;
    for (i = 0; i < n; i++) {
      big[i] = i != exact && (i == 0 || i == n - 1 || rng_chance(&r, 25));
      /* every key of a layer alone is more than the pool */
      if (big[i]) req[i].prompt += cfg.pool_pages * cfg.page_size, nref++;
    }
    sim_init(&m, &cfg, req, n);
    sim_run(&m);
    CHECK(!req[exact].refused && req[exact].finished >= 0, "request %d with the pool's %lld pages refused", exact,
          (long long)cfg.pool_pages);
    for (i = 0; i < n; i++)
      CHECK(!req[i].refused == !big[i], "request %d refused %d, larger than the pool %d", i, req[i].refused, big[i]);
    CHECK(nref >= 1 && m.n - nref >= 1, "test: %d of %d refused", nref, n);
    {
      loadgen_usage u;
      loadgen_sched_usage(m.s, &u);
      CHECK(u.refused == nref, "%d refused, %d larger than the pool", u.refused, nref);
    }
    sim_free(&m);
  }
}
END_TEST

static int create_fails(const loadgen_config *cfg, loadgen_request *req, int n, const char *what) {
  char err[256];
  loadgen_sched *s = (loadgen_sched *)&err; /* anything but NULL */
  int rc;
  memset(err, 0, sizeof err);
  rc = loadgen_sched_create(cfg, req, n, &s, err, sizeof err);
  ck_assert_msg(rc == -1, "%s: loadgen_sched_create returned %d", what, rc);
  ck_assert_msg(err[0] != 0, "%s: no message", what);
  ck_assert_msg(s == NULL, "%s: a scheduler returned", what);
  return rc;
}

START_TEST(bad_configurations) {
  loadgen_keep keep[2] = {{0, -1}, {4, 16}};
  loadgen_config good, cfg;
  loadgen_request req[3], bad[3];
  loadgen_sched *s = NULL;
  char err[256] = "";
  int i;
  memset(&good, 0, sizeof good);
  good.max_batch = 4, good.max_tokens = 16, good.chunk = 8, good.page_size = 4, good.pool_pages = 100;
  good.nlayers = 2, good.keep = keep;
  memset(req, 0, sizeof req);
  for (i = 0; i < 3; i++) req[i].arrival = 0.5 * i, req[i].prompt = 10 + i, req[i].output = 3;
  ck_assert_msg(loadgen_sched_create(&good, req, 3, &s, err, sizeof err) == 0, "%s", err);
  ck_assert_ptr_nonnull(s);
  loadgen_sched_destroy(s);
  cfg = good, cfg.max_tokens = cfg.max_batch - 1;
  create_fails(&cfg, req, 3, "max_tokens below max_batch");
  cfg = good, cfg.page_size = 0;
  create_fails(&cfg, req, 3, "page_size 0");
  cfg = good, cfg.max_batch = 0;
  create_fails(&cfg, req, 3, "max_batch 0");
  cfg = good, cfg.chunk = 0;
  create_fails(&cfg, req, 3, "chunk 0");
  cfg = good, cfg.pool_pages = 0;
  create_fails(&cfg, req, 3, "pool_pages 0");
  cfg = good, cfg.nlayers = 0;
  create_fails(&cfg, req, 3, "nlayers 0");
  memcpy(bad, req, sizeof bad), bad[1].arrival = 2.0;
  create_fails(&good, bad, 3, "unsorted arrivals");
  memcpy(bad, req, sizeof bad), bad[2].prompt = 0;
  create_fails(&good, bad, 3, "prompt 0");
  memcpy(bad, req, sizeof bad), bad[0].output = 0;
  create_fails(&good, bad, 3, "output 0");
  memcpy(bad, req, sizeof bad), bad[0].arrival = -1;
  create_fails(&good, bad, 3, "a negative arrival");
}
END_TEST

/* Every row that gains a page in a begin lies in the dirty range. */
START_TEST(dirty_rows) {
  rng r = rng_for(7);
  int round;
  int64_t gains = 0;
  for (round = 0; round < 100; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[20];
    int n = (int)rng_range(&r, 1, 20), l, lo, hi;
    sim m;
    random_run(&r, keep, &cfg, req, n, 0);
    sim_init(&m, &cfg, req, n);
    for (l = 0; l < cfg.nlayers; l++) {
      loadgen_sched_take_dirty(m.s, l, &lo, &hi);
      CHECK(lo > hi, "layer %d: rows %d .. %d dirty before any step", l, lo, hi);
    }
    m.check_dirty = 1;
    sim_run(&m);
    gains += m.dirty_gains;
    sim_free(&m);
  }
  CHECK(gains > 0, "test: no row gained a page");
}
END_TEST

/* No layer of a request ever holds more than loadgen_reserve_pages: in
** runs (measured through the tables) and over every step n -> n + c,
** c <= chunk, of a request of LEN tokens. */
START_TEST(reserve_bound) {
  rng r = rng_for(8);
  int round;
  for (round = 0; round < 300; round++) {
    loadgen_keep keep[4];
    loadgen_config cfg;
    loadgen_request req[3];
    int n = (int)rng_range(&r, 1, 3), i, l;
    sim m;
    random_run(&r, keep, &cfg, req, n, 0);
    if (rng_chance(&r, 50)) cfg.max_tokens = cfg.max_batch + rng_range(&r, 0, 3);
    sim_init(&m, &cfg, req, n);
    sim_run(&m);
    for (i = 0; i < n; i++)
      for (l = 0; l < cfg.nlayers; l++) {
        int64_t held = m.max_held[(size_t)i * (size_t)cfg.nlayers + (size_t)l];
        int64_t res = loadgen_reserve_pages(keep[l], req[i].prompt + req[i].output, cfg.chunk, cfg.page_size);
        CHECK(held >= 1 && held <= res, "request %d (%lld + %lld) layer %d (sink %lld window %lld, page %lld, chunk "
              "%lld): held %lld pages, reserved %lld", i, (long long)req[i].prompt, (long long)req[i].output, l,
              (long long)keep[l].sink, (long long)keep[l].window, (long long)cfg.page_size, (long long)cfg.chunk,
              (long long)held, (long long)res);
      }
    sim_free(&m);
  }
  for (round = 0; round < 300; round++) {
    loadgen_keep k;
    int64_t p = rng_range(&r, 1, 9), chunk = rng_range(&r, 1, 30), len = rng_range(&r, 1, 150), n0, n1, res;
    random_keeps(&r, &k, 1);
    res = loadgen_reserve_pages(k, len, chunk, p);
    CHECK(res >= 1 && res <= cdiv(len, p), "reserve %lld for %lld tokens of pages of %lld", (long long)res,
          (long long)len, (long long)p);
    if (k.window < 0)
      CHECK(res == cdiv(len, p), "keeping every key: reserve %lld for %lld tokens of pages of %lld", (long long)res,
            (long long)len, (long long)p);
    for (n0 = 0; n0 < len; n0++)
      for (n1 = n0 + 1; n1 <= len && n1 <= n0 + chunk; n1++)
        CHECK(model_count(k, p, n0, n1) <= res, "sink %lld window %lld page %lld chunk %lld len %lld: step %lld -> "
              "%lld holds %lld pages, reserve %lld", (long long)k.sink, (long long)k.window, (long long)p,
              (long long)chunk, (long long)len, (long long)n0, (long long)n1, (long long)model_count(k, p, n0, n1),
              (long long)res);
  }
}
END_TEST

static Suite *loadgen_suite(void) {
  Suite *s = suite_create("loadgen");
  TCase *tc = tcase_create("loadgen");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, admission_waits_for_pages);
  tcase_add_test(tc, head_of_queue_blocks);
  tcase_add_test(tc, slots_bound_running);
  tcase_add_test(tc, window_pages_freed_at_finish);
  tcase_add_test(tc, page_accounting);
  tcase_add_test(tc, completion_under_pressure);
  tcase_add_test(tc, refusal);
  tcase_add_test(tc, bad_configurations);
  tcase_add_test(tc, dirty_rows);
  tcase_add_test(tc, reserve_bound);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *env = getenv("HATTN_TEST_SEED");
  SRunner *sr;
  int failed;
  if (env != NULL && *env != 0) {
    g_seed = strtoull(env, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_seed = (uint64_t)ts.tv_sec * UINT64_C(1000003) ^ (uint64_t)ts.tv_nsec;
  }
  printf("test_loadgen: seed %" PRIu64 " (set HATTN_TEST_SEED=%" PRIu64 " to repeat)\n", g_seed, g_seed);
  fflush(stdout);
  sr = srunner_create(loadgen_suite());
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (failed) printf("test_loadgen: %d failed with seed %" PRIu64 "\n", failed, g_seed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
