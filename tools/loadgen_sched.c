/*
** loadgen_sched.c: continuous batching with chunked prefill over a paged
** KV pool (loadgen_sched.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen_sched.h"

struct loadgen_sched {
  loadgen_config cfg;
  loadgen_keep *keep;          /* [nlayers] */
  loadgen_request *reqs;
  int n;
  int64_t max_len, cols;
  /* per request */
  int64_t *prompt_done;        /* prompt tokens behind it */
  int64_t *generated;          /* output tokens yielded */
  int64_t *len;                /* keys in its cache */
  int64_t *reserve;            /* its reservation, pages */
  int *slot;                   /* its slot while it runs, else -1 */
  /* arrivals not queued yet start at next_arrival; the queue holds
  ** request numbers from head to tail */
  int next_arrival, *queue, qhead, qtail;
  /* running requests in admission order */
  int *running, nrunning;
  int *slot_req;               /* [max_batch]: the request in a slot, or -1 */
  int32_t *tables;             /* [nlayers][max_batch][cols] */
  int *dirty_lo, *dirty_hi;    /* [nlayers] */
  int32_t *free_pages;         /* a stack of pool_pages entries */
  int64_t nfree, reserved;
  loadgen_entry *decode, *prefill;   /* [max_batch] each */
  int ndecode, nprefill;
  int done, refused;
};

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t loadgen_reserve_pages(loadgen_keep keep, int64_t len, int64_t chunk, int64_t page_size) {
  int64_t all = ceil_div(len, page_size), part;
  if (keep.window < 0) return all;
  /* Held during a step from n to n + c: the sink's columns and columns
  ** floor((n - W) / P) .. ceil((n + c) / P) - 1, fewer than (W + c) / P + 2. */
  part = ceil_div(keep.sink, page_size) + ceil_div(keep.window + chunk, page_size) + 2;
  return part < all ? part : all;
}

/* The columns of a layer keeping KEEP at length N: [0, SINK_END) and
** [*LO, *HI), which may overlap. */
static void held_cols(const loadgen_sched *s, int layer, int64_t n, int64_t *sink_end, int64_t *lo,
                      int64_t *hi) {
  const loadgen_keep *k = &s->keep[layer];
  int64_t p = s->cfg.page_size;
  *hi = ceil_div(n, p);
  if (k->window < 0) {
    *sink_end = 0, *lo = 0;
    return;
  }
  *sink_end = ceil_div(k->sink, p);
  if (*sink_end > *hi) *sink_end = *hi;
  *lo = n > k->window ? (n - k->window) / p : 0;
}

int loadgen_sched_create(const loadgen_config *cfg, loadgen_request *reqs, int n, loadgen_sched **out, char *err,
                         size_t errlen) {
  loadgen_sched *s = NULL;
  int i, l;
  size_t ntab;
  *out = NULL;
  if (cfg->max_batch < 1 || cfg->max_tokens < cfg->max_batch || cfg->chunk < 1 || cfg->page_size < 1 ||
      cfg->pool_pages < 1 || cfg->pool_pages > INT32_MAX || cfg->nlayers < 1 || n < 0) {
    snprintf(err, errlen, "bad scheduler configuration (slots %d, tokens a step %lld, chunk %lld, page %lld, "
             "pool %lld pages, %d layers): tokens a step must be at least the slots, the rest positive",
             cfg->max_batch, (long long)cfg->max_tokens, (long long)cfg->chunk, (long long)cfg->page_size,
             (long long)cfg->pool_pages, cfg->nlayers);
    return -1;
  }
  for (i = 0; i < n; i++) {
    if (reqs[i].prompt < 1 || reqs[i].output < 1 || !(reqs[i].arrival >= 0) ||
        (i > 0 && reqs[i].arrival < reqs[i - 1].arrival)) {
      snprintf(err, errlen, "request %d: lengths below 1, a negative arrival, or arrivals out of order", i);
      return -1;
    }
  }
  if ((s = calloc(1, sizeof *s)) == NULL) goto oom;
  s->cfg = *cfg, s->reqs = reqs, s->n = n;
  for (i = 0; i < n; i++)
    if (reqs[i].prompt + reqs[i].output > s->max_len) s->max_len = reqs[i].prompt + reqs[i].output;
  s->cols = ceil_div(s->max_len > 0 ? s->max_len : 1, cfg->page_size);
  ntab = (size_t)cfg->nlayers * (size_t)cfg->max_batch * (size_t)s->cols;
  if ((s->keep = malloc((size_t)cfg->nlayers * sizeof *s->keep)) == NULL ||
      (s->prompt_done = calloc((size_t)n + 1, sizeof *s->prompt_done)) == NULL ||
      (s->generated = calloc((size_t)n + 1, sizeof *s->generated)) == NULL ||
      (s->len = calloc((size_t)n + 1, sizeof *s->len)) == NULL ||
      (s->reserve = calloc((size_t)n + 1, sizeof *s->reserve)) == NULL ||
      (s->slot = malloc(((size_t)n + 1) * sizeof *s->slot)) == NULL ||
      (s->queue = malloc(((size_t)n + 1) * sizeof *s->queue)) == NULL ||
      (s->running = malloc((size_t)cfg->max_batch * sizeof *s->running)) == NULL ||
      (s->slot_req = malloc((size_t)cfg->max_batch * sizeof *s->slot_req)) == NULL ||
      (s->tables = calloc(ntab, sizeof *s->tables)) == NULL ||
      (s->dirty_lo = malloc((size_t)cfg->nlayers * sizeof *s->dirty_lo)) == NULL ||
      (s->dirty_hi = malloc((size_t)cfg->nlayers * sizeof *s->dirty_hi)) == NULL ||
      (s->free_pages = malloc((size_t)cfg->pool_pages * sizeof *s->free_pages)) == NULL ||
      (s->decode = malloc((size_t)cfg->max_batch * sizeof *s->decode)) == NULL ||
      (s->prefill = malloc((size_t)cfg->max_batch * sizeof *s->prefill)) == NULL)
    goto oom;
  memcpy(s->keep, cfg->keep, (size_t)cfg->nlayers * sizeof *s->keep);
  s->cfg.keep = s->keep;
  for (l = 0; l < cfg->nlayers; l++) s->dirty_lo[l] = cfg->max_batch, s->dirty_hi[l] = -1;
  for (i = 0; i < cfg->max_batch; i++) s->slot_req[i] = -1;
  /* Page 0 is handed out last, so that tables' initial zeros point at a
  ** page nobody holds for as long as the pool allows. */
  for (s->nfree = 0; s->nfree < cfg->pool_pages; s->nfree++) s->free_pages[s->nfree] = (int32_t)s->nfree;
  for (i = 0; i < n; i++) {
    s->slot[i] = -1;
    reqs[i].admitted = reqs[i].first_token = reqs[i].finished = -1;
    reqs[i].refused = 0;
    for (l = 0; l < cfg->nlayers; l++)
      s->reserve[i] += loadgen_reserve_pages(s->keep[l], reqs[i].prompt + reqs[i].output, cfg->chunk,
                                             cfg->page_size);
    if (s->reserve[i] > cfg->pool_pages) reqs[i].refused = 1, s->refused++;
  }
  *out = s;
  return 0;
oom:
  loadgen_sched_destroy(s);
  snprintf(err, errlen, "out of memory for the scheduler of %d requests", n);
  return -1;
}

void loadgen_sched_destroy(loadgen_sched *s) {
  if (s == NULL) return;
  free(s->keep);
  free(s->prompt_done);
  free(s->generated);
  free(s->len);
  free(s->reserve);
  free(s->slot);
  free(s->queue);
  free(s->running);
  free(s->slot_req);
  free(s->tables);
  free(s->dirty_lo);
  free(s->dirty_hi);
  free(s->free_pages);
  free(s->decode);
  free(s->prefill);
  free(s);
}

int64_t loadgen_sched_max_len(const loadgen_sched *s) { return s->max_len; }

int64_t loadgen_sched_table_cols(const loadgen_sched *s) { return s->cols; }

const int32_t *loadgen_sched_table(const loadgen_sched *s, int layer) {
  return s->tables + (size_t)layer * (size_t)s->cfg.max_batch * (size_t)s->cols;
}

void loadgen_sched_take_dirty(loadgen_sched *s, int layer, int *lo, int *hi) {
  *lo = s->dirty_lo[layer], *hi = s->dirty_hi[layer];
  s->dirty_lo[layer] = s->cfg.max_batch, s->dirty_hi[layer] = -1;
}

/* Give layer LAYER of the request in SLOT a page for column COL.  The
** reservations make sure one is free. */
static void page_alloc(loadgen_sched *s, int layer, int slot, int64_t col) {
  int32_t *row = s->tables + ((size_t)layer * (size_t)s->cfg.max_batch + (size_t)slot) * (size_t)s->cols;
  row[col] = s->free_pages[--s->nfree];
  if (slot < s->dirty_lo[layer]) s->dirty_lo[layer] = slot;
  if (slot > s->dirty_hi[layer]) s->dirty_hi[layer] = slot;
}

static void page_free(loadgen_sched *s, int layer, int slot, int64_t col) {
  const int32_t *row = s->tables + ((size_t)layer * (size_t)s->cfg.max_batch + (size_t)slot) * (size_t)s->cols;
  s->free_pages[s->nfree++] = row[col];
}

static void enqueue_arrivals(loadgen_sched *s, double now) {
  while (s->next_arrival < s->n && s->reqs[s->next_arrival].arrival <= now) {
    if (!s->reqs[s->next_arrival].refused) s->queue[s->qtail++] = s->next_arrival;
    s->next_arrival++;
  }
}

static void admit(loadgen_sched *s, double now) {
  while (s->qhead < s->qtail && s->nrunning < s->cfg.max_batch) {
    int r = s->queue[s->qhead], slot = 0;
    if (s->reserved + s->reserve[r] > s->cfg.pool_pages) break;
    while (s->slot_req[slot] >= 0) slot++;
    s->slot_req[slot] = r, s->slot[r] = slot;
    s->reserved += s->reserve[r];
    s->running[s->nrunning++] = r;
    s->reqs[r].admitted = now;
    s->qhead++;
  }
}

void loadgen_sched_begin(loadgen_sched *s, double now, loadgen_step *step, double *next) {
  int64_t budget = s->cfg.max_tokens, p = s->cfg.page_size;
  int i, l, e;
  enqueue_arrivals(s, now);
  admit(s, now);
  s->ndecode = s->nprefill = 0;
  for (i = 0; i < s->nrunning; i++) {
    int r = s->running[i];
    if (s->prompt_done[r] < s->reqs[r].prompt) continue;
    s->decode[s->ndecode++] = (loadgen_entry){r, s->slot[r], 1, s->len[r] + 1};
    budget--;
  }
  for (i = 0; i < s->nrunning && budget > 0; i++) {
    int r = s->running[i];
    int64_t c = s->reqs[r].prompt - s->prompt_done[r];
    if (c <= 0) continue;
    if (c > s->cfg.chunk) c = s->cfg.chunk;
    if (c > budget) c = budget;
    s->prefill[s->nprefill++] = (loadgen_entry){r, s->slot[r], c, s->len[r] + c};
    budget -= c;
  }
  /* Pages for the new keys: every column they start, in every layer. */
  for (e = 0; e < s->ndecode + s->nprefill; e++) {
    const loadgen_entry *en = e < s->ndecode ? &s->decode[e] : &s->prefill[e - s->ndecode];
    int64_t c;
    for (l = 0; l < s->cfg.nlayers; l++)
      for (c = ceil_div(en->k_len - en->q_len, p); c < ceil_div(en->k_len, p); c++) page_alloc(s, l, en->slot, c);
  }
  step->decode = s->decode, step->ndecode = s->ndecode;
  step->prefill = s->prefill, step->nprefill = s->nprefill;
  step->tokens = s->cfg.max_tokens - budget;
  *next = -1;
  if (s->ndecode + s->nprefill == 0) {
    int r = s->next_arrival;
    while (r < s->n && s->reqs[r].refused) r++;
    if (r < s->n) *next = s->reqs[r].arrival;
  }
}

/* Free every column request R holds in every layer, its slot and its
** reservation. */
static void retire(loadgen_sched *s, int r, double now) {
  int l, i, j;
  for (l = 0; l < s->cfg.nlayers; l++) {
    int64_t sink_end, lo, hi, c;
    held_cols(s, l, s->len[r], &sink_end, &lo, &hi);
    for (c = 0; c < hi; c++)
      if (c < sink_end || c >= lo) page_free(s, l, s->slot[r], c);
  }
  s->reserved -= s->reserve[r];
  s->slot_req[s->slot[r]] = -1, s->slot[r] = -1;
  for (i = j = 0; i < s->nrunning; i++)
    if (s->running[i] != r) s->running[j++] = s->running[i];
  s->nrunning = j;
  s->reqs[r].finished = now;
  s->done++;
}

void loadgen_sched_end(loadgen_sched *s, double now) {
  int e, l;
  for (e = 0; e < s->ndecode + s->nprefill; e++) {
    const loadgen_entry *en = e < s->ndecode ? &s->decode[e] : &s->prefill[e - s->ndecode];
    int r = en->req;
    int64_t old = s->len[r];
    if (e < s->ndecode) {
      s->generated[r]++;
    } else {
      s->prompt_done[r] += en->q_len;
      if (s->prompt_done[r] == s->reqs[r].prompt) s->generated[r] = 1, s->reqs[r].first_token = now;
    }
    s->len[r] = en->k_len;
    /* Columns that no key at the new length needs: the window's tail. */
    for (l = 0; l < s->cfg.nlayers; l++) {
      int64_t sink_end, lo0, lo1, hi, c;
      if (s->keep[l].window < 0) continue;
      held_cols(s, l, old, &sink_end, &lo0, &hi);
      held_cols(s, l, en->k_len, &sink_end, &lo1, &hi);
      for (c = lo0 > sink_end ? lo0 : sink_end; c < lo1; c++) page_free(s, l, en->slot, c);
    }
    /* Then the rest, when it is done. */
    if (s->generated[r] == s->reqs[r].output) retire(s, r, now);
  }
  s->ndecode = s->nprefill = 0;
}

void loadgen_sched_usage(const loadgen_sched *s, loadgen_usage *u) {
  int i, l;
  memset(u, 0, sizeof *u);
  u->pages_used = s->cfg.pool_pages - s->nfree;
  u->pages_reserved = s->reserved;
  for (i = 0; i < s->nrunning; i++) {
    int64_t n = s->len[s->running[i]];
    for (l = 0; l < s->cfg.nlayers; l++) {
      const loadgen_keep *k = &s->keep[l];
      u->slots_kept += k->window < 0 || k->sink + k->window >= n ? n : k->sink + k->window;
    }
  }
  u->running = s->nrunning;
  u->queued = s->qtail - s->qhead;
  u->done = s->done;
  u->refused = s->refused;
}
